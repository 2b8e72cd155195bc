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
    from .errors import EnvironmentFault

    try:
        with open(RANKS_PATH, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
    except OSError as e:
        raise EnvironmentFault(f"cannot read GPT-2's BPE ranks at {RANKS_PATH} ({e}); reinstall gpt_scratch "
                               "(pip install -e .) to restore it") from None
    if digest != RANKS_SHA256:
        raise EnvironmentFault(
            f"{RANKS_PATH} is corrupt (sha256 {digest}, expected {RANKS_SHA256}); "
            "reinstall gpt_scratch to restore it."
        )
    return RANKS_PATH


@lru_cache(maxsize=None)
def _ranks() -> dict[bytes, int]:
    """GPT-2's byte-pair ranks from the shipped, sha-checked file: read once for tiktoken and the HF tokenizer."""
    return load_tiktoken_bpe(_checked_ranks_path())


@lru_cache(maxsize=None)
def load_tiktoken() -> tiktoken.Encoding:
    """The GPT-2 encoding (r50k_base ranks, ``<|endoftext|>`` = 50256), built from the shipped file."""
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=R50K_PATTERN,
        mergeable_ranks=_ranks(),
        special_tokens={EOT_TOKEN: EOT_ID},
        explicit_n_vocab=VOCAB_SIZE,
    )


@lru_cache(maxsize=None)
def token_byte_lengths():
    """UTF-8 bytes each id stands for (a LongTensor over the vocabulary); 0 for <|endoftext|>, which is no text.

    What bits per byte divides by: the bytes of the target tokens, special tokens excluded.
    """
    import torch

    enc = load_tiktoken()
    return torch.tensor([0 if i == EOT_ID else len(enc.decode_single_token_bytes(i)) for i in range(VOCAB_SIZE)])


def _recover_pair(token: bytes, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The (left, right) merge that produced ``token``.

    tiktoken ships ranks only, but a BPE merge list is implied by them: running
    BPE on the token's own bytes while allowing only merges ranked below the
    token stops exactly one merge short of it, leaving the two halves.
    """
    limit = ranks[token]
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best_rank, best_i = limit, -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < best_rank:
                best_rank, best_i = r, i
        if best_i < 0:
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    if len(parts) != 2:
        raise RuntimeError(f"cannot derive a BPE merge for token rank {limit}: {token!r}")
    return parts[0], parts[1]


@lru_cache(maxsize=None)
def _vocab_and_merges() -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, str], ...]]:
    """GPT-2's vocab and merges, in HF's byte-level string form, from the shipped ranks.

    Cached because the merge replay is the slow part (~a second) and every
    ``load_tokenizer`` call needs the same result. Tuples keep the cache immutable.
    """
    from transformers.convert_slow_tokenizer import bytes_to_unicode  # GPT-2's byte -> printable-character table

    ranks = _ranks()  # not tiktoken's private attributes
    b2u = bytes_to_unicode()

    def to_str(b: bytes) -> str:
        return "".join(b2u[x] for x in b)

    vocab = [(to_str(tok), rank) for tok, rank in ranks.items()]
    vocab.append((EOT_TOKEN, EOT_ID))
    # HF ranks merges by list position, so order them by the rank of the token they make.
    merges = [
        (to_str(left), to_str(right))
        for tok, _ in sorted(ranks.items(), key=lambda kv: kv[1])
        if len(tok) > 1
        for left, right in [_recover_pair(tok, ranks)]
    ]
    return tuple(vocab), tuple(merges)


def load_tokenizer(model_max_length: int = 1024):
    """A transformers fast GPT-2 tokenizer built offline; ids match ``load_tiktoken()``.

    ``<|endoftext|>`` (50256) doubles as bos/eos/unk/pad, as in GPT-2; nothing is
    added to encoded text automatically. Padding is on the left so a batch of
    prompts ends at the same position, which is what generation needs.
    """
    from transformers import GPT2Tokenizer  # tokenizers-backed (fast) class in transformers 5

    from .errors import ConfigError

    if isinstance(model_max_length, bool) or not isinstance(model_max_length, int) or model_max_length <= 0:
        raise ConfigError(f"model_max_length must be a positive integer (the model's block_size, e.g. 1024), "
                          f"got {model_max_length!r}")
    vocab, merges = _vocab_and_merges()
    return GPT2Tokenizer(
        vocab=dict(vocab),
        merges=list(merges),
        unk_token=EOT_TOKEN,
        bos_token=EOT_TOKEN,
        eos_token=EOT_TOKEN,
        pad_token=EOT_TOKEN,
        add_prefix_space=False,
        add_bos_token=False,
        add_eos_token=False,
        padding_side="left",
        model_max_length=model_max_length,
        # Tidying spaces before punctuation on decode would break round trips.
        clean_up_tokenization_spaces=False,
    )


def save_tokenizer(out_dir: str | os.PathLike, model_max_length: int = 1024) -> tuple[str, ...]:
    """Write tokenizer.json + tokenizer_config.json so ``AutoTokenizer.from_pretrained(out_dir)`` works offline."""
    from .errors import ModelFolderError

    if not os.fspath(out_dir).strip():
        raise ModelFolderError("save_tokenizer: the folder name is empty; pass the model folder to write into")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ModelFolderError(f"save_tokenizer: {out_dir} is a file, not a folder; pass the model folder")
    tokenizer = load_tokenizer(model_max_length)
    files = tokenizer.save_pretrained(out_dir)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if not os.path.isfile(os.path.join(out_dir, name)):
            raise RuntimeError(f"save_pretrained did not write {name} into {out_dir}")
    return files
