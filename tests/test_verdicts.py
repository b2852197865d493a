"""Tests of starunet.verdicts: the committed verdicts.csv files are what the code computes
from the committed metrics, and the command that rewrites them."""
from __future__ import annotations

import shutil

import pytest

from starunet import verdicts as V
from starunet.cli import main
from starunet.io import read_csv
from starunet.results import CURVES_DIR, FAST_DIR, FP32_DIR, FULL_REFERENCE_DIR, LONG_REFERENCE_DIR, REFERENCE_DIR
from starunet.stats import MARGINS, VERDICTS

COMMITTED = [REFERENCE_DIR, LONG_REFERENCE_DIR, FULL_REFERENCE_DIR, CURVES_DIR, FAST_DIR]


def _scored_both_ways(folder) -> int:
    """How many runs a folder's inference_methods.csv scores with both inference methods."""
    methods = folder / "inference_methods.csv"
    return len({r["run"] for r in read_csv(methods)}) if methods.is_file() else 0


@pytest.mark.parametrize("folder", [*COMMITTED, FP32_DIR], ids=lambda p: p.name)
def test_committed_verdicts_match_the_committed_metrics(folder):
    rows = V.read_verdicts(folder)
    assert rows == V.folder_verdict_rows(folder), f"rerun: python -m starunet verdicts {folder.name}"
    assert list(rows[0]) == V.COLUMNS
    # a third family where inference_methods.csv scores every run of metrics.csv both ways
    scored = _scored_both_ways(folder)  # curves has no inference_methods.csv (and no metrics.csv)
    tiles = {V.TILES_STATISTIC} if scored and scored == len(read_csv(folder / "metrics.csv")) else set()
    assert {r["statistic"] for r in rows} == {"pooled", "per_image"} | tiles
    for r in rows:
        assert r["verdict"] in VERDICTS and float(r["margin"]) == MARGINS[r["metric"]].value
        if int(r["n_seeds"]) < 2:  # one seed, preliminary: no interval, no verdict
            assert (r["low"], r["high"], r["verdict"]) == ("", "", "inconclusive")
        else:
            assert float(r["low"]) <= float(r["estimate"]) <= float(r["high"])


def test_every_committed_results_folder_holds_the_verdicts_its_metrics_give():
    """Not only the named grids: every folder under results/ with metrics (the recipe search's
    one-configuration grids hold a header only, nothing to compare)."""
    from starunet.config import PROJECT_ROOT

    folders = sorted(p.parent for p in (PROJECT_ROOT / "results").rglob("metrics.csv"))
    assert len(folders) >= len(COMMITTED) + 4
    for folder in folders:
        assert V.read_verdicts(folder) == V.folder_verdict_rows(folder), folder
        header = (folder / V.VERDICTS_FILE).read_text(encoding="utf-8").splitlines()[0]
        assert header.split(",") == V.COLUMNS, folder


def test_the_grid_readme_shows_the_verdicts_it_was_made_with():
    readme = (FULL_REFERENCE_DIR / "README.md").read_text(encoding="utf-8")
    for r in V.read_verdicts(FULL_REFERENCE_DIR):
        if r["statistic"] == "pooled":
            assert f"[{float(r['low']):+.4f}, {float(r['high']):+.4f}] {r['verdict']}" in readme


def test_the_command_rewrites_a_folders_verdicts(tmp_path, capsys):
    folder = tmp_path / "full"
    shutil.copytree(FULL_REFERENCE_DIR, folder)
    (folder / V.VERDICTS_FILE).unlink()
    assert main(["verdicts", str(folder)]) == 0
    assert V.read_verdicts(folder) == V.read_verdicts(FULL_REFERENCE_DIR)
    assert main(["verdicts", str(tmp_path / "nothing")]) == 2
    assert "no metrics.csv" in capsys.readouterr().err


def test_the_top_level_readme_shows_the_findings_the_verdicts_hold():
    """README's findings table and its counted summary are generated from the committed
    verdicts.csv files, never typed."""
    from starunet.config import PROJECT_ROOT

    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert V.findings_markdown() in readme, "rerun: python -m starunet verdicts results/* --readme"
    for phrase in ("slightly better", "slightly worse", "not worse", "within noise"):
        assert phrase not in readme.split("## Two commands")[0].replace('"' + phrase + '"', "")


def test_notebook_05s_calibration_reading_holds_for_the_committed_grids():
    """Notebook 05 says every network's validation threshold is below 0.5 and that F1 at it
    is higher than at 0.5 for every configuration (means over seeds): checked here."""
    from starunet.results import load_results

    for folder in COMMITTED[:3]:
        for s in load_results(folder).summary().values():
            assert s["mean"]["val_threshold"] < 0.5 and s["mean"]["f1_tuned"] > s["mean"]["f1"]


def test_notebook_06_reads_the_swing_from_every_run_not_one_seed():
    """Notebook 06's reading of the BatchNorm hypothesis is computed (su.curves.swing_lines) from
    every run of runs.csv: the largest swing is named whatever its seed, each configuration
    counts its runs, and the conclusion with so few runs neither supports nor refutes."""
    from starunet.curves import swing_lines
    from starunet.results import load_curves

    runs = load_curves(CURVES_DIR).runs
    lines = swing_lines(runs)
    loudest = max(runs, key=lambda r: float(r["val_pr_auc_swing"]))
    assert f"{loudest['fusion']}-{loudest['activation']}-seed{loudest['seed']}" in lines[0]
    assert "neither support nor refute" in lines[-1] and "about as much" not in " ".join(lines)
    fake = [{"fusion": f, "activation": a, "seed": s, "val_pr_auc_swing": v}
            for f, a, s, v in (("sum", "none", 1, 0.03), ("star", "none", 1, 0.02), ("star", "none", 2, 0.06),
                               ("sum", "relu", 1, 0.01))]
    lines = swing_lines(fake)
    assert lines[0].startswith("- Without ReLU, largest swing first (3 runs): star-none-seed2 0.060")
    assert "star/none 0.020–0.060 (2 runs)" in lines[2] and "sum/relu 0.010 (1 run)" in lines[2]
    assert "With 1–2 runs per configuration" in lines[-1]


def test_coverage_line_names_the_configuration_that_lacks_a_seed(tmp_path):
    from fakes import synthetic_grid

    a, b = synthetic_grid(tmp_path / "a", "quick", 0.0, 12), synthetic_grid(tmp_path / "b", "full", 0.0, 12)
    for grid in (a, b):
        grid.provenance["test_ids"] = ["im1", "im2"]
    assert "every configuration with every seed" in V.coverage_line({"quick": a})
    dropped = max(int(r["seed"]) for r in b.runs)
    b.runs = [r for r in b.runs if not (r["fusion"] == "star" and int(r["seed"]) == dropped)]
    line = V.coverage_line({"quick": a, "full": b})
    assert f"(star/none lacks {dropped})" in line and "the same 2 test images in every grid" in line


def test_the_committed_source_recipe_grids_say_how_to_retrain_them_as_they_were():
    for folder, precision in ((REFERENCE_DIR, "fp32"), (LONG_REFERENCE_DIR, "fp32"), (FULL_REFERENCE_DIR, "bf16")):
        command_row = next(l for l in (folder / "README.md").read_text(encoding="utf-8").splitlines()
                           if l.startswith("| command |"))
        # the recorded command names the precision, or the README adds what the runs trained in
        named = f"--precision {precision}` |" in command_row or f"--precision {precision} " in command_row
        assert named or f"trained in {precision}: add `--precision {precision}`" in command_row, folder


def test_the_seeds_needed_table_plans_from_each_comparisons_per_seed_differences(tmp_path):
    from fakes import synthetic_grid
    from starunet.stats import pooled_per_seed, seeds_to_decide

    grid = synthetic_grid(tmp_path, "fast", 0.02, 8, seeds=(1, 2, 3, 4))
    for r, noise in zip((r for r in grid.runs if r["fusion"] == "star"), (0.004, -0.003, 0.001, -0.002)):
        r["roc_auc"] += noise  # per-seed differences 0.024, 0.017, 0.021, 0.018
    rows = V.seeds_needed_rows(grid)
    assert {r["comparison"] for r in rows} == {"star − sum, without ReLU"} and len(rows) == 3
    roc = next(r for r in rows if r["metric"] == "roc_auc")
    per_seed = pooled_per_seed(grid.runs, "roc_auc", ("sum", "none"), ("star", "none"))
    assert roc["level"] == pytest.approx(1 - 0.05 / 3)  # the verdicts' Bonferroni level, not 95 %
    assert (roc["detect"], roc["equivalent"]) == seeds_to_decide(per_seed, 0.005, roc["level"])
    assert roc["n_seeds"] == 4 and roc["sd"] == pytest.approx(per_seed.std(ddof=1)) and roc["equivalent"] is None
    table = V.seeds_needed_markdown(rows)
    assert f"| star − sum, without ReLU | ROC-AUC | 4 | +{per_seed.mean():.4f} | " in table
    assert f"| {roc['verdict']} | {roc['detect']} | never (±0.005) |" in table  # 0.02 lies beyond ±0.005
    assert V.seeds_needed_rows(grid, comparisons=["star/none − sum/relu"]) == []
    assert V.seeds_cell(None, True) == "> 1,000" and V.seeds_cell(None, False) == "never"


def test_the_findings_plan_the_seeds_each_main_comparison_of_fast_would_need():
    from starunet.results import complete_seeds
    from starunet.stats import MAIN_COMPARISONS

    line = V.seeds_needed_line("fast", FAST_DIR)
    n = complete_seeds(FAST_DIR)
    pooled = [r for r in V.read_verdicts(FAST_DIR) if r["statistic"] == "pooled" and r["comparison"] in MAIN_COMPARISONS]
    for comparison in MAIN_COMPARISONS:
        assert f"{comparison} ({n} seeds now): " in line
    decided = [r for r in pooled if r["verdict"] != "inconclusive"]
    assert line.count("decided (") == len(decided)
    readme = (FAST_DIR.parents[1] / "README.md").read_text(encoding="utf-8")
    assert line in readme
    # README: "for star − sum without ReLU, several times more than `results/fast/` has"
    assert "for star − sum without ReLU, several times more than" in " ".join(readme.split())
    rows = V.seeds_needed_rows(V.load_results(FAST_DIR), MAIN_COMPARISONS[:1])
    assert all(r["detect"] is None or r["detect"] >= 2 * n for r in rows)


def test_tiled_inference_gives_a_sensitivity_family_only_when_every_run_has_it(tmp_path):
    from fakes import synthetic_grid
    from starunet.metrics import METRIC_NAMES

    grid = synthetic_grid(tmp_path, "fast", gap=0.02, epochs=8)
    grid.provenance["test_ids"] = ["im1", "im2", "im3", "im4"]
    tiles = [{"run": f"{r['fusion']}-{r['activation']}-seed{r['seed']}", "method": "tiles",
              **{m: r[m] - (0.01 if r["fusion"] == "star" else 0.0) for m in METRIC_NAMES}} for r in grid.runs]
    grid.inference_methods = tiles[:1]  # one run scored both ways: no sensitivity verdicts
    assert {d.statistic for d in V.grid_differences(grid)} == {"pooled", "per_image"}
    grid.inference_methods = tiles
    diffs = V.grid_differences(grid)
    sensitivity = {d.metric: d for d in diffs if d.statistic == V.TILES_STATISTIC}
    pooled = {d.metric: d for d in diffs if d.statistic == "pooled"}
    assert set(sensitivity) == set(pooled) and sensitivity["pr_auc"].n_seeds == 3
    assert sensitivity["pr_auc"].mean == pytest.approx(pooled["pr_auc"].mean - 0.01)
    rows = [V.verdict_row(d) for d in diffs]
    assert "pooled (tiles) intervals" in V.verdict_rule(rows)
    assert any("tiled inference" in line for line in V.verdict_bullets([r for r in rows if r["statistic"] == V.TILES_STATISTIC]))
    sections = "\n".join(V.verdict_sections(rows))
    assert V.TILES_LEAD in sections and V.PER_IMAGE_LEAD in sections
    assert sections.index(V.PER_IMAGE_LEAD) < sections.index(V.TILES_LEAD)


def test_the_fast_readme_shows_the_verdicts_under_tiled_inference():
    """Every run of results/fast was scored both ways: its README shows the sensitivity family."""
    readme = (FAST_DIR / "README.md").read_text(encoding="utf-8")
    assert V.TILES_LEAD in readme
    for r in V.read_verdicts(FAST_DIR):
        if r["statistic"] == V.TILES_STATISTIC and int(r["n_seeds"]) > 1:
            assert f"[{float(r['low']):+.4f}, {float(r['high']):+.4f}] {r['verdict']}" in readme


def test_a_decided_finding_says_what_tiled_inference_gives():
    row = {"estimate": "0.0143", "low": "0.0028", "high": "0.0259", "verdict": "better", "n_seeds": "4"}
    assert V._under_tiles(row) == " (with tiled inference: +0.0143 [+0.0028, +0.0259] better)"
    assert "sensitivity is unknown" in V._under_tiles(None)


def test_the_readme_states_how_many_fast_seeds_are_finished():
    from starunet.config import PROJECT_ROOT
    from starunet.results import complete_seeds

    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert f"{complete_seeds(FAST_DIR)} seeds of every configuration finished" in readme


def test_notebook_05s_summary_holds_for_every_committed_grid():
    """Notebook 05's summary says that, against a U-Net with ReLU, every grid that decides
    a pooled verdict finds the ReLU-free star network worse, and that most star − sum
    comparisons are inconclusive; and its section 5 quotes t quantiles at the `fast`
    grid's Bonferroni level: checked against the committed verdicts here."""
    import json

    from scipy.stats import t

    from starunet.config import PROJECT_ROOT
    from starunet.stats import adjusted_level

    rows = [r for folder in COMMITTED for r in V.read_verdicts(folder) if r["statistic"] == "pooled"]
    replacement = [r["verdict"] for r in rows if (r["config_a"], r["config_b"]) == ("sum/relu", "star/none")]
    assert "worse" in replacement and set(replacement) <= {"worse", "inconclusive"}
    star_sum = [r["verdict"] for r in rows if r["comparison"].startswith("star − sum")]
    assert star_sum.count("inconclusive") > len(star_sum) / 2
    fast = [r for r in V.read_verdicts(FAST_DIR) if r["statistic"] == "pooled"]
    assert float(fast[0]["adjusted_level"]) == pytest.approx(adjusted_level(0.95, 27), abs=1e-6)
    quantiles = {n: t.ppf(0.5 + adjusted_level(0.95, 27) / 2, n - 1) for n in (2, 3, 5)}
    assert (round(quantiles[5], 1), round(quantiles[3]), round(quantiles[2], -1)) == (7.3, 23, 340)
    nb = json.loads((PROJECT_ROOT / "notebooks" / "05_metric_comparison.ipynb").read_text(encoding="utf-8"))
    text = " ".join(" ".join("".join(c["source"]) for c in nb["cells"]).split())
    assert "about 7.3 with 4 (five seeds), 23 with 2 (three seeds) and 340 with 1 (two seeds)" in text


def test_notebook_01_names_the_committed_grids_scored_with_tiles_on_one_run_only():
    """Notebook 01, section 7 names the committed grids made before `reproduce` scored both
    inference methods on every run (one run each there); every other grid has both on every run."""
    import json

    from starunet.config import PROJECT_ROOT
    one = []
    for name, folder in V.COMMITTED_FOLDERS.items():
        if not (folder / "inference_methods.csv").is_file():
            continue
        scored = _scored_both_ways(folder)
        if scored < len(V.load_results(folder).runs):
            assert scored == 1, name
            one.append({"quick": "reference"}.get(name, name))
    nb = json.loads((PROJECT_ROOT / "notebooks" / "01_data_preparation.ipynb").read_text(encoding="utf-8"))
    text = " ".join(" ".join("".join(c["source"]) for c in nb["cells"]).split())
    if not one:
        assert "in the committed grid" not in text and "scores every run it evaluates with both" in text
    elif len(one) == 1:
        assert f"(in the committed grid made before it did, `{one[0]}`, one run)" in text
    else:
        named = ", ".join(f"`{n}`" for n in one[:-1]) + f" and `{one[-1]}`"
        assert f"(in the committed grids made before it did, {named}, one run each)" in text
