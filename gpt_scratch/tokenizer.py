"""GPT-2's BPE tokenizer, offline.

The byte-pair ranks ship inside the package (``assets/r50k_base.tiktoken``,
byte-identical to tiktoken's r50k_base), so nothing is downloaded:
``tiktoken.get_encoding("gpt2")`` would fetch files from the internet.
"""

import hashlib
import os
from functools import lru_cache

import tiktoken
from tiktoken.load import load_tiktoken_bpe

RANKS_PATH = os.path.join(os.path.dirname(__file__), "assets", "r50k_base.tiktoken")
RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
EOT_TOKEN = "<|endoftext|>"
EOT_ID = 50256
VOCAB_SIZE = 50257
# GPT-2's pre-tokenizer split (tiktoken's faster equivalent of OpenAI's original regex).
R50K_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


def _checked_ranks_path():
    with open(RANKS_PATH, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != RANKS_SHA256:
        raise RuntimeError(
            f"{RANKS_PATH} is corrupt (sha256 {digest}, expected {RANKS_SHA256}); "
            "reinstall gpt_scratch to restore it."
        )
    return RANKS_PATH


@lru_cache(maxsize=None)
def load_tiktoken() -> tiktoken.Encoding:
    """The GPT-2 encoding (r50k_base ranks, ``<|endoftext|>`` = 50256), built from the shipped file."""
    ranks = load_tiktoken_bpe(_checked_ranks_path())
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=R50K_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={EOT_TOKEN: EOT_ID},
        explicit_n_vocab=VOCAB_SIZE,
    )
