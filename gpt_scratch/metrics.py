"""What a run measures and keeps: tokens/s, MFU and its matmul-peak denominator, metrics.jsonl, the loss plot.

MFU (model FLOPs utilisation) = training FLOPs per second / the peak FLOP/s of a
large matmul on the same device. On a shared CPU the peak is the delicate half:
measured while other jobs run it comes out low and MFU comes out high (41-79%
was seen on a loaded 2-core machine). `measure_matmul_peak` therefore times
several short rounds and keeps the *fastest* one, which is the machine's speed
when it had the cores to itself; MFU is then a lower bound of the real share.
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch

from .checkpoints import fsync_dir
from .errors import EnvironmentFault

METRICS_FILE = "metrics.jsonl"


def flops_per_token(model, block_size, vocab_used=None):
    """Training FLOPs per token, PaLM-style: 6 * params + attention (12 * layers * width * context).

    `vocab_used`: the ids the loss computes logits for (train_vocab data); the other rows
    of the tied embedding take no work.
    """
    n = sum(p.numel() for p in model.parameters())
    c = model.config
    if vocab_used is not None:
        n -= (c.vocab_size - vocab_used) * c.n_embd
    attn = 12 * getattr(c, "n_layer", 0) * getattr(c, "n_embd", 0) * block_size if hasattr(c, "n_head") else 0
    return 6 * n + attn


def measure_matmul_peak(device, dtype, seconds=0.5, n=None, rounds=5):
    """FLOP/s of an n x n x n matmul on `device`: the fastest of `rounds` rounds spread over ~`seconds`.

    The fastest round, not the mean: on a busy machine most rounds share the cores
    with other work, and the denominator of MFU must be what the hardware can do.
    Has its own generator, so it never draws from the global RNG (that would shift
    dropout masks after a resume).
    """
    device = torch.device(device)
    n = n or (4096 if device.type == "cuda" else 1024)
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=gen).to(dtype)
    b = torch.randn(n, n, device=device, generator=gen).to(dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    torch.mm(a, b, out=out)  # warm up
    sync()
    best = float("inf")
    per_round = seconds / max(1, rounds)
    for _ in range(max(1, rounds)):
        count, t0 = 0, time.perf_counter()
        while True:
            torch.mm(a, b, out=out)
            sync()
            count += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= per_round:
                break
        best = min(best, elapsed / count)
    return 2 * n**3 / best


def cpuinfo_field(name, cpuinfo="/proc/cpuinfo"):
    """The first `name: value` of /proc/cpuinfo ("" if absent), or None where it cannot be read (not Linux)."""
    try:
        with open(cpuinfo) as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.split(":", 1)[0].strip() == name), "")
    except OSError:
        return None


def _peak_key(device, dtype, n):
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = (cpuinfo_field("model name") or "cpu") + f" x{torch.get_num_threads()} threads"
    return f"{where} | {str(dtype).replace('torch.', '')} | n={n}"


def matmul_peak(device, dtype, cache_path=None, **probe):
    """(peak FLOP/s, measured now) for MFU: the best this machine has shown, not only this moment's probe.

    A probe on a machine that stays busy for its whole duration reads low and makes
    MFU read high. The best value seen for the same device, dtype and thread count is
    kept in `cache_path` (default <user cache>/matmul_peak.json) and used when it is
    higher, so MFU converges to an honest share on a shared machine.
    """
    device = torch.device(device)
    now = measure_matmul_peak(device, dtype, **probe)
    n = probe.get("n") or (4096 if device.type == "cuda" else 1024)
    if cache_path is None:
        from .data import user_cache_dir

        cache_path = os.path.join(user_cache_dir(), "matmul_peak.json")
    key = _peak_key(device, dtype, n)
    try:
        with open(cache_path, encoding="utf-8") as f:
            best = json.load(f)
        if not isinstance(best, dict):
            best = {}
    except (OSError, ValueError):
        best = {}
    seen = best.get(key)
    if isinstance(seen, (int, float)) and seen >= now:
        return float(seen), now
    best[key] = now
    try:
        os.makedirs(os.path.dirname(cache_path), exist_ok=True)
        _write_atomically(cache_path, json.dumps(best, indent=1) + "\n")
    except (OSError, EnvironmentFault):
        pass  # a read-only home: the probe alone is still a peak
    return now, now


class Throughput:
    """Tokens/s and MFU between two log points, pausing over evaluations and saves."""

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
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                if not isinstance(r, dict) or not isinstance(r.get("step"), int):
                    raise ValueError
            except ValueError:
                bad.append(i)
                continue
            out.append(r)
    if bad and warn:
        print(f"warning: {path}: skipped {len(bad)} unreadable line(s) ({', '.join(map(str, bad[:5]))}"
              f"{', ...' if len(bad) > 5 else ''}), e.g. cut off by a full disk or a kill", file=sys.stderr)
    return out


def _write_atomically(path, text):
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise EnvironmentFault(f"cannot write {path} ({e.strerror or e}); check free disk space and permissions") from e
    fsync_dir(os.path.dirname(os.path.abspath(path)))


class MetricsLog:
    """metrics.jsonl: one JSON object per logged step, appended; rewritten only by temp file + rename."""

    def __init__(self, out_dir, enabled=True):
        self.path = os.path.join(out_dir, METRICS_FILE)
        self.enabled = enabled

    def keep_until(self, step):
        """Drop records past `step` (written after the checkpoint a run resumes from) and unreadable lines."""
        if not self.enabled:
            return
        folder, name = os.path.split(self.path)
        for left in os.listdir(folder or "."):
            if left.startswith(name + ".tmp-"):  # a rewrite killed before its rename: the published file is intact
                os.unlink(os.path.join(folder, left))
        if not os.path.exists(self.path):
            return
        keep = [r for r in read_records(self.path) if r["step"] <= step]
        _write_atomically(self.path, "".join(json.dumps(r) + "\n" for r in keep))

    def append(self, record):
        if not self.enabled:
            return
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise EnvironmentFault(f"cannot append to {self.path} ({e.strerror or e}); check free disk space") from e

    def records(self):
        return read_records(self.path)


def plot_losses(metrics_path, png_path):
    """Train and validation loss against step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, val = [], []
    for r in read_records(metrics_path, warn=False):
        if "train_loss" in r:
            train.append((r["step"], r["train_loss"]))
        if "val_loss" in r:
            val.append((r["step"], r["val_loss"]))
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train")
    if val:
        ax.plot(*zip(*val), "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
