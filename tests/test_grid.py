"""Tests of starunet.grid and starunet.results: the reproduce grid, its files and
caches, reading grids back, and the committed grids."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import starunet.data as D
import starunet.evaluate as E
import starunet.grid as G
import starunet.report as R
import starunet.results as RS
import starunet.stats as S
from fakes import crop, fake_records, synthetic_grid, tiny_smoke
from starunet.config import PROJECT_ROOT
from starunet.inference import predict_images
from starunet.io import read_csv, write_csv_atomic, write_json_atomic
from starunet.metrics import METRIC_NAMES, segmentation_metrics
from starunet.runs import load_model, run_dir_for


def test_reproduce_writes_the_grid_and_resumes(stare_records, tiny_preset, tmp_path):
    records = [crop(r) for r in stare_records]  # 96x96 centres: seconds instead of minutes
    out, runs = tmp_path / "out", tmp_path / "runs"
    res = G.reproduce("smoke", [7], out, fusions=["sum", "star"], activations=["none"], runs_dir=runs,
                      records=records, command="python -m starunet reproduce --preset smoke", log=lambda m: None)

    rows = read_csv(out / "metrics.csv")
    assert list(rows[0])[:10] == G.METRICS_COLUMNS
    assert [(r["fusion"], r["activation"], r["seed"]) for r in rows] == [("sum", "none", "7"), ("star", "none", "7")]
    for r in rows:
        assert all(0.0 <= float(r[m]) <= 1.0 for m in METRIC_NAMES)
        assert r["preset"] == "smoke" and r["n_test_images"] == "10"
    test_ids = tiny_preset.split().test
    assert len(read_csv(out / "per_image.csv")) == 2 * len(test_ids)
    curves = json.loads((out / "curves.json").read_text())
    assert sorted(curves) == ["star-none-seed7", "sum-none-seed7"]
    methods = read_csv(out / "inference_methods.csv")  # both methods on every run: the sensitivity
    assert [(r["run"], r["method"]) for r in methods] == [(k, m) for k in ("sum-none-seed7", "star-none-seed7")
                                                          for m in ("pad", "tiles")]
    assert len(list((out / "predictions").glob("*.png"))) == 2 * G.PANEL_COUNT
    readme = (out / "README.md").read_text()
    assert "`python -m starunet reproduce --preset smoke`" in readme and torch.__version__ in readme
    assert "**Smoke preset or smoke mode**" in readme  # smoke results say they are no result
    verdicts = read_csv(out / "verdicts.csv")  # one seed: every comparison preliminary, no verdict
    assert {(r["n_seeds"], r["verdict"]) for r in verdicts} == {("1", "inconclusive")}
    assert "one seed, preliminary: no interval, no verdict" in readme
    assert res.provenance["runs_reused"] == res.provenance["evaluations_reused"] == 0 and res.provenance["test_ids"] == list(test_ids)

    # the evaluation of a run equals evaluate_run on its run directory
    run_dir = run_dir_for(tiny_preset.replace(seed=7), runs)
    direct = E.evaluate_run(run_dir, records)
    assert direct.pooled["roc_auc"] == pytest.approx(float(res.run("star-none-seed7")["roc_auc"]), abs=1e-6)

    # the tuned threshold is chosen on the run's validation images, never the test images
    from starunet.metrics import f1_optimal_threshold
    val = D.select_records(records, tiny_preset.split().val)
    val_probs = predict_images(load_model(run_dir), [r.image for r in val])
    expected = f1_optimal_threshold(val_probs, [r.label for r in val], [r.fov for r in val])
    assert direct.val_threshold == pytest.approx(expected)
    assert float(res.run("star-none-seed7")["val_threshold"]) == pytest.approx(expected, abs=1e-6)
    test = D.select_records(records, test_ids)
    at_threshold = segmentation_metrics([direct.probabilities[r.id] for r in test], [r.label for r in test],
                                          [r.fov for r in test], threshold=expected)
    assert direct.tuned["f1_tuned"] == pytest.approx(at_threshold["f1"])
    assert float(res.run("star-none-seed7")["f1_tuned"]) == pytest.approx(at_threshold["f1"], abs=1e-6)
    assert all(r["f1_tuned"] != "" for r in read_csv(out / "per_image.csv"))
    assert "f1_tuned" in res.summary()[("star", "none")]["mean"]
    assert E.evaluate_run(run_dir, records, tune_threshold=False).val_threshold is None
    with pytest.raises(ValueError, match="lack the run's validation images.*tune_threshold=False"):
        E.evaluate_run(run_dir, test)
    with pytest.raises(ValueError, match="are the run's validation images.*tune_threshold=False"):
        E.evaluate_run(run_dir, records, ids=tiny_preset.split().val)

    again = G.reproduce("smoke", [7], out, fusions=["sum", "star"], activations=["none"], runs_dir=runs,
                        records=records, log=lambda m: None)
    assert again.provenance["runs_reused"] == again.provenance["evaluations_reused"] == 2
    assert read_csv(out / "metrics.csv") == rows  # same numbers, nothing retrained

    # another seed into the same folder would drop seed 7: refused, with the fix named
    with pytest.raises(G.GridConflictError, match=r"sum-none-seed7.*--seeds 7 8.*--overwrite"):
        G.reproduce("smoke", [8], out, fusions=["sum", "star"], activations=["none"], runs_dir=runs,
                    records=records, log=lambda m: None)
    assert read_csv(out / "metrics.csv") == rows  # refused before anything was written
    more = G.reproduce("smoke", [7, 8], out, fusions=["sum", "star"], activations=["none"], runs_dir=runs,
                       records=records, log=lambda m: None)
    assert more.keys == ["sum-none-seed7", "star-none-seed7", "sum-none-seed8", "star-none-seed8"]
    assert more.provenance["evaluations_reused"] == 2  # the seed-7 evaluations
    assert read_csv(out / "metrics.csv")[:2] == rows
    replaced = G.reproduce("smoke", [8], out, fusions=["sum"], activations=["none"], runs_dir=runs,
                           records=records, log=lambda m: None, overwrite=True)
    assert replaced.keys == ["sum-none-seed8"]


@pytest.fixture(scope="module")
def small_grid(stare_records, tmp_path_factory):
    """One small grid made once for the tests that only read one: sum and star without
    ReLU, seeds 1 and 2, the tiny preset on 96x96 crops. Returns ``(results, records)``."""
    from starunet.presets import PRESETS

    records = [crop(r) for r in stare_records]
    folder = tmp_path_factory.mktemp("small_grid")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(PRESETS, "smoke", tiny_smoke())
        G.reproduce("smoke", [1, 2], folder / "out", activations=["none"], runs_dir=folder / "runs",
                    records=records, log=lambda m: None)
    return RS.load_results(folder / "out"), records


def test_results_are_read_back_and_summarised(small_grid):
    res = small_grid[0]
    assert res.keys == ["sum-none-seed1", "star-none-seed1", "sum-none-seed2", "star-none-seed2"]
    assert isinstance(res.run("star-none-seed2")["f1"], float)
    with pytest.raises(KeyError, match="valid: sum-none-seed1"):
        res.run("star-relu-seed1")
    prob = res.probability_map("star-none-seed1", res.provenance["panel_ids"][0])
    assert prob.shape == (96, 96) and 0 <= prob.min() <= prob.max() <= 1
    diffs = res.paired_differences()
    assert {d.activation for d in diffs} == {"none"} and all(d.n_seeds == 2 for d in diffs)
    text = R.results_markdown(res)
    assert "| sum | none | 2 |" in text and "### Verdicts (`verdicts.csv`)" in text
    assert "**star − sum, without ReLU** (2 seeds, pooled" in text and "3 pooled intervals at 98.33 % each" in text
    assert [r["statistic"] for r in read_csv(res.directory / "verdicts.csv")] == \
        ["pooled"] * 3 + ["per_image"] * 3 + ["pooled_tiles"] * 3  # every run scored both ways: the sensitivity
    assert str(res.directory) not in text and "/tmp" not in text  # no machine paths in notebook outputs


def test_only_numeric_columns_are_parsed(tmp_path):
    row = {"fusion": "star", "activation": "none", "seed": "7", "roc_auc": "0.9", "epochs": "3",
           "config_hash": "12345678", "device": "cpu", "stop_reason": "", "train_seconds": "1.5"}
    parsed = RS.parse_row(row)
    assert parsed["config_hash"] == "12345678"  # all digits, still a string
    assert (parsed["seed"], parsed["epochs"], parsed["roc_auc"], parsed["train_seconds"]) == (7, 3, 0.9, 1.5)
    assert parsed["stop_reason"] == "" and parsed["device"] == "cpu"



def test_own_runs_are_shown_beside_the_reference(stare_records, tiny_preset, tmp_path):
    records = [crop(r) for r in stare_records]
    runs = tmp_path / "runs"
    reference = G.reproduce("smoke", [7], tmp_path / "reference", fusions=["sum", "star"], activations=["none"],
                            runs_dir=runs, records=records, log=lambda m: None)
    assert G.own_runs_beside_reference(reference, records, runs_dir=tmp_path / "no-runs") is None
    assert G.finished_reference_seeds(reference, runs) == [7]
    own = G.own_runs_beside_reference(reference, records, runs_dir=runs, out=tmp_path / "check")
    assert own.provenance["runs_reused"] == 2  # evaluated, not retrained
    text = R.reference_comparison_markdown(own, reference)
    assert "| star-none-seed7 | PR-AUC |" in text and "+0.0000" in text
    assert "**identical to 4 decimals**" in text
    own.runs[0]["f1"] = float(own.runs[0]["f1"]) + 0.01
    assert "differ from the reference by up to 0.0100" in R.reference_comparison_markdown(own, reference)
    other = RS.GridResults(tmp_path, "own", [], [], {}, {})
    assert "nothing to compare" in R.reference_comparison_markdown(other, reference)



def test_grid_configs_validate_their_inputs():
    configs = G.grid_configs("smoke", [1, 2])
    assert len(configs) == 8 and configs[0].seed == 1 and configs[-1].seed == 2
    with pytest.raises(ValueError, match="distinct"):
        G.grid_configs("smoke", [1, 1])
    with pytest.raises(ValueError, match="valid: smoke, fast, quick, long, full"):
        G.grid_configs("medium", [1])
    with pytest.raises(ValueError, match="fusion='prod' is unknown"):
        G.grid_configs("smoke", [1], fusions=["prod"])


def test_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        G.cli(["--preset", "medium"])
    assert "invalid choice: 'medium'" in capsys.readouterr().err
    assert G.cli(["--preset", "smoke", "--seeds", "1", "1", "--out", "unused"]) == 2
    assert "seeds must be distinct" in capsys.readouterr().err


def test_two_run_comparison_and_inference_table(small_grid, tmp_path):
    res, records = small_grid
    text = R.compare_two_runs(res, "sum-none-seed1", "star-none-seed1")
    assert text.startswith("|  | ROC-AUC") and "star-none-seed1 − sum-none-seed1 (points)" in text
    assert "Test images (of 10) on which `star-none-seed1` scores higher" in text
    table = R.inference_methods_markdown(res.inference_methods)
    assert "| sum/none | pad |" in table and "| sum/none | tiles |" in table and "overlapping tiles took" in table
    assert R.inference_methods_markdown([]).startswith("No inference-method measurement")

    import matplotlib

    matplotlib.use("Agg")
    from starunet import widgets

    box = widgets.run_comparison(res, {r.id: r for r in records})
    first, second, image = box.children[0].children
    assert (first.value, second.value) == ("sum-none-seed1", "star-none-seed1")
    assert list(image.options) == res.provenance["panel_ids"] and not image.disabled
    second.value = "sum-none-seed1"  # any pair, even a run with itself, redraws without error
    with pytest.raises(ValueError, match="at least two runs"):
        widgets.run_comparison(RS.GridResults(tmp_path, "own", res.runs[:1], [], {}, {}))


def test_figures_of_notebook_05(per_image_rows, grid_rows):
    import matplotlib

    matplotlib.use("Agg")
    from starunet import plots

    curve = {"roc": {"fpr": [0, 0.1, 1], "tpr": [0, 0.8, 1]}, "pr": {"recall": [0, 0.8, 1], "precision": [1, 0.7, 0.1]}}
    curves = {S.run_key(f, "none", s): curve for f in ("sum", "star") for s in (1, 2)}
    fig = plots.plot_roc_pr(curves, markers={"observer": {"se": 0.8, "sp": 0.95, "pre": 0.7}})
    labels = fig.axes[1].get_legend_handles_labels()[1]
    assert labels == ["sum / none", "star / none", "observer"]  # one entry per configuration
    assert len(fig.axes[0].get_lines()) >= len(curves)  # but every run is drawn on the ROC axis
    per_run = plots.plot_roc_pr(dict(list(curves.items())[:2]), per_run=True)
    assert per_run.axes[1].get_legend_handles_labels()[1] == list(curves)[:2]

    record = fake_records(n=1, shape=(40, 40))[0]
    probs = {"a": np.full((40, 40), 0.7, np.float32), "b": np.zeros((40, 40), np.float32)}
    panels = plots.plot_prediction_panels(record.image, record.label, record.fov, probs, crop=(0, 20, 0, 20))
    assert len(panels.axes) == 6 and panels.axes[1].get_images()[0].get_array().shape[:2] == (20, 20)

    rows = grid_rows()
    assert len(plots.plot_seed_metrics(rows).axes) == 3
    diffs = S.paired_differences(per_image_rows({"none": 0.05, "relu": 0.0}), metrics=["f1", "se"])
    forest = plots.plot_paired_differences(diffs)
    assert [t.get_text() for t in forest.axes[0].get_yticklabels()] == ["f1", "se"]
    matplotlib.pyplot.close("all")


def test_budget_grids_reads_the_other_grids_only_when_present_in_budget_order(tmp_path):
    quick = synthetic_grid(tmp_path, "quick", 0.0, 12)
    assert list(RS.budget_grids(quick, [tmp_path / "missing"])) == ["quick"]
    for preset in ("full", "long"):
        grid = tmp_path / preset
        grid.mkdir()
        write_csv_atomic(grid / "metrics.csv", [{"fusion": "sum", "activation": "none", "seed": 1}],
                           ["fusion", "activation", "seed"])
        write_json_atomic(grid / "provenance.json", {"preset": preset})
    grids = RS.budget_grids(quick, [tmp_path / "full", tmp_path / "long"])
    assert list(grids) == ["quick", "long", "full"] and grids["long"].kind == "own"
    full = RS.load_results(tmp_path / "full")  # shown first: the others join it, in budget order
    assert list(RS.budget_grids(full, [tmp_path / "full", tmp_path / "long"])) == ["long", "full"]


def test_the_course_shows_the_fast_study_once_complete_else_the_full_grid(monkeypatch, tmp_path):
    monkeypatch.setattr(RS, "own_results_dir", lambda: tmp_path / "no-own-grid")
    shown = RS.find_results()
    expected = (RS.FAST_DIR if RS.complete_seeds(RS.FAST_DIR) >= RS.MAIN_ANSWER_SEEDS else RS.FULL_REFERENCE_DIR
                if (RS.FULL_REFERENCE_DIR / "metrics.csv").is_file() else RS.REFERENCE_DIR)
    assert shown.directory == expected and shown.kind == "reference"
    fast = tmp_path / "fast"
    fast.mkdir()
    monkeypatch.setattr(RS, "FAST_DIR", fast)
    rows = [("sum", "none", seed, "fast", "pad") for seed in range(5)] + [("star", "none", 0, "fast", "pad")]
    _grid_folder(fast, rows)
    assert RS.complete_seeds(fast) == 1 and RS.find_results().directory != fast
    _grid_folder(fast, rows + [("star", "none", seed, "fast", "pad") for seed in range(1, 5)])
    assert RS.complete_seeds(fast) == 5 and RS.find_results().directory == fast
    monkeypatch.setattr(RS, "FAST_DIR", tmp_path / "no-fast-grid")
    monkeypatch.setattr(RS, "FULL_REFERENCE_DIR", tmp_path / "no-full-grid")
    assert RS.find_results().directory == RS.REFERENCE_DIR
    assert list(RS.budget_grids(RS.find_results())) == ["quick", "long"]


def _grid_folder(out, rows):
    from starunet.io import write_csv_atomic

    write_csv_atomic(out / "metrics.csv", [dict(zip(("fusion", "activation", "seed", "preset", "method"), r))
                                           for r in rows], ["fusion", "activation", "seed", "preset", "method"])


def test_grid_conflict_hint_fits_what_differs(tmp_path):
    _grid_folder(tmp_path, [("sum", "none", 2024, "quick", "pad"), ("star", "none", 2024, "quick", "pad")])
    # another preset: more seeds cannot help, another folder can
    with pytest.raises(G.GridConflictError) as err:
        G.check_output_folder(tmp_path, G.grid_configs("long", [2024], activations=["none"]), "pad")
    message = str(err.value)
    assert "another kind (preset quick, method pad)" in message and "--seeds" not in message
    assert "another --out (e.g. --out runs/long-grid)" in message and "--overwrite" in message
    # the same kind with other seeds and fusions: ask for all of them
    with pytest.raises(G.GridConflictError, match=r"e\.g\. --seeds 2024 2025 --fusions star sum;"):
        G.check_output_folder(tmp_path, G.grid_configs("quick", [2025], fusions=["star"], activations=["none"]),
                              "pad")


def test_an_interrupted_grid_describes_the_runs_it_finished_and_names_the_missing(stare_records, tiny_preset,
                                                                                  tmp_path, monkeypatch):
    """Ctrl-C (or a lease's end) after the first run: the folder is a consistent, smaller
    grid whose README says it is partial and which runs are missing; a re-run completes it."""
    records = [crop(r) for r in stare_records]
    out, runs = tmp_path / "out", tmp_path / "runs"
    real = G._trained_runs

    def interrupted_after_one(*args, **kwargs):
        for n, result in real(*args, **kwargs):
            yield n, result
            raise KeyboardInterrupt
    monkeypatch.setattr(G, "_trained_runs", interrupted_after_one)
    with pytest.raises(KeyboardInterrupt):
        G.reproduce("smoke", [7], out, fusions=["sum", "star"], activations=["none"], runs_dir=runs,
                    records=records, log=lambda m: None)
    partial = RS.load_results(out)
    assert partial.keys == ["sum-none-seed7"]
    assert partial.provenance["partial"] == {"ended": "interrupted", "missing": ["star-none-seed7"]}
    readme = (out / "README.md").read_text()
    assert "partial: interrupted, 1 run(s) missing: star-none-seed7" in readme
    assert "seeds 7, 1 run (partial: interrupted, 1 of the 2 runs it was started for missing)" in partial.describe()
    assert partial.provenance["train_seconds_total"] == round(partial.run("sum-none-seed7")["train_seconds"], 1)

    monkeypatch.setattr(G, "_trained_runs", real)
    whole = G.reproduce("smoke", [7], out, fusions=["sum", "star"], activations=["none"], runs_dir=runs,
                        records=records, log=lambda m: None)
    assert whole.keys == ["sum-none-seed7", "star-none-seed7"] and "partial" not in whole.provenance
    assert "partial" not in (out / "README.md").read_text()


def test_every_grid_folder_inside_results_is_a_committed_one(tmp_path):
    assert RS.is_committed_grid(PROJECT_ROOT / "results" / "fast")
    assert RS.is_committed_grid(PROJECT_ROOT / "results" / "search" / "onecycle-4e-3-16k")
    assert not RS.is_committed_grid(PROJECT_ROOT / "results") and not RS.is_committed_grid(tmp_path / "fast")


def test_a_grid_describes_the_seeds_of_its_finished_runs(tmp_path):
    """Not the seeds it was started with: a grid started for 10 seeds that holds 2 says 2."""
    from fakes import synthetic_grid

    grid = synthetic_grid(tmp_path, "fast", 0.0, 8, seeds=(2025, 2024))
    grid.provenance.update(seeds=list(range(2024, 2034)), runs=20)
    assert "seeds 2024, 2025, 4 runs, trained" in grid.describe()


@pytest.mark.parametrize("name", ["reference", "long", "full", "fast", "fast-fp32", "search/onecycle-2e-3-20k",
                                  "search/onecycle-2e-3-32k", "search/onecycle-4e-3-16k",
                                  "search/onecycle-4e-3-b32-20k"])
def test_committed_grids_regenerate_their_readme(name):
    """The committed READMEs are what the code generates from the committed files."""
    folder = PROJECT_ROOT / "results" / name
    results = RS.load_results(folder, kind="reference")
    assert R.provenance_readme(results) == (folder / "README.md").read_text(encoding="utf-8")


def test_the_inference_table_groups_runs_by_configuration():
    def row(run, method, value):
        return {"run": run, "method": method, "seconds_per_image": 1.0 if method == "pad" else 3.0,
                **{m: value for m in ("roc_auc", "pr_auc", "f1", "acc", "se", "sp", "pre")}}

    rows = [row("sum_star_bn-none-seed1", "pad", 0.80), row("sum_star_bn-none-seed1", "tiles", 0.82),
            row("sum_star_bn-none-seed2", "pad", 0.70), row("sum_star_bn-none-seed2", "tiles", 0.76)]
    text = R.inference_methods_markdown(rows)
    assert "| sum_star_bn/none | pad | 2 | 1.00 | 0.7500 |" in text and "| sum_star_bn/none | tiles | 2 | 3.00 | 0.7900 |" in text
    assert "Measured on 2 runs" in text and "took 3.0x" in text and "PR-AUC +0.0400 (+0.0200 to +0.0600)" in text
