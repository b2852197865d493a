"""The source's published tables, entered as cited data (starunet.source)."""
import pytest

from starunet import source
from starunet.metrics import METRIC_NAMES


@pytest.mark.parametrize("activation", ["none", "relu"])
def test_printed_improvement_rows_are_star_minus_sum_in_points(activation):
    rows = source.SOURCE_RESULTS[activation]
    points = source.improvement_points(rows["sum"], rows["star"])
    printed = source.SOURCE_IMPROVEMENT_ROWS[activation]
    assert list(points) == list(METRIC_NAMES)
    for metric in METRIC_NAMES:
        # matches the printed 2 decimals (float rounding of e.g. 0.9312 - 0.9039 aside)
        assert round(points[metric], 2) == pytest.approx(source.parse_printed_improvement(printed[metric])), metric


def test_improvement_is_not_a_relative_change():
    rows = source.SOURCE_RESULTS["none"]
    relative = 100 * (rows["star"]["roc_auc"] - rows["sum"]["roc_auc"]) / rows["sum"]["roc_auc"]
    assert round(relative, 2) != source.parse_printed_improvement(source.SOURCE_IMPROVEMENT_ROWS["none"]["roc_auc"])


def test_format_points_arrows_and_rounding():
    assert source.format_points(2.73) == "▲ 2.73"
    assert source.format_points(-0.37) == "▼ 0.37"
    assert source.format_points(0.001) == "= 0.00"
    assert source.format_points(float("nan")) == "n/a"
    with pytest.raises(ValueError, match="2.73"):
        source.parse_printed_improvement("2.73")


def test_every_source_row_implies_the_same_prevalence():
    prevalences = source.source_prevalences()
    assert len(prevalences) == 4
    # Acc = p·Se + (1 − p)·Sp; the printed 4 decimals leave about ±0.002 of slack
    assert all(0.110 < p < 0.120 for p in prevalences.values()), prevalences
    row = source.SOURCE_RESULTS["none"]["sum"]
    p = source.implied_prevalence(row)
    assert row["acc"] == pytest.approx(p * row["se"] + (1 - p) * row["sp"])


def test_idiap_statistic_is_the_mean_over_test_images_per_run():
    """bob.ip.binseg's F1: per run the mean over test images of F1 at the chosen threshold;
    our rows give it per configuration over seeds, beside the cited rows."""
    rows = [{"fusion": "sum", "activation": "none", "seed": seed, "image_id": f"im{i}", "f1_tuned": value}
            for seed, values in ((1, (0.6, 0.8)), (2, (0.7, 0.9))) for i, value in enumerate(values)]
    assert source.mean_image_f1(rows) == {("sum", "none"): pytest.approx([0.7, 0.8])}
    table = source.baseline_rows(rows)
    assert table[0] == ["ours: sum/none, 2 seed(s)", "0.750 ± 0.071"]
    assert ["bob.ip.binseg (cited): U-Net", "0.828"] in table and len(table) == 1 + len(source.IDIAP_STARE_F1)
