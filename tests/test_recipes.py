"""The recipe table (starunet.recipes): computed from the committed folders."""
from __future__ import annotations

import pytest

from fakes import synthetic_grid
from starunet import recipes


def test_a_grid_row_is_the_mean_over_its_seeds_at_the_patches_trained(tmp_path):
    grid = synthetic_grid(tmp_path, "long", gap=0.02, epochs=10)
    grid.provenance["preset_config"] = {"samples_per_epoch": 320, "lr": 5e-4}
    for r in grid.runs:
        r.update(train_seconds=60.0, device="cpu: test")
    rows = recipes.grid_rows(grid, [("sum", "none"), ("star", "none"), ("sum", "relu")])
    assert [(r["fusion"], r["seeds"], r["patches"], r["schedule"]) for r in rows] == \
        [("sum", 3, 3200, "constant"), ("star", 3, 3200, "constant")]
    sums = [r["pr_auc"] for r in grid.runs if r["fusion"] == "sum"]
    assert rows[0]["pr_auc"] == pytest.approx(sum(sums) / 3) and rows[1]["pr_auc"] == pytest.approx(rows[0]["pr_auc"] + 0.02)


def test_the_committed_table_holds_every_folder_and_the_fast_recipe():
    rows = recipes.committed_recipe_table()
    fast = [r for r in rows if r["source"] == "fast"]
    assert fast and {(r["schedule"], r["peak_lr"], r["patches"]) for r in fast} == {("onecycle", 0.002, 16384)}
    curve_budgets = sorted({r["patches"] for r in rows if r["source"] == "curves"})
    assert curve_budgets[0] == 4096 and curve_budgets[-1] == 65536
    text = recipes.recipe_markdown(rows)
    assert text.count("\n") == len(rows) + 1 and "onecycle, 0.002" in text


def test_the_recipe_lines_set_fast_beside_the_same_budget_and_the_full_protocol():
    rows = recipes.committed_recipe_table()
    lines = recipes.recipe_lines(rows)
    sum_relu = next(line for line in lines if line.startswith("- **sum/relu**"))
    fast = next(r for r in rows if (r["source"], r["fusion"], r["activation"]) == ("fast", "sum", "relu"))
    assert f"PR-AUC {fast['pr_auc']:.4f}" in sum_relu and "`curves` (constant 0.0005, 16,384 patches" in sum_relu
    assert "`full` (constant 0.0005" in sum_relu
