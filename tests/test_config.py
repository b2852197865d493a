"""Where things go: the runs folder in normal and smoke mode."""
from __future__ import annotations

import pytest

from starunet import config
from starunet.presets import preset_config
from starunet.runs import run_dir_for


def test_smoke_runs_sit_one_level_below_the_runs_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("STARUNET_RUNS", str(tmp_path))
    smoke, quick = preset_config("smoke"), preset_config("quick")
    monkeypatch.setenv("STARUNET_SMOKE", "1")
    assert config.default_runs_dir() == tmp_path / "smoke"  # smoke mode never mixes with real runs
    in_smoke_mode = run_dir_for(smoke)
    assert in_smoke_mode.parent == tmp_path / "smoke"  # not <runs>/smoke/smoke/
    assert run_dir_for(quick).parent == tmp_path / "smoke" / "quick"
    monkeypatch.setenv("STARUNET_SMOKE", "0")
    assert run_dir_for(smoke) == in_smoke_mode  # the same folder in either mode
    assert run_dir_for(smoke, tmp_path / "elsewhere").parent == tmp_path / "elsewhere" / "smoke"


def test_git_commit_ignores_changes_to_result_folders(monkeypatch, tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "metrics.csv").write_text("a\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "init")
    monkeypatch.setattr(config, "PROJECT_ROOT", tmp_path)
    assert "local changes" not in config.git_commit() and config.git_commit() != "unknown"
    (tmp_path / "results" / "metrics.csv").write_text("b\n")  # a grid rewrote its outputs
    assert "local changes" not in config.git_commit()
    (tmp_path / "code.py").write_text("x = 2\n")
    assert config.git_commit().endswith(" + local changes")


def test_git_commit_comes_from_the_environment_in_a_copy_without_git(tmp_path, monkeypatch):
    """A GPU machine gets a copy of the working tree without .git: the session names the
    commit in STARUNET_GIT_COMMIT, and the grid's provenance records it."""
    monkeypatch.setattr(config, "PROJECT_ROOT", tmp_path)
    monkeypatch.setenv("STARUNET_GIT_COMMIT", "0123456789ab")
    assert config.git_commit() == "0123456789ab"
    monkeypatch.delenv("STARUNET_GIT_COMMIT")
    assert config.git_commit() == "unknown"


def test_a_recipe_change_is_typed_and_a_bad_one_names_the_settable_fields():
    from starunet.grid import grid_configs
    from starunet.presets import PRESETS, parse_recipe

    changes = parse_recipe(["lr=1e-3", "max_epochs=4", "schedule=cosine", "augment=false", "val_crop=None"],
                           PRESETS["fast"])
    assert changes == {"lr": 0.001, "max_epochs": 4, "schedule": "cosine", "augment": False, "val_crop": None}
    configs = grid_configs("fast", [1, 2], ["sum"], ["none"], {"lr": 1e-3, "max_epochs": 4})
    assert [(c.lr, c.max_epochs, c.seed) for c in configs] == [(0.001, 4, 1), (0.001, 4, 2)]
    assert configs[0].config_hash != grid_configs("fast", [1], ["sum"], ["none"])[0].config_hash
    with pytest.raises(ValueError, match="FIELD one of .*lr"):
        parse_recipe(["seed=3"])
    with pytest.raises(ValueError, match="max_epochs takes a int"):
        parse_recipe(["max_epochs=many"])
    with pytest.raises(ValueError, match="schedule='weekly' is unknown"):
        grid_configs("fast", [1], ["sum"], ["none"], parse_recipe(["schedule=weekly"]))
