"""Tests of starunet.report: the Markdown tables (source layout, budgets, thresholds)
and the statistics they show."""
from __future__ import annotations

import dataclasses

import pytest
from matplotlib.colors import to_hex

import starunet.report as R
import starunet.results as RS
import starunet.stats as S
from fakes import synthetic_grid
from starunet.metrics import METRIC_NAMES


def test_comparison_table_has_two_runs_and_a_change_row():
    a = {m: 0.5 for m in METRIC_NAMES}
    b = {m: 0.6 if m == "f1" else 0.4 for m in METRIC_NAMES}
    table = R.comparison_table(a, b, "sum", "star")
    lines = table.splitlines()
    assert len(lines) == 5 and lines[0].startswith("|  | ROC-AUC")
    assert lines[2].startswith("| sum | 0.5000") and lines[3].startswith("| star | 0.4000")
    assert lines[4].startswith("| star − sum (points)")  # absolute points, as the source's 提升 row
    assert "▲ 10.00" in lines[4] and lines[4].count("▼ 10.00") == 6


def test_source_format_table_with_source_and_human_rows(grid_rows):
    runs = grid_rows()
    source = {"none": {"sum": {m: 0.9 for m in METRIC_NAMES}, "star": {m: 0.95 for m in METRIC_NAMES}}}
    human = {m: 0.7 for m in METRIC_NAMES}
    table = R.source_format_table(runs, "none", source=source, human=human)
    assert "sum (+), ours, 3 seed(s)" in table and "star (*), source" in table
    assert "提升 star − sum, source (points) | ▲ 5.00" in table  # 0.95 − 0.9 = 5 points, not +5.56 %
    assert "second observer (vk vs ah) | 0.7000" in table
    without = R.source_format_table(runs, "relu", source=source)  # no source numbers for relu
    assert "source" not in without and len(without.splitlines()) == 5
    with pytest.raises(ValueError, match="gelu"):
        R.source_format_table(runs, "gelu")


def test_the_improvement_row_pairs_by_seed():
    """A 3-seed sum against a 2-seed star: the 提升 row is the mean of the 2 paired
    differences, not the difference of a 3-seed mean and a 2-seed mean."""
    runs = [{"fusion": "sum", "activation": "relu", "seed": s, **{m: v for m in METRIC_NAMES}}
            for s, v in ((1, 0.70), (2, 0.90), (3, 0.72))]
    runs += [{"fusion": "star", "activation": "relu", "seed": s, **{m: v for m in METRIC_NAMES}}
             for s, v in ((1, 0.71), (3, 0.75))]
    row = R.source_format_table(runs, "relu").splitlines()[4]
    assert row.startswith("| 提升 star − sum, ours (points; paired by seed, 2 seed(s)) | ▲ 2.00")  # not ▼ 4.67


def test_training_budget_comparison(tmp_path):
    grids = {"quick": synthetic_grid(tmp_path, "quick", -0.05, 12), "long": synthetic_grid(tmp_path, "long", 0.0, 40)}
    diffs = S.budget_differences(grids)  # the synthetic grids have "none" only
    assert [d.mean for d in diffs["quick"]] == pytest.approx([-0.05] * 3)
    assert {d.statistic for d in diffs["quick"]} == {"pooled"} and diffs["quick"][0].family == 3
    assert [d.verdict for d in diffs["quick"]] == ["worse"] * 3
    assert all(d.mean == pytest.approx(0.0, abs=1e-12) and d.verdict == "equivalent" for d in diffs["long"])
    table = R.training_budget_table(grids, diffs)
    assert "| quick | none | ROC-AUC |" in table and "| worse |" in table
    assert "12.0 (11.0), 1,200" in table and "40.0 (39.0), 4,000" in table
    assert table.endswith("`quick` headline: 3 intervals at 98.33 % each; `long` headline: 3 intervals at 98.33 % each.")
    assert "| -0.0500 [-0.0500, -0.0500] | worse | headline (3) |" in table  # printed from the verdicts.csv row
    bullets = R.budget_verdicts_markdown(diffs).splitlines()
    assert len(bullets) == 2 and bullets[0].startswith("- Preset `quick` (family of 3): **star − sum, without ReLU**")
    assert "ROC-AUC -0.0500 [-0.0500, -0.0500] worse" in bullets[0]
    assert S.budget_differences(grids, activations=["relu"]) == {}  # no relu runs: nothing to pair
    from starunet import plots
    fig = plots.plot_budget_differences(diffs)  # one panel per comparison, one style per budget
    assert [ax.get_title() for ax in fig.axes] == ["star − sum, without ReLU"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["quick", "long"]
    drawn = {to_hex(line.get_color()) for line in fig.axes[0].lines if line.get_marker() in ("v", "s")}
    assert drawn == {plots.BUDGET_STYLES["quick"][0].lower(), plots.BUDGET_STYLES["long"][0].lower()}
    assert fig.axes[0].get_xlabel() == "b − a (pooled metric, per-seed difference)"
    mixed = S.budget_differences(grids, activations=["none"], replacement=True)
    replacement = {"config_a": S.Config("sum", "relu"), "config_b": S.Config("star", "none"), "by_fusion": False}
    mixed["long"] = mixed["long"] + [dataclasses.replace(d, **replacement) for d in mixed["long"]]
    fig = plots.plot_budget_differences(mixed)
    assert [ax.get_title() for ax in fig.axes] == ["star − sum, without ReLU", "star/none − sum/relu"]
    assert plots.budget_style("mine") == ("0.45", "P")  # a reader's own preset: grey, not another's colour


def test_threshold_table_and_grids_evaluated_before_the_tuned_threshold(tmp_path):
    grid = synthetic_grid(tmp_path, "quick", -0.05, 12)
    with pytest.raises(ValueError, match="no validation-tuned threshold.*rerun"):
        R.threshold_table({"quick": grid})
    with pytest.raises(ValueError, match="no 'f1_tuned' values.*older starunet"):
        S.paired_differences(grid.per_image, metrics=["f1_tuned"])
    assert not grid.has_tuned_threshold
    report = R.threshold_report({"quick": grid})
    assert report.startswith("* `quick`") and "older starunet" in report and "|" not in report
    for row in grid.runs:
        row.update(val_threshold=0.3 if row["fusion"] == "star" else 0.5, f1_tuned=row["f1"] + 0.01,
                   se_tuned=0.6, pre_tuned=0.8)
    for row in grid.per_image:
        row["f1_tuned"] = row["f1"] + 0.01
    assert grid.has_tuned_threshold
    report = R.threshold_report({"quick": grid})
    assert "| quick | star | none | 0.300" in report and "| quick | none | F1 (val. thr.) |" in report
    # F1 at 0.5 keeps the headline family of the budget table (and verdicts.csv); the tuned F1 has its own
    headline = {d.metric: d for d in S.budget_differences({"quick": grid})["quick"]}
    assert f"| {R.recorded_cell(headline['f1'], with_verdict=False)} | worse | headline (3) |" in report
    assert "| F1 (val. thr.) (1) |" in report and "`quick` F1 (val. thr.): 1 interval at 95.00 % each" in report
    table = R.threshold_table({"quick": grid}).splitlines()
    assert len(table) == 2 + 2  # header, rule, sum/none and star/none
    assert table[3].startswith("| quick | star | none | 0.300 ± 0.000 |")
    diffs = S.paired_differences(grid.per_image, metrics=["f1_tuned"])
    assert diffs[0].mean == pytest.approx(-0.05)


def test_replacement_differences_pair_star_without_relu_with_sum_with_relu(tmp_path):
    rows, runs = [], []
    for seed in (1, 2):
        for fusion, activation, value in (("sum", "relu", 0.80), ("star", "none", 0.78), ("sum", "none", 0.9)):
            rows += [{"fusion": fusion, "activation": activation, "seed": seed, "image_id": f"im{i}",
                      **{m: value + 0.01 * i for m in METRIC_NAMES}} for i in range(3)]
            runs.append({"fusion": fusion, "activation": activation, "seed": seed, "epochs": 5, "best_epoch": 4,
                         **{m: value + 0.01 for m in METRIC_NAMES}})
    diffs = S.replacement_differences(rows)
    assert [d.metric for d in diffs] == list(S.HEADLINE_METRICS)
    assert all(d.mean == pytest.approx(-0.02) and d.verdict == "worse" for d in diffs)
    grid = RS.GridResults(tmp_path, "own", runs, rows, {},
                          {"preset": "quick", "preset_config": {"samples_per_epoch": 10}})
    budget = S.budget_differences({"quick": grid})
    assert [d.activation for d in budget["quick"]] == ["none"] * 3 + ["none vs relu"] * 3  # no star/relu runs
    table = R.training_budget_table({"quick": grid}, budget)
    assert "| quick | none vs relu | ROC-AUC | 0.8100 ± 0.0000 | 0.7900 ± 0.0000 | -0.0200" in table
    assert "**star/none − sum/relu** (2 seeds, pooled" in R.budget_verdicts_markdown(budget)
    with pytest.raises(ValueError, match="cannot pair sum/relu and star/none"):
        S.replacement_differences([r for r in rows if r["activation"] != "relu"])
