"""One error type per layer, each with the exit code its command line uses.

Every message names the input, what is wrong with it and the fix. Command lines
run their work through `run_cli`, which prints `error: <message>` and exits with
the error's code instead of showing a traceback for a user's mistake:

    2  bad input (a setting, a file or folder the user gave)
    1  the environment (disk full, network, a process that died)
"""

import sys


class GptScratchError(Exception):
    """Base of the project's user-facing errors."""

    exit_code = 2


class ConfigError(GptScratchError, ValueError):
    """A training or model setting is unknown, of the wrong type or out of range."""


class DataError(GptScratchError, ValueError):
    """Training data is missing, unreadable or unusable."""


class CheckpointError(GptScratchError, ValueError):
    """A checkpoint is missing, incomplete, corrupt or of another model shape."""


class ModelFolderError(GptScratchError, ValueError):
    """A model folder is missing files, has unreadable ones, or holds weights that do not fit."""


class HubError(GptScratchError, RuntimeError):
    """A push the Hub refused or could not receive."""

    exit_code = 1


class EnvironmentFault(GptScratchError, OSError):
    """The machine, not the input: disk full, permissions, a lost process."""

    exit_code = 1


def run_cli(prog, fn, *args, **kwargs):
    """Call fn(*args, **kwargs); a GptScratchError becomes `prog: error: ...` and its exit code."""
    try:
        return fn(*args, **kwargs)
    except GptScratchError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
