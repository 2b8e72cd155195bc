"""Shared helpers for the bench/ scripts: environment, timing, pairing, results.

Every benchmark compares two things *in the same process, in interleaved
rounds* (A, B, A, B, ...), because the machine is shared and noisy: absolute
numbers drift by tens of percent between runs, ratios measured side by side do
not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

# Without these, glibc returns the big per-step buffers (e.g. the 412 MB fp32
# logits of a small-model step) to the OS after every free and maps them afresh
# (page faults + zeroing) on the next step. The cost lands on whichever model
# happens to allocate second and skews A/B timing in one process badly.
MALLOC_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"
_REEXEC_FLAG = "GPT_SCRATCH_BENCH_REEXEC"


def ensure_malloc_env() -> str:
    """Re-exec this script with MALLOC_TUNABLES in GLIBC_TUNABLES unless it is already set.

    Returns a line saying what happened (print it). Must be called before torch
    allocates anything large (glibc reads the tunables at process start only).
    """
    current = os.environ.get("GLIBC_TUNABLES", "")
    if MALLOC_TUNABLES in current:
        if os.environ.get(_REEXEC_FLAG):
            return f"re-executed with GLIBC_TUNABLES={current} (big buffers stay in the heap between steps)"
        return f"GLIBC_TUNABLES={current} already set"
    env = dict(os.environ)
    env["GLIBC_TUNABLES"] = f"{current}:{MALLOC_TUNABLES}" if current else MALLOC_TUNABLES
    env[_REEXEC_FLAG] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(sys.executable, [sys.executable] + sys.argv, env)
    raise AssertionError("unreachable")


def env_info() -> dict:
    import torch
    import transformers

    info = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "machine": platform.machine(),
    }
    try:
        model = [l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")]
        info["cpu"] = model[0].split(":", 1)[1].strip() if model else platform.processor()
    except OSError:
        info["cpu"] = platform.processor()
    try:
        info["loadavg_at_start"] = os.getloadavg()[0]
    except OSError:
        pass
    try:
        info["git_commit"] = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def base_parser(name: str, doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke mode: tiny sizes, one or two rounds, seconds")
    p.add_argument("--out", default=str(RESULTS_DIR / f"{name}.json"), help="where to write the JSON results")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    return p


def set_threads(n):
    import torch

    if n:
        torch.set_num_threads(n)


def now() -> float:
    return time.perf_counter()


def summarize(values) -> dict:
    """median with min and max of a list of numbers (ratios or rates)."""
    values = [float(v) for v in values]
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "values": values,
    }


def fmt_ratio(s: dict) -> str:
    return f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})"


def paired_rounds(runners: dict, rounds: int, log=print, budget_s: float | None = None, min_rounds: int = 3) -> dict:
    """Call each runner once per round, alternating the order every round (A B, B A, A B, ...).

    `runners` maps a name to a zero-argument callable returning a rate (higher
    is better). Returns {name: [rate per round]}. Alternating which one goes
    first cancels a systematic first/second position effect. With `budget_s`,
    stops after `min_rounds` once the budget is spent (a loaded machine then
    still finishes in bounded time, with fewer rounds).
    """
    names = list(runners)
    out = {n: [] for n in names}
    t0 = now()
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            out[n].append(runners[n]())
        if log:
            log("  round %d: %s" % (r + 1, "  ".join(f"{n}={out[n][-1]:,.1f}" for n in names)))
        if budget_s is not None and r + 1 >= min_rounds and now() - t0 > budget_s:
            if log and r + 1 < rounds:
                log(f"  (time budget {budget_s:.0f} s spent: stopping after {r + 1} of {rounds} rounds)")
            break
    return out


def ratio_summary(rates: dict, num: str, den: str) -> dict:
    return summarize([a / b for a, b in zip(rates[num], rates[den])])


def measure_matmul_peak(dtype_name: str, n: int = 1024, seconds: float = 1.0) -> float:
    """Best GFLOP/s of an n x n x n matmul in `dtype_name` ("fp32" or "bf16") over ~`seconds`.

    The same probe training uses for its MFU (gpt_scratch.train.metrics): the fastest of
    several rounds, so a busy moment on a shared machine does not lower the peak.
    """
    import torch

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from gpt_scratch.train.metrics import measure_matmul_peak as probe

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    return probe(torch.device("cpu"), dtype, seconds=seconds, n=n, rounds=max(3, round(seconds / 0.1))) / 1e9


def bf16_is_fast(peaks: dict) -> bool:
    """True when bf16 matmuls have a real kernel here (AVX512-BF16/AMX); on AVX2-only CPUs
    torch falls back to a reference loop ~100x slower than fp32 and bf16 runs are pointless."""
    return peaks["bf16"] >= 0.5 * peaks["fp32"]


def write_results(path, results: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path}")


def default_data_path() -> Path:
    return REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
