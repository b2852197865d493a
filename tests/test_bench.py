"""The benchmark's building blocks (not its timings: those are figures, not tests)."""
from __future__ import annotations

import torch

from starunet.lab import bench
from starunet.model import UNet


def _conv_flops(c_in: int, c_out: int, side: int, k: int = 3) -> int:
    return 2 * c_in * c_out * k * k * side * side


def test_flop_count_matches_the_architecture_by_hand():
    side = 32
    enc = [(3, 32), (32, 64), (64, 128), (128, 256)]
    dec = [(256, 256), (256, 128), (128, 64), (64, 32)]
    expected = 0
    for level, (c_in, c_out) in enumerate(enc):  # two convs per block at side / 2**level
        s = side >> level
        expected += _conv_flops(c_in, c_out, s) + _conv_flops(c_out, c_out, s)
    for level, (c_in, c_out) in enumerate(dec):  # decoder block i runs at side / 2**(4 - i)
        s = side >> (4 - level)
        expected += _conv_flops(c_in, c_out, s) + _conv_flops(c_out, c_out, s)
    expected += _conv_flops(32, 1, side, k=1)  # the 1x1 head
    counted = bench.count_flops(UNet(), torch.randn(1, 3, side, side), train_step=False)
    assert counted == expected
    # a training step also counts the backward pass: about twice the forward again
    step = bench.count_flops(UNet(), torch.randn(1, 3, side, side), train_step=True)
    assert 2.5 * expected < step < 3.5 * expected


def test_interleaved_timing_measures_every_function_round_robin():
    calls: list[str] = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    timed = bench.interleaved_seconds(fns, torch.device("cpu"), rounds=2, min_seconds=0)
    assert set(timed) == {"a", "b"} and all(isinstance(t, float) for t in timed.values())
    assert calls.count("a") == calls.count("b") >= 2  # every round times both
    # each round times a, then b: they alternate instead of all a's then all b's
    assert calls.index("b") < len(calls) - calls[::-1].index("a") - 1


def test_a_training_step_updates_the_weights_of_the_real_model():
    step = bench.train_step_fn("star", "none", batch_size=2, device=torch.device("cpu"), patch=32)
    before = [p.detach().clone() for p in step.model.parameters()]
    step()
    # conv weights (not the biases before BatchNorm, whose gradient is ~0 by construction)
    changed = [not torch.equal(b, p) for b, p in zip(before, step.model.parameters()) if p.ndim == 4]
    assert sum(p.numel() for p in step.model.parameters()) == 2_937_345
    assert len(changed) == 17 and all(changed), "every conv of the U-Net gets an Adam update"


def test_markdown_report_names_the_environment_and_every_row():
    rows = [bench.Row("FLOPs", "-", 1.42, "GFLOP"), bench.Row("train", "eager fp32", 20.0, "patches/s", "x1.00")]
    text = bench.to_markdown(rows, {"device": "cpu: test", "torch": "x"}, "python -m starunet bench")
    assert "- device: cpu: test" in text and "python -m starunet bench" in text
    assert "| train | eager fp32 | 20 | patches/s | x1.00 |" in text


def test_inference_variants_end_with_the_package_default_path():
    cpu = bench.inference_variants_for(torch.device("cpu"))
    assert cpu[0] == bench.BASELINE and cpu[-1] == bench.INFERENCE_DEFAULT
    assert [v.name for v in bench.inference_variants_for(torch.device("cuda"))] == \
        [bench.BASELINE.name, bench.INFERENCE_DEFAULT.name]  # no channels_last, no bf16: fp32 on GPUs
    for variant in cpu:  # each one runs a small image through the real model
        bench.inference_fn(torch.device("cpu"), variant, height=37, width=40)()


def test_a_smoke_report_says_so_in_both_files(tmp_path):
    rows = [bench.Row("FLOPs", "-", 1.42, "GFLOP")]
    env = {"device": "cpu: test", "mode": bench.SMOKE_NOTE}
    md, csv = bench.write_report(tmp_path, "cpu", rows, env, bench.to_markdown(rows, env, "bench"))
    assert md.read_text().startswith("# SMOKE RUN, not a benchmark")
    assert "smoke mode" in csv.read_text().splitlines()[1]


def test_bench_writes_outside_the_committed_tables_by_default():
    from starunet.config import default_runs_dir

    assert bench.default_out().parent == default_runs_dir() and bench.default_out() != bench.BENCH_DIR


def test_configs_default_to_the_grid_and_bad_names_list_the_valid_ones():
    import pytest

    assert bench.parse_configs(None) == bench.GRID
    assert bench.parse_configs(["star/none", "sum/none", "star/none"]) == [("star", "none"), ("sum", "none")]
    with pytest.raises(ValueError, match=r"--configs star/gelu: unknown .* valid: sum/none, star/none, sum/relu, star/relu"):
        bench.parse_configs(["star/gelu"])


def test_cli_refuses_an_unknown_config_before_measuring(capsys, tmp_path):
    assert bench.cli(["--configs", "prod/none", "--out", str(tmp_path)]) == 2
    assert "valid: sum/none" in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_cuda_variants_separate_bf16_from_channels_last_and_compile():
    names = [v.name for v in bench.variants_for(torch.device("cuda"))]
    assert names[0] == bench.BASELINE.name and "bf16" in names
    assert names.index("bf16") < names.index("channels_last bf16") < names.index("channels_last bf16 compile")


def test_bf16_rows_only_where_bf16_is_native(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(bench, "native_bf16_cpu", lambda: False)
    assert not any(v.bf16 for v in bench.variants_for(cpu))
    monkeypatch.setattr(bench, "native_bf16_cpu", lambda: True)
    assert [v.name for v in bench.variants_for(cpu)][-1] == "channels_last bf16"


def test_every_function_is_warmed_up_before_the_first_round():
    calls: list[str] = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    samples = bench.interleaved_samples(fns, torch.device("cpu"), rounds=2, min_seconds=0, warmup_seconds=0)
    assert calls[:4] == ["a", "a", "b", "b"]  # warm-up: each one twice, before any timed call
    assert {k: len(v) for k, v in samples.items()} == {"a": 2, "b": 2}


def test_peak_candidates_count_their_flops():
    cpu = torch.device("cpu")
    run, flops = bench.conv_fn(cpu, channels=4, side=5, batch=2)
    run()
    assert flops == 2 * 2 * 4 * 4 * 9 * 5 * 5
    assert set(bench.peak_candidates(cpu, torch.float32)) == {"matmul 2048", "matmul 4096", "conv3x3 256ch"}


def test_fast_run_rows_train_a_real_run_per_precision(monkeypatch):
    monkeypatch.setattr(bench, "native_bf16_cpu", lambda: True)
    rows = bench.fast_run_rows(torch.device("cpu"), log=lambda message: None)  # smoke preset in smoke mode
    assert [r.variant for r in rows] == ["fp32", "bf16"] and rows[0].ratio == "x1.00 vs fp32"
    assert all(r.unit == "min" and r.value > 0 for r in rows)
