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
