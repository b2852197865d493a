"""Learning curves (starunet.curves): snapshots, scoring, plateau rule, committed files."""
import json

import pytest
import torch

from starunet import curves
from starunet.report import curves_readme, early_stopping_table, format_patches
from starunet.results import CURVES_DIR, FULL_REFERENCE_DIR, CurveResults, load_curves, load_results
from starunet.presets import PRESETS, preset_config
from starunet.runs import snapshot_name
from starunet.training import train
from starunet.verdicts import curve_verdict_rows, read_verdicts

SMOKE_PAIR = (curves.CurveRun("sum", "none", 2024), curves.CurveRun("star", "none", 2024))


def test_curve_points_are_every_doubling_from_1k_to_64k():
    assert curves.curve_points(PRESETS["curves"]) == tuple(2**k for k in range(10, 17))
    assert curves.curve_points(PRESETS["smoke"]) == (8, 16)
    assert PRESETS["curves"].patience >= PRESETS["curves"].max_epochs  # no early stopping


def test_plateau_rule():
    def pts(*pr):
        return [{"patches": 1024 * 2**i, "pr_auc": v} for i, v in enumerate(pr)]
    assert curves.plateau(pts(0.5, 0.6, 0.7), 4096) == "still rising at 4k"
    assert curves.plateau(pts(0.5, 0.6, 0.603, 0.604), 8192) == "flat from 2k"
    assert curves.plateau(pts(0.5, 0.501, 0.6, 0.601), 8192) == "flat from 4k"  # a late jump resets it
    assert curves.plateau(pts(0.5, 0.6), 8192) == "unfinished"


def test_validation_swing_skips_the_early_epochs():
    history = [{"epoch": e, "val_pr_auc": v} for e, v in enumerate([0.1, 0.5, 0.6, 0.4, 0.5], start=1)]
    swing, drop = curves.validation_swing(history, skip_patches=1, samples_per_epoch=1)
    assert swing == pytest.approx(0.1) and drop == pytest.approx(0.2)  # steps +0.1, -0.2, +0.1


def test_snapshots_hold_the_best_weights_so_far(tmp_path, stare_records):
    config = preset_config("smoke", max_epochs=3, patience=3)
    with pytest.raises(ValueError, match="multiples of samples_per_epoch=8"):
        train(config, tmp_path / "bad", records=stare_records, snapshots=(12,))
    assert not (tmp_path / "bad").exists()  # refused before any work
    run = train(config, tmp_path / "run", records=stare_records, snapshots=(8, 24))
    best = torch.load(run.run_dir / "checkpoint_best.pt", weights_only=True)
    last = torch.load(run.run_dir / snapshot_name(24), weights_only=True)
    first = torch.load(run.run_dir / snapshot_name(8), weights_only=True)
    assert not (run.run_dir / snapshot_name(16)).exists()
    assert last["patches"] == 24 and last["epoch"] == best["epoch"]
    assert all(torch.equal(last["model"][k], best["model"][k]) for k in best["model"])
    assert first["epoch"] == 1


def test_evaluate_curves_writes_reusable_files(tmp_path, stare_records, monkeypatch):
    runs_dir, out = tmp_path / "runs", tmp_path / "curves"
    curves.train_curves(runs_dir, runs=SMOKE_PAIR, preset="smoke", progress=False)
    results = curves.evaluate_curves(runs_dir, out, runs=SMOKE_PAIR, preset="smoke", records=stare_records,
                                     log=lambda m: None)
    assert [(r["fusion"], r["patches"]) for r in results.points] == [("sum", 8), ("sum", 16), ("star", 8), ("star", 16)]
    assert len(results.per_image) == 4 * 10 and all(0 <= r["pr_auc"] <= 1 for r in results.points)
    assert results.keys() == ["sum-none-seed2024", "star-none-seed2024"]
    assert len(results.history("star-none-seed2024")) == 2
    written = load_curves(out)
    assert (out / "README.md").read_text() == curves_readme(written)
    assert read_verdicts(out) == curve_verdict_rows(written) and read_verdicts(out)[0]["n_seeds"] == "1"
    # a second call reuses every snapshot's evaluation
    monkeypatch.setattr(curves, "evaluate_run", lambda *a, **k: pytest.fail("evaluated again"))
    again = curves.evaluate_curves(runs_dir, out, runs=SMOKE_PAIR, preset="smoke", records=stare_records,
                                   log=lambda m: None)
    assert again.points == results.points
    diffs = curves.budget_differences(again)
    assert [(budget, str(d.config_b), str(d.config_a)) for budget, d in diffs][:1] == [(16, "star/none", "sum/none")]
    assert {d.verdict for _, d in diffs} == {"inconclusive"}  # one seed: preliminary, no verdict


def test_committed_curves_load_and_regenerate_their_readme():
    if not (CURVES_DIR / "points.csv").is_file():
        pytest.fail("results/curves/ is not committed")
    results = load_curves()
    assert results.points and results.provenance["preset"] == "curves"
    readme = curves_readme(results)
    assert (CURVES_DIR / "README.md").read_text(encoding="utf-8") == readme
    budgets = {r["patches"] for r in results.points}
    assert budgets <= set(curves.curve_points(PRESETS["curves"]))
    json.dumps(results.provenance)


def test_show_source_lists_the_code_it_names():
    from starunet.fusion import FUSIONS
    from starunet.listing import show_source, source_text

    text = show_source(FUSIONS["star_bn"]).data
    assert text.startswith("```python\n# starunet.fusion\n@register_fusion(\"star_bn\")")
    assert "return self.norm(decoder * skip)" in text and text.endswith("```")
    with pytest.raises(TypeError, match="cannot show the source of 3"):
        source_text(3)


def test_a_reused_run_without_snapshots_is_refused(tmp_path, stare_records):
    run = SMOKE_PAIR[0]
    config = curves.curve_config(run, "smoke")
    from starunet.runs import run_dir_for

    train(config, run_dir_for(config, tmp_path), records=stare_records)  # as `reproduce` would: no snapshots
    with pytest.raises(ValueError, match="trained without curve snapshots.*own --runs-dir"):
        curves.train_curves(tmp_path, runs=[run], preset="smoke", progress=False)


def test_early_stopping_table_sets_the_full_grid_beside_the_curves():
    """Committed files: the full grid's stopping point and kept weights in patches, and
    the curve values at the budgets around them."""
    results = load_curves()
    full = load_results(FULL_REFERENCE_DIR, kind="reference")
    table = early_stopping_table(results, full)
    epoch = full.provenance["preset_config"]["samples_per_epoch"]
    sum_none = [r for r in full.runs if (r["fusion"], r["activation"]) == ("sum", "none")]
    kept = sum(int(r["best_epoch"]) * epoch for r in sum_none) / len(sum_none)
    row = next(line for line in table.splitlines() if line.startswith("| sum/none |"))
    assert f"| {kept:,.0f} |" in row and f"{len(sum_none)} |" in row
    largest = max(p["patches"] for p in results.points if (p["fusion"], p["activation"]) == ("sum", "none"))
    assert row.rstrip(" |").endswith(f"at {format_patches(largest)}")


def test_an_unfinished_second_seed_does_not_pull_a_comparison_back_to_its_first_points(tmp_path):
    point = lambda fusion, seed, patches: {"fusion": fusion, "activation": "none", "seed": seed,  # noqa: E731
                                           "patches": patches}
    points = [point(f, 2024, p) for f in ("sum", "star") for p in (1024, 2048, 4096)]
    points += [point("sum", 2025, 1024), point("star", 2025, 1024), point("star", 2025, 2048)]
    results = CurveResults(tmp_path, points, [], [], {})
    assert results.largest_common_budget([("sum", "none"), ("star", "none")]) == 4096  # seed 2024 alone there
    points += [point(f, 2025, p) for f in ("sum", "star") for p in (2048, 4096)]
    assert results.largest_common_budget([("sum", "none"), ("star", "none")]) == 4096  # both seeds now
    with pytest.raises(ValueError, match="no scored points"):
        results.largest_common_budget([("sum", "none"), ("gated", "none")])
