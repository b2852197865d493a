"""Tests of starunet.provenance: a grid's recorded facts in the words its READMEs use."""
from __future__ import annotations

import pytest

from starunet import provenance as P
from starunet.config import PROJECT_ROOT

SEARCH = PROJECT_ROOT / "results" / "search" / "onecycle-4e-3-b32-20k"


@pytest.mark.parametrize("provenance, precision", [
    ({"precision": "bf16 training steps, fp32 evaluation"}, "bf16"),
    ({"precision": "bf16, fp32 training steps, fp32 evaluation"}, None),     # mixed: no one flag retrains it
    ({"hardware": {"summary": "cpu: AMD EPYC, 2 torch threads"}}, "fp32"),  # before precision was recorded
    ({"trained_on": ["cuda: NVIDIA H200"]}, "bf16"),
])
def test_a_grid_readme_names_the_precision_its_command_left_to_auto(provenance, precision):
    """`auto` picks by machine, so a recorded command without `--precision` reruns the
    same numbers only with the precision its runs trained in, which the README adds."""
    command = "python -m starunet reproduce --preset quick --out results/reference"
    assert P.training_precision(provenance) == precision
    note = P.rerun_note({**provenance, "command": command})
    assert note == ("" if precision is None else f" (its runs trained in {precision}: add `--precision {precision}` "
                                                 "to train them so on any machine)")
    assert P.rerun_note({**provenance, "command": command + " --precision fp32"}) == ""


def test_a_recipe_search_names_what_its_set_changed():
    command = "python -m starunet reproduce --preset fast --out x --set batch_size=32 lr=4e-3 --jobs 2"
    assert P.preset_changes({"command": command}) == " with batch_size=32, lr=4e-3 (changed by `--set`)"
    # argparse keeps the last group, and --set=FIELD=VALUE opens one as well
    assert P.preset_changes({"command": "x --set a=1 --jobs 2 --set=b=2 c=3"}) == " with b=2, c=3 (changed by `--set`)"
    assert P.preset_changes({"command": "python -m starunet reproduce --preset fast --out x"}) == ""


def test_the_title_says_which_fusions_and_activations_the_grid_holds():
    assert P.grid_title({"fusions": ["sum", "star"], "activations": ["none", "relu"]}) == (
        "sum vs star skip fusion, with and without ReLU")
    assert P.grid_title({"fusions": ["sum"], "activations": ["relu"]}) == "sum skip fusion, with ReLU"
    assert P.grid_title({"fusions": ["star"], "activations": ["none", "gelu"]}) == (
        "star skip fusion, without activation, with GELU")


def test_the_data_note_names_the_split_the_runs_used():
    config = {"n_test": 10, "val_ratio": 0.2, "split_seed": 2024, "val_images": None, "val_crop": None}
    assert P.data_note({"preset_config": config}) == (
        "STARE's 20 vessel-labelled images, with annotator `ah`'s labels: 8 train, 2 validate (im0004 im0044; "
        "split seed 2024), 10 test: im0162 im0163 im0235 im0236 im0239 im0240 im0255 im0291 im0319 im0324")
    smoke = P.data_note({"preset_config": {**config, "val_images": 1, "val_crop": 160}})
    assert "2 validate (im0004, the first 1 of 2 only, centre-cropped to 160x160; split seed 2024)" in smoke


def test_an_invocation_that_reused_every_run_says_it_only_assembled_the_folder():
    p = {"started": "a", "finished": "b", "runs": 4, "runs_reused": 4}
    assert "it assembled the folder" in P.date_note(p)
    assert P.date_note({**p, "runs_reused": 3}) == "started a, finished b"
    assert P.date_note({**p, "invocations": [{"command": "c", "outcome": "o"}]}) == "started a, finished b"
    assert P.date_note({**p, "assembled": "retrained on ..."}) == "started a, finished b"


def test_the_committed_search_readme_names_its_recipe_and_its_single_configuration():
    readme = (SEARCH / "README.md").read_text(encoding="utf-8")
    assert readme.startswith("# Grid results: sum skip fusion, with ReLU\n")
    assert "`fast` with batch_size=32, lr=4e-3, max_epochs=10 (changed by `--set`)" in readme
    assert "here only its header: one configuration, nothing to compare" in readme


def test_durations_read_in_minutes_or_hours():
    assert P.format_duration(187) == "3 min 07 s" and P.format_duration(3900) == "1 h 05 min"
