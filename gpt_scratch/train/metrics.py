"""What a run measures and keeps: loss in nats and bits per byte, tokens/s, MFU, metrics.jsonl, the loss plot.

Bits per byte (the field's tokenizer-independent unit, nanochat's val_bpb and
lm-evaluation-harness's bits_per_byte): the nats summed over the validation targets /
(ln 2 x the UTF-8 bytes those targets decode to), special tokens excluded from both.

MFU = training FLOPs per second / the peak FLOP/s of a large matmul in the precision
the run trains in, on the same device. On a shared CPU the peak is the delicate half
(measured while other jobs run it comes out low and MFU high), so the probe keeps the
fastest of several rounds, and the best peak this machine has shown for the same
CPU, threads and dtype is kept in the user cache and used when higher.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import torch

from ..errors import EnvironmentFault
from ..folder.durable import remove_staging, write_file
from .launch import cpuinfo_field

METRICS_FILE = "metrics.jsonl"


def flops_per_token(model, block_size, vocab_used=None):
    """Training FLOPs per token, PaLM-style: 6 x parameters (the used vocabulary's rows only) + attention."""
    c = model.config
    n = sum(p.numel() for p in model.parameters())
    if vocab_used is not None:
        n -= (c.vocab_size - vocab_used) * c.n_embd
    return 6 * n + 12 * getattr(c, "n_layer", 0) * c.n_embd * block_size


def measure_matmul_peak(device, dtype, seconds=0.5, n=None, rounds=5):
    """FLOP/s of an n x n x n matmul on `device`: the fastest of `rounds` rounds over ~`seconds`.

    Has its own generator, so it never draws from the global RNG (that would shift
    dropout masks after a resume).
    """
    device = torch.device(device)
    n = n or (4096 if device.type == "cuda" else 1024)
    gen = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(n, n, device=device, generator=gen).to(dtype) for _ in range(2))
    out = torch.empty(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.mm(a, b, out=out)  # warm up
    sync()
    best = float("inf")
    for _ in range(max(1, rounds)):
        count, t0 = 0, time.perf_counter()
        while count == 0 or time.perf_counter() - t0 < seconds / max(1, rounds):
            torch.mm(a, b, out=out)
            sync()
            count += 1
        best = min(best, (time.perf_counter() - t0) / count)
    return 2 * n**3 / best


def matmul_peak(device, dtype, cache_path=None, **probe):
    """(peak FLOP/s for MFU, measured now): the best this machine has shown for this device, threads and dtype."""
    device = torch.device(device)
    now = measure_matmul_peak(device, dtype, **probe)
    if cache_path is None:
        from .data import user_cache_dir

        cache_path = os.path.join(user_cache_dir(), "matmul_peak.json")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"{cpuinfo_field('model name') or 'cpu'} x{torch.get_num_threads()} threads")
    key = f"{where} | {str(dtype).replace('torch.', '')} | n={probe.get('n') or (4096 if device.type == 'cuda' else 1024)}"
    try:
        with open(cache_path, encoding="utf-8") as f:
            best = json.load(f)
        best = best if isinstance(best, dict) else {}
    except (OSError, ValueError):
        best = {}
    if isinstance(best.get(key), (int, float)) and best[key] >= now:
        return float(best[key]), now
    try:
        os.makedirs(os.path.dirname(cache_path), exist_ok=True)
        write_file(cache_path, json.dumps(dict(best, **{key: now}), indent=1) + "\n")
    except (OSError, EnvironmentFault):
        pass  # a read-only home: the probe alone is still a peak
    return now, now


class Throughput:
    """Tokens/s and MFU between two log points, restarted over evaluations and saves."""

    def __init__(self, flops_per_token, peak_flops, world_size):
        self.fpt, self.peak, self.world = flops_per_token, peak_flops, world_size
        self.restart(0)

    def restart(self, tokens):
        self.t0, self.tokens0 = time.perf_counter(), tokens

    def measure(self, tokens):
        tps = (tokens - self.tokens0) / max(time.perf_counter() - self.t0, 1e-9)
        self.restart(tokens)
        return tps, tps * self.fpt / self.world / self.peak


def read_records(path, warn=True):
    """The records of a metrics.jsonl; a cut-off or garbled line (a full disk, a kill) is skipped, and said so."""
    if not os.path.exists(path):
        return []
    out, bad = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f, 1):
            try:
                r = json.loads(line) if line.strip() else None
                if r is not None and not (isinstance(r, dict) and isinstance(r.get("step"), int)):
                    raise ValueError
            except ValueError:
                bad.append(i)
                continue
            if r is not None:
                out.append(r)
    if bad and warn:
        print(f"warning: {path}: skipped {len(bad)} unreadable line(s) ({', '.join(map(str, bad[:5]))}"
              f"{', ...' if len(bad) > 5 else ''}), e.g. cut off by a full disk or a kill", file=sys.stderr)
    return out


class MetricsLog:
    """metrics.jsonl: one JSON object per logged step, appended; rewritten only durably (staged, then renamed)."""

    def __init__(self, out_dir, enabled=True):
        self.path, self.enabled = os.path.join(out_dir, METRICS_FILE), enabled

    def keep_until(self, step):
        """Drop records past `step` (written after the checkpoint a run resumes from) and unreadable lines."""
        if not self.enabled:
            return
        remove_staging(os.path.dirname(self.path) or ".")  # a rewrite killed before its rename
        if os.path.exists(self.path):
            write_file(self.path, "".join(json.dumps(r) + "\n" for r in read_records(self.path) if r["step"] <= step))

    def append(self, record):
        if self.enabled:
            try:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
            except OSError as e:
                raise EnvironmentFault(f"cannot append to {self.path} ({e.strerror or e}); check free disk space") from e


def perplexity(nats):
    return math.exp(min(nats, 50))


def plot_losses(metrics_path, png_path):
    """Train and validation loss against step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_records(metrics_path, warn=False)
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, style, label in (("train_loss", "-", "train"), ("val_loss", "o-", "validation")):
        points = [(r["step"], r[key]) for r in records if key in r]
        if points:
            ax.plot(*zip(*points), style, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
