import os
import sys

import pytest
import torch

# On a loaded 2-core machine, 2 threads on tiny ops was seen ~50x slower than 1.
torch.set_num_threads(1)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")
SHAKESPEARE = os.path.join(SHARED_DATA, "tinyshakespeare.txt")

# First lines of every script that loads a saved folder with trust_remote_code in a clean
# subprocess: gpt_scratch is made unimportable, so only the folder's own code can load it.
WITHOUT_GPT_SCRATCH = """\
import sys, json
sys.modules["gpt_scratch"] = None  # the editable install must not be reachable
try:
    import gpt_scratch
except ImportError:
    pass
else:
    raise SystemExit("gpt_scratch is importable: the test would prove nothing")
"""


@pytest.fixture
def shakespeare_path():
    if not os.path.exists(SHAKESPEARE):
        pytest.skip(f"{SHAKESPEARE} not present (it lives in ../shared/data beside the checkout)")
    return SHAKESPEARE


@pytest.fixture(autouse=True)
def _offline_hf(monkeypatch, tmp_path_factory):
    # Nothing here may reach the Hub; keep HF caches out of the user's home.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
