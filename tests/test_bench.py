"""The bench/ scripts run (--quick) and write the JSON they promise. No timing assertions."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, SHAKESPEARE

BENCH = os.path.join(REPO, "bench")


def run_quick(script, tmp_path, *extra):
    out = tmp_path / f"{script}.json"
    env = dict(os.environ)
    env["HF_HOME"] = str(tmp_path / "hf_home")
    env["GPT_SCRATCH_CACHE"] = str(tmp_path / "cache")
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH, f"{script}.py"), "--quick", "--threads", "1", "--out", str(out), *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "GLIBC_TUNABLES" in proc.stdout  # re-executed with (or already had) the malloc settings
    ratios = [line for line in proc.stdout.splitlines() if line.startswith("RATIOS: ")]
    assert ratios, proc.stdout[-2000:]
    return json.loads(out.read_text())


def check_summary(s):
    assert {"median", "min", "max", "n", "values"} <= set(s)
    assert s["min"] <= s["median"] <= s["max"]


def test_train_throughput_quick(tmp_path):
    r = run_quick("train_throughput", tmp_path)
    assert {"env", "matmul_peak_gflops", "dtypes", "skipped", "configs"} <= set(r)
    assert set(r["matmul_peak_gflops"]) == {"fp32", "bf16"}
    assert "fp32" in r["dtypes"]
    res = r["configs"]["quick"]
    for dtype in r["dtypes"]:
        d = res[dtype]
        assert set(d["tokens_per_s"]) == {"gpt_scratch", "transformers"}
        check_summary(d["ratio_ours_over_hf"])
        check_summary(d["mfu"]["gpt_scratch"])
        # same weights, same batch: same first loss
        assert abs(d["first_loss"]["gpt_scratch"] - d["first_loss"]["transformers"]) < 1e-2
    assert set(r["dtypes"]) | set(r["skipped"]) == {"fp32", "bf16"}


def test_generate_throughput_quick(tmp_path):
    r = run_quick("generate_throughput", tmp_path)
    assert r["all_identical_tokens"] is True
    res = r["configs"]["quick"]
    batches = [k for k in res if k.startswith("batch")]
    assert len(batches) == 2
    for k in batches:
        assert res[k]["identical_tokens"] is True
        assert res[k]["distinct_new_tokens"] > 3  # the text varies, so the comparison means something
        check_summary(res[k]["ratio_ours_over_hf"])
        assert set(res[k]["ms_per_step"]) == {"gpt_scratch", "transformers"}


def test_data_pipeline_quick(tmp_path, shakespeare_path):
    r = run_quick("data_pipeline", tmp_path, "--data", shakespeare_path)
    assert {"encode_s", "cold_build_s", "cached_build_s", "cold_over_encode", "cached_over_encode", "tokens"} <= set(r)
    assert r["tokens"] > 1000 and r["blocks"]["train"] > 0
    check_summary(r["cold_build_s"])


def test_quality_quick(tmp_path, shakespeare_path):
    r = run_quick("quality", tmp_path, "--data", shakespeare_path)
    assert r["seeds"] == [0, 1]
    for seed in ("0", "1"):
        assert {"gpt_scratch", "transformers"} <= set(r["per_seed"][seed])
    # same init, same batches: the two implementations agree closely
    assert r["max_abs_gap"] < 1e-2
    assert r["summary"]["gpt_scratch"]["val_loss_mean"] < r["uniform_loss"] + 0.5
    assert "bigram" in r["summary"] or r["bigram_skipped"]


def test_time_to_quality_quick(tmp_path, shakespeare_path):
    r = run_quick("time_to_quality", tmp_path, "--data", shakespeare_path)
    assert set(r["rows"]) == {"main-job-today", "main-job"}
    for row in r["rows"].values():
        run = row["runs"][0]
        assert run["steps"] >= 4 and run["tokens"] > 0
        assert run["val_loss"] < 10.9  # below uniform over 50,257 ids (10.825) plus noise: it trained
        assert 0 < run["val_bpb"] < run["val_loss"]  # nats per token over ln 2 x ~3 bytes per token
        assert run["wall_s"] > 0  # a process a run: seconds of start-up, so no bound a loaded machine keeps
