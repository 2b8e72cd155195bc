"""The machine and the launch: what runs where, and refusals for launches that would not do what was asked.

* threads: a CPU process gets the machine's cores / its local processes (accelerate
  launch exports OMP_NUM_THREADS=1, which is not the user's choice);
* precision: `auto` is bf16 on a GPU that has it or a CPU with bf16 matrix instructions
  (avx512_bf16, amx_bf16: decided by the CPU's flags, which a busy machine cannot
  skew), else fp32; bf16 asked for on a CPU without them is refused (~50x slower);
* launches that started fewer processes than asked, and an FSDP request that
  Accelerate turns into plain DDP (it shards only on accelerators), are refused with
  the commands that work; the start-up line names the strategy that really runs.
"""

import os
import shlex
import sys

import torch

from ..errors import ConfigError

WORKING_LAUNCHES = (
    "accelerate launch --config_file configs/accelerate/cpu-2proc.yaml scripts/train.py {args}",
    "torchrun --standalone --nproc_per_node 2 scripts/train.py {args}",
)
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpuinfo_field(name, cpuinfo="/proc/cpuinfo"):
    """The first `name: value` of /proc/cpuinfo ("" if absent), or None where it cannot be read (not Linux)."""
    try:
        with open(cpuinfo) as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.split(":", 1)[0].strip() == name), "")
    except OSError:
        return None


def cpu_bf16_flags(cpuinfo="/proc/cpuinfo"):
    """The bf16 matrix instructions this CPU lists, or None where the list cannot be read."""
    flags = cpuinfo_field("flags", cpuinfo)
    return None if flags is None else [f for f in BF16_CPU_FLAGS if f in flags.split()]


def cpu_bf16_is_fast():
    """(fast?, why): by the CPU's flags where Linux lists them, else by timing bf16 against fp32 matmuls."""
    from .metrics import measure_matmul_peak

    flags = cpu_bf16_flags()
    if flags is not None:
        return bool(flags), ("this CPU has " + " and ".join(flags) if flags else
                             "this CPU has no bf16 matrix instructions (no avx512_bf16 or amx_bf16 in its flags)")
    peak = {dt: measure_matmul_peak("cpu", dt, seconds=0.05, n=256, rounds=2) for dt in (torch.float32, torch.bfloat16)}
    return peak[torch.bfloat16] >= 0.5 * peak[torch.float32], (
        f"bf16 matmuls ran at {peak[torch.bfloat16] / 1e9:.1f} against fp32's {peak[torch.float32] / 1e9:.0f} GFLOP/s")


def resolve_precision(requested, use_cpu):
    """The mixed precision that will run: auto resolved; fp16 on CPU and slow bf16 on CPU refused."""
    if requested == "auto":
        if not use_cpu:
            return "bf16" if torch.cuda.is_bf16_supported() else "no"
        return "bf16" if cpu_bf16_is_fast()[0] else "no"
    if use_cpu and requested == "fp16":
        raise ConfigError("mixed_precision fp16 needs a GPU; use bf16 on CPU (where the CPU has bf16 instructions)")
    if use_cpu and requested == "bf16":
        fast, why = cpu_bf16_is_fast()
        if not fast:
            raise ConfigError(f"mixed_precision bf16 would run many times slower than fp32 here: {why}; use "
                              "--mixed_precision no (or auto, which picks bf16 only where it is fast)")
    return requested


def cpu_threads(cfg, num_processes, env=None):
    """Threads for this process: the setting, else a user's OMP_NUM_THREADS, else cores shared by the local processes."""
    env = os.environ if env is None else env
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if cfg.cpu_threads > 4 * cores:
        raise ConfigError(f"cpu_threads {cfg.cpu_threads} is far more than the {cores} cores this process may use; "
                          f"choose at most {cores} (or 0: cores / processes)")
    if cfg.cpu_threads:
        return cfg.cpu_threads
    if env.get("OMP_NUM_THREADS") and "ACCELERATE_DYNAMO_BACKEND" not in env:  # not accelerate launch's default 1
        return torch.get_num_threads()
    return max(1, cores // max(1, int(env.get("LOCAL_WORLD_SIZE", num_processes))))


def check_launch(world, env=None, argv=None):
    """Refuse a launch that asked for more processes than it started (each would train alone, or one would).

    `accelerate launch --cpu --num_processes 2`, and configs with `distributed_type:
    MULTI_CPU` and no mpirun hostfile, go to Accelerate's single-process launcher: it
    exports MASTER_ADDR for the processes asked for, but starts one, with no RANK.
    """
    env = os.environ if env is None else env
    args = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    fixes = "\n".join("  " + c.format(args=args) for c in WORKING_LAUNCHES)
    if int(env.get("WORLD_SIZE", "1")) != world:
        raise ConfigError(f"{env['WORLD_SIZE']} processes were launched but Accelerate sees {world}, so each would "
                          f"train alone; on CPU start them with one of:\n{fixes}")
    mpi = any(k in env for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"))
    if "ACCELERATE_DYNAMO_BACKEND" in env and world == 1 and "MASTER_ADDR" in env and "RANK" not in env and not mpi:
        raise ConfigError("accelerate launch was asked for several processes but started ONE (accelerate runs `--cpu "
                          "--num_processes N` and `distributed_type: MULTI_CPU` configs without an mpirun hostfile in a "
                          f"single process). For several CPU processes use one of:\n{fixes}\n(for one process: python "
                          "scripts/train.py ...)")


def check_strategy(accelerator, env=None):
    """The strategy that runs, in words; an FSDP request that Accelerate did not honour is refused."""
    from accelerate.utils import DistributedType

    env = os.environ if env is None else env
    kind = accelerator.distributed_type
    if env.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and kind != DistributedType.FSDP:
        raise ConfigError(
            f"FSDP was asked for (an accelerate config with distributed_type: FSDP), but Accelerate does not shard on "
            f"{accelerator.device.type} and would run plain {kind.value} instead. On CPU use data parallelism: "
            "accelerate launch --config_file configs/accelerate/cpu-2proc.yaml scripts/train.py ...; FSDP needs GPUs")
    n = accelerator.num_processes
    machines = n // max(1, int(env.get("LOCAL_WORLD_SIZE", n)))
    if n == 1:
        return f"single process on {accelerator.device.type}"
    name = f"FSDP{env.get('FSDP_VERSION', '1')}" if kind == DistributedType.FSDP else "DDP"
    where = accelerator.device.type + (f", {machines} machines" if machines > 1 else "")
    return f"{name}, {n} processes on {where} ({torch.distributed.get_backend()})"


def check_model_fits(cfg, device_type, available=None):
    """Refuse a GPT whose weights, gradients and AdamW state (16 bytes a parameter) cannot fit in memory.

    Without this, a mistyped n_layer (say 1e20) allocates until the kernel kills the process.
    The model is built on the CPU first on every device, so RAM needs at least its weights.
    """
    if cfg.model != "gpt" or cfg.init_from:
        return
    e = cfg.n_embd
    n = 50257 * e + cfg.block_size * e + cfg.n_layer * (12 * e * e + 13 * e) + 2 * e
    need = n * (16 if device_type == "cpu" else 4)
    if available is None:
        try:
            with open("/proc/meminfo") as f:
                available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
        except (OSError, StopIteration, ValueError):
            return
    if need > available:
        raise ConfigError(f"a GPT with n_layer={cfg.n_layer}, n_embd={cfg.n_embd} has ~{n / 1e6:,.0f}M parameters and "
                          f"needs ~{need / 2**30:,.1f} GiB for weights, gradients and optimizer state; "
                          f"{available / 2**30:,.1f} GiB are available. Lower n_layer, n_embd or block_size")


def describe_machine(device):
    """What trains, for the model card: the GPU model, or the CPU's model name and cores."""
    if device.type == "cuda":
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(device)} (GPU)"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU: {cpuinfo_field('model name') or 'unknown model'}, {cores} cores"
