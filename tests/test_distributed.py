"""Beyond one process: several "machines" on loopback, a checkpoint resumed on another number of processes, and
an FSDP request on a machine where Accelerate would not shard. Launches are real (torchrun, accelerate launch)."""

import json
import os
import re
import shlex
import socket
import subprocess
import sys

import pytest

from gpt_scratch.train.checkpoints import check_checkpoint, list_checkpoints
from readme_commands import README, readme_commands
from test_training import REPO, child_env, corpus, kill_launch, records, run_group, tiny_args  # noqa: F401  (fixtures)

SMALL = dict(n_layer=1, batch_size=2, eval_interval=0, dropout=0.0)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machines_commands():
    """The README's several-machines lines (the second ```bash block of its section), as printed."""
    with open(README, encoding="utf-8") as f:
        body = f.read().split("\n## Several processes and machines\n", 1)[1].split("\n## ", 1)[0]
    block = body.split("```bash\n")[2].split("```", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip()]


def two_machines(line, args_for_rank, timeout=600):
    """Run one README line as two "machines" on loopback (NODE_RANK 0 and 1), together; their results."""
    port = free_port()
    procs = []
    for rank in (0, 1):
        env = dict(child_env(), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NODE_RANK=str(rank))
        cmd = line + " " + " ".join(shlex.quote(a) for a in args_for_rank(rank))
        procs.append(subprocess.Popen(["bash", "-c", cmd], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, start_new_session=True))
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                kill_launch(q, args_for_rank(0) + args_for_rank(1))
            raise AssertionError("a machine hung:\n" + "\n".join(q.communicate(timeout=60)[1][-3000:] for q in procs)) from None
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return results


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_readme_two_machine_launch_trains_one_job(launcher, tmp_path, corpus):  # noqa: F811
    line = next(c for c in machines_commands() if c.startswith(launcher))
    out = tmp_path / "out"
    node = two_machines(line, lambda rank: tiny_args(corpus, out, max_steps=4, save_interval=2, **SMALL))
    for r in node:
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    log = node[0].stdout + node[0].stderr
    assert "DDP, 2 processes on cpu, 2 machines" in log and "(world size 2)" in log
    train = [r for r in records(out) if "train_loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3, 4] and {r["world_size"] for r in train} == {2}
    assert check_checkpoint(list_checkpoints(out)[-1])["world_size"] == 2
    assert (out / "model" / "model.safetensors").is_file()
    # and the run resumes on both machines from the shared out_dir
    node = two_machines(line, lambda rank: tiny_args(corpus, out, max_steps=6, save_interval=2, resume="auto", **SMALL))
    assert all(r.returncode == 0 for r in node), node[0].stderr[-3000:] + node[1].stderr[-3000:]
    assert "resumed from" in node[0].stdout and "checkpoint-4 at step 4" in node[0].stdout
    assert [r["step"] for r in records(out) if "train_loss" in r] == [1, 2, 3, 4, 5, 6]


def test_machines_without_a_shared_out_dir_train_and_refuse_to_resume(tmp_path, corpus):  # noqa: F811
    line = next(c for c in machines_commands() if c.startswith("torchrun"))
    outs = [tmp_path / f"machine{r}" / "out" for r in (0, 1)]  # each machine's own disk: out_dir and cache
    node = two_machines(line, lambda rank: tiny_args(corpus, outs[rank], max_steps=2, save_interval=2, **SMALL))
    for r in node:
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    for rank in (0, 1):  # each machine prepared the data once, in its own cache
        assert len(list((tmp_path / f"machine{rank}" / "out-cache" / "tokens").glob("*.u16"))) == 1
    assert "(world size 2)" in node[0].stdout + node[0].stderr
    # rank 0 (with c10d rendezvous, whichever machine joined first) keeps the records and writes the model
    first, other = sorted(outs, key=lambda o: not (o / "metrics.jsonl").exists())
    assert [r["step"] for r in records(first) if "train_loss" in r] == [1, 2]
    assert (first / "model").is_dir() and not (other / "model").exists() and not (other / "metrics.jsonl").exists()
    assert [n for n in os.listdir(other) if n.startswith(".")] == []  # no staging litter on the other machine
    node = two_machines(line, lambda rank: tiny_args(corpus, outs[rank], max_steps=4, save_interval=2, resume="auto",
                                                     **SMALL), timeout=300)
    assert any(r.returncode != 0 for r in node)
    said = node[0].stderr + node[1].stderr
    assert "do not see the same out_dir" in said and "shared file system" in said, said[-3000:]


def blocks_in_order(out):
    """Every block the run trained on, in the global order it took them (from --record_batches)."""
    seen = []
    for name in sorted(os.listdir(out)):
        if re.fullmatch(r"batches-rank\d+\.jsonl", name):
            with open(out / name) as f:
                seen += [(r["epoch"], r["position"], r["rank"], r["blocks"]) for r in map(json.loads, f)]
    return [b for *_, blocks in sorted(seen) for b in blocks]


TORCHRUN_2 = ["torchrun", "--standalone", "--nproc_per_node", "2", "scripts/train.py"]
ONE = [sys.executable, "scripts/train.py"]


@pytest.mark.parametrize("first, then", [(TORCHRUN_2, ONE), (ONE, TORCHRUN_2)], ids=["2to1", "1to2"])
def test_resume_on_another_number_of_processes_keeps_the_data_order(first, then, tmp_path, corpus):  # noqa: F811
    common = dict(SMALL, record_batches=True, save_interval=2, lr_decay_steps=6)
    straight, out = tmp_path / "straight", tmp_path / "out"
    p = run_group(ONE + tiny_args(corpus, straight, max_steps=12, **common))  # one process, never stopped
    assert p.returncode == 0, p.stderr[-3000:]
    p = run_group(first + tiny_args(corpus, out, max_steps=2, **common))
    assert p.returncode == 0, p.stderr[-3000:]
    q = run_group(then + tiny_args(corpus, out, max_steps=4, resume="auto", **common))
    assert q.returncode == 0, q.stderr[-3000:]
    said = q.stdout + q.stderr
    assert "data order continues exactly" in said and "not bit-identical" in said
    seen = blocks_in_order(out)
    assert len(seen) == 2 * 2 * 2 + 2 * 2 * 1 and len(set(seen)) == len(seen)  # no block skipped or seen twice
    assert seen == blocks_in_order(straight)[:len(seen)]  # the global order of a run that never stopped
    assert [r["step"] for r in records(out) if "train_loss" in r] == [1, 2, 3, 4]


def test_fsdp_asked_for_on_cpu_is_refused_not_run_as_ddp(tmp_path, corpus):  # noqa: F811
    out = tmp_path / "out"
    p = run_group(["accelerate", "launch", "--config_file", "configs/accelerate/fsdp.yaml", "--num_processes", "2",
                   "scripts/train.py"] + tiny_args(corpus, out, max_steps=2, **SMALL), timeout=300)
    assert p.returncode != 0
    assert "train.py: error: FSDP was asked for" in p.stderr and "cpu-2proc.yaml" in p.stderr
    assert "gpt_scratch/" not in p.stderr  # no traceback of ours (accelerate's launcher adds its own)
    assert not (out / "metrics.jsonl").exists()
