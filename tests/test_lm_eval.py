"""lm-evaluation-harness as the outside check of the project's bits per byte, through the README's command."""

import json
import re
import subprocess
import sys

from readme_commands import TINY, readme_commands, workdir
from test_training import child_env, corpus  # noqa: F401  (fixture)


def test_readme_lm_eval_command_agrees_with_the_projects_bits_per_byte(tmp_path, corpus):  # noqa: F811
    work = workdir(tmp_path)
    env = dict(child_env(), GPT_SCRATCH_CACHE=str(tmp_path / "cache"), HF_HOME=str(tmp_path / "hf"))
    # the main job, tiny, its final evaluation over the whole validation split (eval_steps 0)
    p = subprocess.run([sys.executable, "scripts/train.py", "--config", "configs/shakespeare.yaml", "--data", corpus]
                       + TINY + ["--max_steps", "30", "--batch_size", "4", "--eval_steps", "0"], cwd=work, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    ours = json.load(open(work / "out" / "shakespeare" / "model" / "run_summary.json"))["val_bpb"]
    (argv, _), = readme_commands("Evaluate with lm-evaluation-harness")
    assert argv[:2] == ["lm-eval", "run"]
    q = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert q.returncode == 0, q.stdout[-2000:] + q.stderr[-3000:]
    theirs = float(re.search(r"\|bits_per_byte\s*\|[^|]*\|\s*([0-9.]+)\|", q.stdout).group(1))
    # lm-eval scores the same text in windows of the model's context (each window's first token from one token of
    # the window before) over all its bytes; the project scores fixed blocks (each block's first token is context
    # only) over its targets' bytes. The same tokens, counted a little differently: within 2%.
    assert abs(theirs - ours) <= 0.02 * ours, (theirs, ours)
