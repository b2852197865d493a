"""Where things go: the runs folder in normal and smoke mode."""
from __future__ import annotations

from starunet import config
from starunet.train import preset_config, run_dir_for


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
