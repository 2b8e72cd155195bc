"""train/metrics.py: the MFU denominator is the best matmul peak this machine has shown, in the training dtype."""

import torch

from gpt_scratch.train import metrics


def test_peak_is_the_best_seen_so_a_busy_probe_does_not_inflate_mfu(tmp_path, monkeypatch):
    cache = str(tmp_path / "peak.json")
    probes = iter([100e9, 40e9, 250e9])  # an idle machine, a busy one, a faster idle moment
    monkeypatch.setattr(metrics, "measure_matmul_peak", lambda *a, **k: next(probes))
    assert metrics.matmul_peak("cpu", torch.float32, cache_path=cache) == (100e9, 100e9)
    assert metrics.matmul_peak("cpu", torch.float32, cache_path=cache) == (100e9, 40e9)  # busy: the best is kept
    assert metrics.matmul_peak("cpu", torch.float32, cache_path=cache) == (250e9, 250e9)
    # another dtype is its own entry, and a damaged cache file is only a cache
    monkeypatch.setattr(metrics, "measure_matmul_peak", lambda *a, **k: 5e9)
    assert metrics.matmul_peak("cpu", torch.bfloat16, cache_path=cache) == (5e9, 5e9)
    (tmp_path / "peak.json").write_text("{cut off")
    assert metrics.matmul_peak("cpu", torch.float32, cache_path=cache) == (5e9, 5e9)


def test_probe_measures_a_plausible_peak():
    flops = metrics.measure_matmul_peak("cpu", torch.float32, seconds=0.05, n=128, rounds=2)
    assert 1e8 < flops < 1e14
