"""Stopping a training run on request (``train(stop=...)``): from a callback, from
another thread, mid-epoch, before any epoch; and that a stopped run, resumed,
ends bit-identical to an uninterrupted one. Same tiny config as test_train.py."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from starunet import runs
from starunet.presets import TrainConfig
from starunet.training import TrainingStopped, train

TINY = TrainConfig(patch_size=32, samples_per_epoch=4, batch_size=2, max_epochs=3, patience=5,
                   narrow=0.125, val_images=1, val_crop=96, preset="tiny")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """As in test_train.py: tiny models are fastest on one thread on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def straight(stare_records, tmp_path_factory) -> Path:
    """An uninterrupted run of TINY: what every stopped-and-resumed run must equal."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    train(TINY, run_dir, records=stare_records)
    return run_dir


def _assert_same_run(a: Path, b: Path) -> None:
    for name in (runs.LAST_CHECKPOINT, runs.BEST_CHECKPOINT):
        wa, wb = (torch.load(d / name, map_location="cpu", weights_only=True)["model"] for d in (a, b))
        assert wa.keys() == wb.keys()
        assert all(torch.equal(wa[k], wb[k]) for k in wa), f"{name} differs"
    assert (a / runs.HISTORY_FILE).read_bytes() == (b / runs.HISTORY_FILE).read_bytes()


def test_event_set_by_the_epoch_callback_stops_after_that_epoch_and_resume_is_exact(
        stare_records, straight, tmp_path):
    stop = threading.Event()
    with pytest.raises(TrainingStopped) as caught:
        train(TINY, tmp_path, records=stare_records, stop=stop,
              callback=lambda history: len(history) == 1 and stop.set())
    err = caught.value
    assert (err.epoch, err.max_epochs, err.run_dir) == (1, 3, tmp_path)
    assert str(err).startswith("stopped after epoch 1 of 3 in ")
    assert len(runs.read_history(tmp_path)) == 1 and not (tmp_path / runs.RESULT_FILE).exists()
    result = train(TINY, tmp_path, records=stare_records, resume=True)
    assert result.epochs == 3
    _assert_same_run(straight, tmp_path)


def test_event_set_from_another_thread_stops_the_training_thread(stare_records, straight, tmp_path):
    """How the notebook-04 launcher uses it: training in a worker thread, the stop
    flag set by a click handled on another thread."""
    stop, epoch_1_saved, outcome = threading.Event(), threading.Event(), []

    def after_epoch(history):
        if len(history) == 1:
            epoch_1_saved.set()
            assert stop.wait(60)  # hold the worker until the other thread has asked it to stop

    def worker():
        try:
            train(TINY, tmp_path, records=stare_records, stop=stop, callback=after_epoch)
        except TrainingStopped as err:
            outcome.append(err.epoch)

    thread = threading.Thread(target=worker)
    thread.start()
    assert epoch_1_saved.wait(120)
    stop.set()
    thread.join(120)
    assert outcome == [1]
    train(TINY, tmp_path, records=stare_records, resume=True)
    _assert_same_run(straight, tmp_path)


def test_stop_between_steps_drops_the_partial_epoch(stare_records, straight, tmp_path):
    checks = []

    def stop() -> bool:  # TINY has 2 steps per epoch: check 4 is before epoch 2's second step
        checks.append(1)
        return len(checks) == 4

    with pytest.raises(TrainingStopped, match="after epoch 1 of 3") as caught:
        train(TINY, tmp_path, records=stare_records, stop=stop)
    assert caught.value.epoch == 1
    state = torch.load(tmp_path / runs.LAST_CHECKPOINT, map_location="cpu", weights_only=True)
    assert state["epoch"] == 1 and len(state["history"]) == 1
    train(TINY, tmp_path, records=stare_records, resume=True)
    _assert_same_run(straight, tmp_path)


def test_stop_before_the_first_epoch_saves_nothing_and_resume_starts_over(stare_records, straight, tmp_path):
    stop = threading.Event()
    stop.set()
    with pytest.raises(TrainingStopped, match=r"before the first epoch ended \(nothing saved\)") as caught:
        train(TINY, tmp_path, records=stare_records, stop=stop)
    assert caught.value.epoch == 0 and not (tmp_path / runs.LAST_CHECKPOINT).exists()
    train(TINY, tmp_path, records=stare_records, resume=True)
    _assert_same_run(straight, tmp_path)


def test_a_finished_run_is_reused_even_with_the_stop_flag_set(stare_records, straight):
    stop = threading.Event()
    stop.set()
    assert train(TINY, straight, records=stare_records, stop=stop).reused
