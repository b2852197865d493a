"""Tests of the training engine. Runs use a tiny config (8-channel UNet, 32x32
patches, 2 steps per epoch, a 96x96 validation crop) so each takes about a second
on the real STARE data, except the one CLI test that runs the real smoke preset."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import starunet.training as tr
from starunet import report, reproducibility, runs
from starunet.device import select_device
from starunet.presets import PRESETS, TrainConfig, preset_config
from starunet.runs import RunDirConflictError, load_model, run_dir_for
from starunet.training import NonFiniteLossError, train

TINY = TrainConfig(patch_size=32, samples_per_epoch=4, batch_size=2, max_epochs=3, patience=5,
                   narrow=0.125, val_images=1, val_crop=96, preset="tiny")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The tiny models gain nothing from threads, and on a busy shared CPU the
    threads' synchronisation makes them several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Interrupt(Exception):
    """Stands in for a kill (Ctrl-C, a dead kernel) in the resume tests."""


def _weights(run_dir: Path, name: str = "checkpoint_last.pt") -> dict[str, torch.Tensor]:
    return torch.load(run_dir / name, map_location="cpu", weights_only=True)["model"]


def _assert_bit_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


# ---------------------------------------------------------------- config

def test_defaults_are_the_source_experiment():
    c = TrainConfig()
    assert (c.seed, c.val_ratio, c.batch_size, c.lr, c.patience, c.patch_size) == (2024, 0.2, 8, 5e-4, 10, 96)
    assert (c.fusion, c.activation, c.narrow) == ("star", "none", 0.5)
    split = c.validate().split()
    assert (len(split.train), len(split.val), len(split.test)) == (8, 2, 10)


@pytest.mark.parametrize("changes, message", [
    ({"fusion": "prod"}, r"fusion='prod' is unknown; valid: .*star"),
    ({"activation": "tanh"}, r"activation='tanh' is unknown; valid: none, relu"),
    ({"patch_size": 100}, r"patch_size=100 must be a multiple of 16"),
    ({"val_ratio": 1.0}, r"val_ratio=1.0 must be a number in the open interval \(0, 1\)"),
    ({"val_ratio": 0.0}, r"val_ratio=0.0"),
    ({"batch_size": 0}, r"batch_size=0 must be a positive integer"),
    ({"samples_per_epoch": 2.5}, r"samples_per_epoch=2.5 must be a positive integer"),
    ({"lr": float("nan")}, r"lr=nan must be a positive finite number"),
    ({"monitor": "dice"}, r"monitor='dice' is unknown; valid: pr_auc"),
    ({"val_crop": 100}, r"val_crop=100 must be None"),
    ({"seed": -1}, r"seed=-1 must be an integer in \[0, 2\*\*64 - 1\]"),
    ({"split_seed": 2**64}, r"split_seed=18446744073709551616 must be an integer in \[0, 2\*\*64 - 1\] "
                            r"\(torch.manual_seed"),
    ({"n_test": 19}, r"n_test=19 must be an integer in \[0, 18\]"),
])
def test_validate_names_the_problem_and_the_fix(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes).validate()


def test_validate_lists_every_problem_at_once():
    with pytest.raises(ValueError) as err:
        TrainConfig(fusion="x", patch_size=20, batch_size=-1).validate()
    assert all(name in str(err.value) for name in ("fusion=", "patch_size=", "batch_size="))


def test_invalid_config_fails_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="patch_size"):
        train(dataclasses.replace(TINY, patch_size=40), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_json_roundtrip_and_hash():
    c = TINY.replace(fusion="sum", activation="relu")
    assert TrainConfig.from_json(c.to_json()) == c
    assert c.config_hash == TrainConfig.from_json(c.to_json()).config_hash
    assert re.fullmatch(r"[0-9a-f]{12}", c.config_hash)
    assert c.replace(preset="other").config_hash == c.config_hash  # a label, not a result
    assert c.replace(seed=1).config_hash != c.config_hash
    assert c.replace(lr=1e-3).config_hash != c.config_hash
    with pytest.raises(ValueError, match=r"unknown TrainConfig field\(s\) \['learning_rate'\]"):
        TrainConfig.from_dict({"learning_rate": 0.1})


def test_presets():
    assert set(PRESETS) == {"smoke", "quick", "long", "fast", "full", "curves"}
    for name, config in PRESETS.items():
        assert config.validate().preset == name
    full = PRESETS["full"]
    assert (full.batch_size, full.lr, full.patience, full.patch_size, full.val_crop) == (8, 5e-4, 10, 96, None)
    assert preset_config("quick", fusion="sum", seed=3).fusion == "sum"
    curves = PRESETS["curves"]  # the source recipe for 65,536 patches, never stopped early
    assert (curves.batch_size, curves.lr, curves.samples_per_epoch * curves.max_epochs) == (8, 5e-4, 65536)
    assert curves.patience >= curves.max_epochs
    fast = PRESETS["fast"]  # the scheduled recipe: 16,384 patches, one-cycle to 2e-3, never stopped early
    assert (fast.batch_size, fast.lr, fast.schedule, fast.samples_per_epoch * fast.max_epochs) == (
        8, 2e-3, "onecycle", 16384)
    assert fast.patience >= fast.max_epochs
    with pytest.raises(ValueError, match="unknown preset 'fastest'; valid: smoke, fast, quick, long, full, curves"):
        preset_config("fastest")


def test_run_dir_for(tmp_path):
    config = preset_config("quick", fusion="sum", activation="relu", seed=7)
    assert run_dir_for(config, tmp_path) == tmp_path / "quick" / f"sum-relu-s7-{config.config_hash[:8]}"
    assert run_dir_for(config.replace(lr=1e-3), tmp_path) != run_dir_for(config, tmp_path)


def test_select_device():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type in {"cpu", "cuda", "mps"}
    with pytest.raises(ValueError, match="unknown device 'gpu'; valid: auto, cpu, cuda, mps"):
        select_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda' was requested but is not available"):
            select_device("cuda")


# ---------------------------------------------------------------- training runs

def test_same_seed_gives_identical_history(stare_records, tmp_path):
    a = train(TINY, tmp_path / "a", records=stare_records)
    b = train(TINY, tmp_path / "b", records=stare_records)
    history = (tmp_path / "a" / "history.csv").read_text()
    assert history == (tmp_path / "b" / "history.csv").read_text()
    assert len(history.strip().splitlines()) == 1 + TINY.max_epochs
    assert a.best_val == b.best_val and a.best_epoch == b.best_epoch
    _assert_bit_equal(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    for name in ("config.json", "history.csv", "checkpoint_last.pt", "checkpoint_best.pt", "result.json"):
        assert (tmp_path / "a" / name).is_file(), name
    c = train(TINY.replace(seed=1), tmp_path / "c", records=stare_records)
    assert c.best_val != a.best_val  # the seed does change the run


def test_resume_after_kills_ends_bit_identical(stare_records, tmp_path, monkeypatch):
    reference = train(TINY, tmp_path / "ref", records=stare_records)

    def stop_after_epoch_1(history):
        if len(history) == 1:
            raise Interrupt
    with pytest.raises(Interrupt):  # killed between epochs
        train(TINY, tmp_path / "run", records=stare_records, callback=stop_after_epoch_1)
    with pytest.raises(RunDirConflictError, match="unfinished run.*resume=True"):
        train(TINY, tmp_path / "run", records=stare_records)  # never silently restarts

    calls = {"n": 0}
    real_loss = tr.training_loss

    def killed_in_epoch_3(logits, label, fov):  # 2 steps per epoch: call 1 of epoch 3 is call 3 here
        calls["n"] += 1
        if calls["n"] == 3:
            raise Interrupt
        return real_loss(logits, label, fov)
    monkeypatch.setattr(tr, "training_loss", killed_in_epoch_3)
    with pytest.raises(Interrupt):  # killed mid-epoch: resumes from the end of epoch 2
        train(TINY, tmp_path / "run", records=stare_records, resume=True)
    assert torch.load(tmp_path / "run" / "checkpoint_last.pt", weights_only=True)["epoch"] == 2
    monkeypatch.setattr(tr, "training_loss", real_loss)

    resumed = train(TINY, tmp_path / "run", records=stare_records, resume=True)
    _assert_bit_equal(_weights(tmp_path / "ref"), _weights(tmp_path / "run"))
    _assert_bit_equal(_weights(tmp_path / "ref", "checkpoint_best.pt"),
                      _weights(tmp_path / "run", "checkpoint_best.pt"))
    assert (tmp_path / "ref" / "history.csv").read_text() == (tmp_path / "run" / "history.csv").read_text()
    assert (resumed.best_epoch, resumed.best_val) == (reference.best_epoch, reference.best_val)


def test_resume_under_another_thread_count_warns(stare_records, tmp_path):
    def stop_after_epoch_1(history):
        if len(history) == 1:
            raise Interrupt
    with pytest.raises(Interrupt):
        train(TINY, tmp_path, records=stare_records, callback=stop_after_epoch_1)
    assert torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)["torch_threads"] == 1
    torch.set_num_threads(2)
    try:
        with pytest.warns(UserWarning, match=r"trained with 1.*torch.set_num_threads\(1\)"):
            train(TINY, tmp_path, records=stare_records, resume=True)
    finally:
        torch.set_num_threads(1)


def test_validation_leaves_the_model_untouched(stare_records):
    model = runs.build_model(TINY).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = tr.validation_images(TINY, [stare_records[0]])
    scores = tr.validate(model, images)
    assert model.training and 0.0 <= scores["roc_auc"] <= 1.0 and scores["loss"] > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_cudnn_benchmark_is_restored():
    torch.backends.cudnn.benchmark = torch.backends.cudnn.deterministic = False
    with tr._cudnn_benchmark(True):
        assert torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    assert not torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA_TINY = TINY.replace(samples_per_epoch=32, batch_size=8, patch_size=96)  # bf16 autocast, pinned memory, workers


@needs_cuda
def test_cuda_training_is_deterministic_and_resumes_bit_identical(stare_records, tmp_path):
    """The promise on a GPU: same seed, same device -> the same run, and a run killed
    after epoch 1 and resumed ends with the same weights (bf16, cuDNN, loader workers)."""
    a = train(CUDA_TINY, tmp_path / "a", records=stare_records, device="cuda")
    b = train(CUDA_TINY, tmp_path / "b", records=stare_records, device="cuda")
    assert (tmp_path / "a" / "history.csv").read_text() == (tmp_path / "b" / "history.csv").read_text()
    _assert_bit_equal(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    assert a.best_val == b.best_val

    def stop_after_epoch_1(history):
        if len(history) == 1:
            raise Interrupt
    with pytest.raises(Interrupt):
        train(CUDA_TINY, tmp_path / "c", records=stare_records, device="cuda", callback=stop_after_epoch_1)
    train(CUDA_TINY, tmp_path / "c", records=stare_records, device="cuda", resume=True)
    _assert_bit_equal(_weights(tmp_path / "a"), _weights(tmp_path / "c"))


@needs_cuda
def test_cuda_run_loads_on_the_cpu_and_predicts_like_the_gpu(stare_records, tmp_path):
    from starunet.inference import predict_images

    train(CUDA_TINY, tmp_path, records=stare_records, device="cuda")
    image = [stare_records[0].image]
    on_cpu = predict_images(load_model(tmp_path, device="cpu"), image, device="cpu")[0]
    on_gpu = predict_images(load_model(tmp_path, device="cuda"), image, device="cuda")[0]
    assert on_cpu.shape == on_gpu.shape and abs(on_cpu - on_gpu).max() < 1e-3


def test_nan_loss_stops_with_a_clear_message(stare_records, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_loss = tr.training_loss

    def nan_in_epoch_2(logits, label, fov):
        calls["n"] += 1
        loss = real_loss(logits, label, fov)
        return loss * float("nan") if calls["n"] == 3 else loss
    monkeypatch.setattr(tr, "training_loss", nan_in_epoch_2)
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at epoch 2, step 1.*checkpoint_last.pt, "
                                                  r"epoch 1\).*intact"):
        train(TINY, tmp_path / "run", records=stare_records)
    state = torch.load(tmp_path / "run" / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    model = load_model(tmp_path / "run", which="last")
    assert not model.training
    assert not (tmp_path / "run" / "result.json").exists()


def test_finished_runs_are_reused_unless_forced(stare_records, tmp_path, monkeypatch):
    first = train(TINY, tmp_path / "run", records=stare_records)
    assert not first.reused

    def must_not_train(*args, **kwargs):
        raise AssertionError("a finished run was retrained")
    monkeypatch.setattr(tr, "train_one_epoch", must_not_train)
    again = train(TINY, tmp_path / "run", records=stare_records)
    assert again.reused and (again.best_epoch, again.best_val) == (first.best_epoch, first.best_val)
    with pytest.raises(RunDirConflictError, match=r"different config \(fields \['lr'\].*force=True"):
        train(TINY.replace(lr=1e-3), tmp_path / "run", records=stare_records)
    monkeypatch.undo()
    forced = train(TINY.replace(lr=1e-3), tmp_path / "run", records=stare_records, force=True)
    assert not forced.reused
    assert json.loads((tmp_path / "run" / "config.json").read_text())["lr"] == 1e-3


def test_load_model_returns_the_best_weights(stare_records, tmp_path):
    result = train(TINY, tmp_path / "run", records=stare_records)
    model = load_model(tmp_path / "run")  # which="best"
    _assert_bit_equal(model.state_dict(), _weights(tmp_path / "run", "checkpoint_best.pt"))
    best = torch.load(tmp_path / "run" / "checkpoint_best.pt", weights_only=True)
    assert best["epoch"] == result.best_epoch
    history = runs.read_history(tmp_path / "run")
    assert max(history, key=lambda r: r["val_pr_auc"])["epoch"] == result.best_epoch
    assert [r["is_best"] for r in history].count(1.0) >= 1
    with pytest.raises(ValueError, match="which='first' is unknown; valid: best, last"):
        load_model(tmp_path / "run", which="first")
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        load_model(tmp_path)


def test_early_stopping_stops_after_patience(stare_records, tmp_path, monkeypatch):
    scores = iter([0.5, 0.7, 0.6, 0.6, 0.9])  # best at epoch 2, then 2 epochs without improvement
    real_validate = tr.validate
    monkeypatch.setattr(tr, "validate", lambda m, imgs: {**real_validate(m, imgs), "pr_auc": next(scores)})
    result = train(TINY.replace(max_epochs=5, patience=2), tmp_path / "run", records=stare_records)
    assert (result.epochs, result.best_epoch, result.stop_reason) == (4, 2, "early_stopping")
    assert math.isclose(result.best_val["pr_auc"], 0.7)


# ---------------------------------------------------------------- command line

def test_cli_smoke_preset_under_a_minute(stare_source, tmp_path):
    """The acceptance check of the issue: the real smoke preset, as a user runs it."""
    env = {**os.environ, "STARUNET_DATA": str(tmp_path / "data"), "STARUNET_SMOKE": "1"}
    if stare_source is not None:
        env["STARUNET_STARE_SOURCE"] = stare_source
    out = tmp_path / "run"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "starunet", "train", "--preset", "smoke", "--fusion", "star",
                           "--activation", "none", "--seed", "2024", "--device", "cpu", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert seconds < 60, f"smoke training took {seconds:.0f} s"
    for name in ("config.json", "history.csv", "checkpoint_last.pt", "checkpoint_best.pt", "result.json"):
        assert (out / name).is_file(), name
    assert len(runs.read_history(out)) == PRESETS["smoke"].max_epochs
    assert "best epoch" in proc.stdout


def test_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        tr.cli(["--fusion", "prod"])
    assert "invalid choice: 'prod'" in capsys.readouterr().err


# ---------------------------------------------------------------- reporting, figures, widget

def test_reports_and_figures(stare_records, tmp_path, monkeypatch):
    import ipywidgets
    import matplotlib.pyplot as plt

    from starunet import plots, widgets

    result = train(TINY, tmp_path / "run", records=stare_records)
    assert result.summary().startswith(f"star-none: trained {TINY.max_epochs} epochs (max epochs")
    assert f"best epoch {result.best_epoch}: validation roc_auc {result.best_val['roc_auc']:.4f}" in result.summary()
    listing = runs.describe_run_dir(tmp_path / "run")
    assert all(name in listing for name in runs.RUN_FILES) and str(tmp_path) not in listing
    assert f"{result.best_val['pr_auc']:.4f}" in report.run_results_markdown({"star-none": result})
    assert len(report.presets_markdown().splitlines()) == 2 + len(PRESETS)

    history = runs.read_history(tmp_path / "run")
    fig = plots.plot_training_curves({"star-none": history, "sum-relu": history[:2]})
    assert len(fig.axes) == 4
    assert [line.get_label() for line in fig.axes[0].lines if not line.get_label().startswith("_")] == \
        ["star-none", "sum-relu"]
    plt.close(fig)

    shown = []  # without a kernel there is no front-end: record what would be displayed

    class Handle:
        def update(self, figure):
            shown.append(("update", figure))
    monkeypatch.setattr("IPython.display.display", lambda figure, **kw: shown.append(("display", figure)) or Handle())
    redraw = widgets.live_training_plot("star-none")
    redraw(history[:1])
    redraw(history)
    assert [kind for kind, _ in shown] == ["display", "update"]  # one figure, redrawn in place
    assert shown[-1][1].axes[0].get_title() == "training loss (BCE, patches)"
    widgets.live_training_plot("star-none", ipywidgets.Output())(history)
    assert shown[-1][0] == "display"

    calls = []
    monkeypatch.setattr(tr, "train", lambda config, **kwargs: calls.append((config, kwargs)) or result)
    launcher = widgets.training_launcher(stare_records, preset="smoke", fusion="sum", activation="relu")
    button = launcher.children[2]
    button.click()
    config, kwargs = calls[0]
    assert (config.preset, config.fusion, config.activation) == ("smoke", "sum", "relu")
    assert kwargs["resume"] and kwargs["progress"] and kwargs["records"] is stare_records


def test_smoke_preset_killed_after_epoch_1_and_resumed_ends_with_the_same_weights(stare_records, tmp_path):
    """The acceptance check on the real smoke preset (full-size 2.9M-parameter U-Net)."""
    config = preset_config("smoke", fusion="star", activation="none", seed=7)
    train(config, tmp_path / "ref", records=stare_records)

    def kill_after_epoch_1(history):
        if len(history) == 1:
            raise Interrupt
    with pytest.raises(Interrupt):
        train(config, tmp_path / "run", records=stare_records, callback=kill_after_epoch_1)
    train(config, tmp_path / "run", records=stare_records, resume=True)
    for name in ("checkpoint_last.pt", "checkpoint_best.pt"):
        _assert_bit_equal(_weights(tmp_path / "ref", name), _weights(tmp_path / "run", name))
    assert (tmp_path / "ref" / "history.csv").read_text() == (tmp_path / "run" / "history.csv").read_text()


def test_early_stopping_is_not_stuck_on_a_nan_first_score():
    stopper = tr.EarlyStopping(patience=2, higher_is_better=True)
    assert stopper.update(float("nan"), 1)
    assert stopper.update(0.3, 2), "a real score replaces a NaN best"
    assert not stopper.update(0.2, 3) and stopper.best_epoch == 2


def test_a_width_that_leaves_no_channels_is_rejected_before_any_work():
    with pytest.raises(ValueError, match="leaves no channels"):
        TrainConfig(narrow=0.001).validate()


def test_constant_prediction_loss_is_the_binary_entropy():
    p = 0.1
    expected = F.binary_cross_entropy(torch.full((10,), p), (torch.arange(10) == 0).float()).item()
    assert tr.constant_prediction_loss(p) == pytest.approx(expected, rel=1e-6)
    assert tr.constant_prediction_loss(0.5) == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        tr.constant_prediction_loss(0.0)


def test_kill_and_resume_check_finds_identical_runs(stare_records):
    check = reproducibility.kill_and_resume_check(TINY, stare_records, kill_after_epoch=2)
    assert check == reproducibility.ResumeCheck(killed_after_epoch=2, same_weights=True, same_history=True)
    with pytest.raises(ValueError, match=r"kill_after_epoch must be in 1\.\.2"):
        reproducibility.kill_and_resume_check(TINY, stare_records, kill_after_epoch=3)


# ---------------------------------------------------------------- lr schedule, precision, corrupt files

def test_the_schedule_is_part_of_the_hash_and_old_configs_keep_theirs():
    base = PRESETS["quick"]
    # pinned: the hash of a source-recipe config from before the schedule existed (run folders stay valid)
    assert base.config_hash == "4f84e6a5e634"
    onecycle = base.replace(schedule="onecycle", warmup=0.15)
    assert len({base.config_hash, onecycle.config_hash, onecycle.replace(warmup=0.1).config_hash,
                onecycle.replace(schedule="cosine").config_hash}) == 4
    with pytest.raises(ValueError, match="schedule='linear' is unknown; valid: constant, onecycle, cosine"):
        base.replace(schedule="linear")
    with pytest.raises(ValueError, match="warmup=0.1 needs a schedule that warms up"):
        base.replace(warmup=0.1)


def test_learning_rate_schedules_warm_up_peak_and_anneal():
    c = PRESETS["fast"]
    total, warm = c.total_steps(), round(c.warmup * c.total_steps())
    lrs = [c.learning_rate(step) for step in range(total)]
    assert c.lr / 25 < lrs[0] < c.lr / 20 and max(lrs) == pytest.approx(c.lr)  # from lr/25 up
    assert lrs.index(max(lrs)) == warm - 1
    assert all(a <= b for a, b in zip(lrs[:warm], lrs[1:warm]))       # warm-up rises
    assert all(a >= b for a, b in zip(lrs[warm:], lrs[warm + 1:]))    # then only falls
    assert lrs[-1] == pytest.approx(c.lr / 1e4)
    cosine = c.replace(schedule="cosine")
    assert cosine.learning_rate(total - 1) == 0 and cosine.learning_rate(0) > 0
    assert PRESETS["full"].learning_rate(12345) == 5e-4


SCHEDULED = TINY.replace(schedule="onecycle", warmup=0.3, lr=2e-3, max_epochs=3, patience=3)


def test_train_follows_the_schedule_step_by_step(stare_records, tmp_path, monkeypatch):
    seen = []
    original = tr.train_one_epoch

    def spy(model, loader, optimizer, *args, **kwargs):
        loss = original(model, loader, optimizer, *args, **kwargs)
        seen.append(optimizer.param_groups[0]["lr"])
        return loss

    monkeypatch.setattr(tr, "train_one_epoch", spy)
    train(SCHEDULED, tmp_path / "run", records=stare_records, device="cpu", progress=False)
    steps = SCHEDULED.steps_per_epoch()
    assert seen == [SCHEDULED.learning_rate(e * steps - 1) for e in (1, 2, 3)]  # each epoch's last step


def test_resume_mid_schedule_is_bit_identical(stare_records):
    check = reproducibility.kill_and_resume_check(SCHEDULED, stare_records, kill_after_epoch=1)
    assert check == reproducibility.ResumeCheck(killed_after_epoch=1, same_weights=True, same_history=True)


def test_bf16_is_chosen_only_where_the_cpu_computes_it_natively(monkeypatch):
    from starunet import device as dev

    assert not dev.native_bf16_cpu({"avx512f", "avx512bw", "avx2"})  # oneDNN emulates it there: slower
    monkeypatch.setattr(dev, "native_bf16_cpu", lambda flags=None: False)
    assert dev.resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(dev, "native_bf16_cpu", lambda flags=None: True)
    assert dev.resolve_precision("auto", "cpu") == "bf16"
    assert dev.resolve_precision("fp32", "cpu") == "fp32" and dev.resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="unknown precision 'fp16'; valid: auto, fp32, bf16"):
        dev.resolve_precision("fp16", "cpu")


def test_precision_is_recorded_and_a_run_resumes_only_in_its_own(stare_records, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(TINY, run, records=stare_records, device="cpu", precision="bf16", progress=False,
              callback=lambda history: (_ for _ in ()).throw(KeyboardInterrupt))
    assert torch.load(run / runs.LAST_CHECKPOINT, weights_only=True)["precision"] == "bf16"
    with pytest.raises(RunDirConflictError, match="was trained in bf16 and would resume in fp32"):
        train(TINY, run, records=stare_records, device="cpu", precision="fp32", resume=True, progress=False)
    result = train(TINY, run, records=stare_records, device="cpu", precision="bf16", resume=True, progress=False)
    assert result.precision == "bf16" and json.loads((run / runs.RESULT_FILE).read_text())["precision"] == "bf16"
    assert "of bf16 training" in result.summary()
    with pytest.raises(RunDirConflictError, match="holds a finished run trained in bf16, not fp32"):
        train(TINY, run, records=stare_records, device="cpu", precision="fp32", progress=False)
    assert train(TINY, run, records=stare_records, device="cpu", progress=False).reused  # auto takes it


@pytest.mark.parametrize("name", [runs.LAST_CHECKPOINT, runs.BEST_CHECKPOINT])
def test_a_truncated_checkpoint_stops_with_one_line_naming_the_file(stare_records, tmp_path, name):
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(TINY, run, records=stare_records, device="cpu", progress=False,
              callback=lambda history: (_ for _ in ()).throw(KeyboardInterrupt))
    data = (run / name).read_bytes()
    (run / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(runs.CorruptCheckpointError) as caught:
        if name == runs.LAST_CHECKPOINT:
            train(TINY, run, records=stare_records, device="cpu", resume=True, progress=False)
        else:
            load_model(run)
    message = str(caught.value)
    assert "\n" not in message and name in message and "is corrupt or truncated" in message
    assert "train it again" in message
