"""The shell commands printed in a README section, so tests can run them exactly as a user would."""

import os
import re
import shlex

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def readme_commands(section):
    """[(argv, stdin text or None)] of the ```bash block under `## section`, comments dropped.

    `echo "text" | cmd ...` becomes (cmd's argv, "text\\n"), which is what the pipe gives cmd.
    """
    with open(README, encoding="utf-8") as f:
        text = f.read()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    block = body.split("```bash\n", 1)[1].split("```", 1)[0]
    out = []
    for line in block.splitlines():
        line = re.split(r"\s+#\s", line)[0].strip()
        if not line:
            continue
        stdin = None
        if "|" in line:
            left, line = (part.strip() for part in line.split("|", 1))
            words = shlex.split(left)
            assert words[0] == "echo", left
            stdin = " ".join(words[1:]) + "\n"
        out.append((shlex.split(line), stdin))
    return out


# What a test appends to a README training command: only step counts and model size shrunk (and offline data).
TINY = ["--max_steps", "2", "--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--block_size", "16", "--batch_size",
        "2", "--eval_interval", "0", "--eval_steps", "2", "--save_interval", "0", "--sample_tokens", "0"]


def workdir(tmp_path):
    """A working folder where README commands run as printed: configs/ and scripts/ are the repository's own (linked),
    and what they write (out/, path/to/...) stays in the test's folder."""
    repo = os.path.dirname(README)
    for name in ("configs", "scripts"):
        if not os.path.exists(tmp_path / name):
            os.symlink(os.path.join(repo, name), tmp_path / name)
    return tmp_path
