"""Data pipeline: text -> GPT-2 tokens -> fixed-length training blocks.

Sources (``read_documents`` / ``read_text``):

* a local UTF-8 text file: one document;
* a folder: every ``*.txt`` file directly inside it (not recursive, other files
  ignored), sorted by file name, each one a separate document; empty files are
  skipped;
* an ``http(s)://`` URL: downloaded once into the user cache;
* ``None``: tiny Shakespeare from ``DEFAULT_DATA_URL``, downloaded once into the
  user cache and checked against ``DEFAULT_DATA_SHA256``.

The user cache is ``$GPT_SCRATCH_CACHE`` or ``~/.cache/gpt_scratch``.
Files are read as bytes and decoded as strict UTF-8 with no newline
translation, so ``\\r\\n`` stays as it is in the file.

Tokenization: each document is encoded whole with ``encode_ordinary`` (never
line by line: BPE merges across newlines, e.g. ``"\\n\\n"`` is one token, so
splitting would change the tokens). Documents are joined with the
``<|endoftext|>`` token (50256) *between* them, as GPT-2 was trained; a single
file gives exactly ``encode_ordinary(text)``. A literal "<|endoftext|>" inside a
file is ordinary text, never the special token.

Splits: the token stream is split by position; the last ``val_fraction`` of it
(``int(n_tokens * val_fraction)`` tokens) is "validation", the rest "train".
Each split is cut into non-overlapping blocks of exactly ``block_size`` tokens;
the tail shorter than a block is dropped. The only column is ``input_ids``:
labels are the same ids (the model shifts them), see ``collate``.

The returned ``DatasetDict`` is formatted as ``"torch"``: a row's
``input_ids`` is a LongTensor of shape (block_size,), and a torch DataLoader
with the default collate yields ``{"input_ids": LongTensor(B, block_size)}``.

Caching: the blocks are saved with ``save_to_disk`` under
``cache_dir/<key>`` where the key hashes the documents, the tokenizer, the
block size and the validation fraction; a later call with the same inputs
loads them instead of tokenizing. Writes go to a temporary folder that is
renamed into place, so an interrupted write is never taken for a finished one.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from datasets import Dataset, DatasetDict, Features, List, Value, load_from_disk

from .tokenizer import EOT_ID, R50K_PATTERN, RANKS_SHA256, load_tiktoken

logger = logging.getLogger(__name__)

DEFAULT_DATA_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
DEFAULT_DATA_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
DOWNLOAD_TIMEOUT_S = 15.0
# Bump when the on-disk layout or the tokenization rules change, so old caches are not reused.
CACHE_FORMAT_VERSION = 1
# Everything that decides the token ids; part of the cache key.
TOKENIZER_ID = f"gpt2-r50k:{RANKS_SHA256}:{R50K_PATTERN}:eot={EOT_ID}"

_NO_NETWORK_HINT = "pass --data PATH with a local text file or a folder of .txt files"


from .errors import DataError  # noqa: E402  (bad or missing training data; the message names the fix)


# ---------------------------------------------------------------------------
# Reading text


def user_cache_dir() -> Path:
    """``$GPT_SCRATCH_CACHE`` or ``~/.cache/gpt_scratch`` (not created here)."""
    env = os.environ.get("GPT_SCRATCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gpt_scratch"


def download_path(url: str) -> Path:
    """Where ``url`` is (or will be) cached: hashed URL keeps different URLs with the same basename apart."""
    name = url.rstrip("/").rsplit("/", 1)[-1] or "download"
    tag = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    return user_cache_dir() / "downloads" / f"{tag}-{name}"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(url: str, dest: Path, expected_sha256: str | None) -> None:
    """Fetch ``url`` into ``dest`` via a temp file + rename; check the digest before the rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    try:
        h = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    h.update(chunk)
                    out.write(chunk)
        except urllib.error.HTTPError as e:
            raise DataError(f"downloading {url} failed: HTTP {e.code} {e.reason}; {_NO_NETWORK_HINT}.") from e
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            # URLError wraps DNS failures and refused connections; a timeout is a bare OSError;
            # HTTPException covers a connection cut mid-body.
            reason = getattr(e, "reason", e)
            raise DataError(
                f"cannot download {url} ({reason}): no network? {_NO_NETWORK_HINT} "
                f"(or put the file at {dest})."
            ) from e
        digest = h.hexdigest()
        if expected_sha256 is not None and digest != expected_sha256:
            raise DataError(
                f"downloaded {url} has sha256 {digest}, expected {expected_sha256}: the file changed "
                f"or the download was altered; nothing was saved. {_NO_NETWORK_HINT}."
            )
        os.replace(tmp, dest)
        logger.info("downloaded %s to %s", url, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fetch(url: str) -> Path:
    """Local copy of ``url``, downloading it if needed; the default URL's copy must match its sha256."""
    dest = download_path(url)
    expected = DEFAULT_DATA_SHA256 if url == DEFAULT_DATA_URL else None
    if dest.is_file():
        if expected is None:
            return dest
        digest = _sha256_file(dest)
        if digest == expected:
            return dest
        logger.warning("cached %s has sha256 %s, expected %s; downloading it again", dest, digest, expected)
        try:
            _download(url, dest, expected)
        except DataError as e:
            raise DataError(
                f"the cached copy of {url} at {dest} is corrupt (sha256 {digest}, expected {expected}) "
                f"and downloading it again failed: {e}"
            ) from e
        return dest
    _download(url, dest, expected)
    return dest


def _decode(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = raw[e.start : e.start + 1].hex()
        raise DataError(
            f"{name} is not valid UTF-8: byte 0x{bad} at byte offset {e.start} ({e.reason}). "
            f"Convert it to UTF-8 (e.g. `iconv -f latin1 -t utf-8`) or pass another --data PATH."
        ) from e


def _read_file(path: Path, label: str | None = None) -> str:
    return _decode(path.read_bytes(), label or str(path))


def read_documents(source: str | os.PathLike | None) -> list[str]:
    """The documents of ``source`` (see the module docstring), each non-empty, in order."""
    if source is None:
        source = DEFAULT_DATA_URL
    source_str = os.fspath(source)
    if source_str.startswith(("http://", "https://")):
        path = _fetch(source_str)
        text = _read_file(path, f"{source_str} (cached at {path})")
        if not text:
            raise DataError(f"{source_str} (cached at {path}) is empty; pass --data PATH with a non-empty text file.")
        return [text]

    path = Path(source_str).expanduser()
    if not path.exists():
        raise DataError(f"data path {path} does not exist; pass --data PATH with an existing text file or folder of .txt files.")
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.suffix == ".txt" and p.is_file()), key=lambda p: p.name)
        if not files:
            raise DataError(f"folder {path} contains no .txt files; put UTF-8 .txt files in it or pass --data PATH with a text file.")
        docs = [t for t in (_read_file(p) for p in files) if t]
        if not docs:
            raise DataError(f"all {len(files)} .txt files in {path} are empty; pass --data PATH with some text.")
        return docs
    text = _read_file(path)
    if not text:
        raise DataError(f"data file {path} is empty (0 bytes); pass --data PATH with a non-empty UTF-8 text file.")
    return [text]


def read_text(source: str | os.PathLike | None) -> str:
    """All text of ``source`` as one string; a folder's documents are joined with "<|endoftext|>".

    For display and inspection; ``build_datasets`` tokenizes the documents
    separately instead, so a literal "<|endoftext|>" in a file stays ordinary text.
    """
    return "<|endoftext|>".join(read_documents(source))


# ---------------------------------------------------------------------------
# Tokenizing and blocking


def tokenize_documents(docs: list[str]) -> np.ndarray:
    """int32 token stream: each document encoded whole, 50256 between documents."""
    enc = load_tiktoken()
    parts: list[np.ndarray] = []
    for i, doc in enumerate(docs):
        if i:
            parts.append(np.array([EOT_ID], dtype=np.int32))
        parts.append(np.asarray(enc.encode_ordinary(doc), dtype=np.int32))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)


def _check_args(block_size: int, val_fraction: float) -> None:
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise DataError(f"block_size must be a positive integer, got {block_size!r}.")
    if not 0.0 < float(val_fraction) < 1.0:
        raise DataError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction!r}.")


def split_tokens(tokens: np.ndarray, block_size: int, val_fraction: float) -> dict[str, np.ndarray]:
    """{"train", "validation"} -> (n_blocks, block_size) arrays; the last val_fraction of the stream is validation."""
    _check_args(block_size, val_fraction)
    n = len(tokens)
    n_val = int(n * val_fraction)
    pieces = {"train": tokens[: n - n_val], "validation": tokens[n - n_val :]}
    out = {}
    for split, piece in pieces.items():
        if len(piece) < block_size:
            raise DataError(
                f"the {split} split has {len(piece)} tokens (of {n} in total, val_fraction={val_fraction}) "
                f"but one block needs block_size={block_size}; use a smaller block_size or more text"
                + (" (or a larger val_fraction)." if split == "validation" else ".")
            )
        n_blocks = len(piece) // block_size
        out[split] = piece[: n_blocks * block_size].reshape(n_blocks, block_size)
    return out


def _to_dataset(blocks: np.ndarray) -> Dataset:
    block_size = blocks.shape[1]
    # A fixed-size list column: Arrow gets the flat buffer directly, no Python lists.
    column = pa.FixedSizeListArray.from_arrays(pa.array(blocks.reshape(-1).astype(np.int32)), block_size)
    features = Features({"input_ids": List(Value("int32"), length=block_size)})
    return Dataset.from_dict({"input_ids": column}, features=features)


# ---------------------------------------------------------------------------
# Cached build


def default_dataset_cache_dir() -> Path:
    return user_cache_dir() / "datasets"


def cache_key(docs: list[str], block_size: int, val_fraction: float) -> str:
    """Hash of everything that decides the blocks (documents length-prefixed, so boundaries count)."""
    h = hashlib.sha256()
    h.update(f"v{CACHE_FORMAT_VERSION}|{TOKENIZER_ID}|bs={int(block_size)}|vf={float(val_fraction)!r}|n={len(docs)}|".encode())
    for doc in docs:
        raw = doc.encode("utf-8")
        h.update(len(raw).to_bytes(8, "little"))
        h.update(raw)
    return h.hexdigest()[:32]


def build_datasets(
    source: str | os.PathLike | None,
    block_size: int,
    val_fraction: float = 0.1,
    cache_dir: str | os.PathLike | None = None,
) -> DatasetDict:
    """Train/validation blocks of ``block_size`` tokens from ``source``, torch-formatted, cached on disk.

    ``cache_dir`` defaults to ``<user cache>/datasets``. Raises ``DataError``
    for unusable sources or when a split is shorter than one block.
    """
    _check_args(block_size, val_fraction)
    docs = read_documents(source)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_dataset_cache_dir()
    final = root / cache_key(docs, block_size, val_fraction)

    if final.is_dir():
        try:
            dd = load_from_disk(str(final))
            logger.info("loaded tokenized data from %s", final)
            return dd.with_format("torch")
        except Exception as e:  # a cache damaged by hand: rebuild rather than fail
            logger.warning("cache %s unreadable (%s); rebuilding it", final, e)
            shutil.rmtree(final, ignore_errors=True)

    tokens = tokenize_documents(docs)
    blocks = split_tokens(tokens, block_size, val_fraction)
    dd = DatasetDict({split: _to_dataset(b) for split, b in blocks.items()})

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=final.name + ".tmp-"))
    try:
        dd.save_to_disk(str(tmp))
        meta = {
            "source": None if source is None else os.fspath(source),
            "documents": len(docs),
            "tokens": int(len(tokens)),
            "block_size": int(block_size),
            "val_fraction": float(val_fraction),
            "blocks": {split: int(b.shape[0]) for split, b in blocks.items()},
            "tokenizer": "gpt2 (r50k_base)",
        }
        (tmp / "gpt_scratch_meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process finished the same key first; its copy is identical.
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("tokenized %d tokens into %s", len(tokens), final)
    # Read back from the final folder so the data is memory-mapped from the cache, not the temp dir.
    return load_from_disk(str(final)).with_format("torch")


def prepare_datasets(
    source: str | os.PathLike | None,
    block_size: int,
    val_fraction: float = 0.1,
    cache_dir: str | os.PathLike | None = None,
    accelerator=None,
) -> DatasetDict:
    """``build_datasets`` where the main process downloads and tokenizes first; the others then hit the cache.

    The cache must be on a filesystem all processes see (the usual single-node case).
    """
    if accelerator is None:
        return build_datasets(source, block_size, val_fraction, cache_dir)
    with accelerator.main_process_first():
        return build_datasets(source, block_size, val_fraction, cache_dir)


def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack rows into ``input_ids`` (B, block_size) LongTensor plus ``labels``, a copy of it.

    The default collate already works for the torch-formatted datasets; use this
    one when the model needs ``labels`` (e.g. with transformers' Trainer) or the
    rows are plain lists.
    """
    ids = torch.stack([torch.as_tensor(ex["input_ids"], dtype=torch.long) for ex in examples])
    # A copy, so masking labels in place can never change the inputs.
    return {"input_ids": ids, "labels": ids.clone()}


def load_training_data(cfg, accelerator=None):
    """(train, validation) datasets of blocks for a TrainConfig: --dataset through load_dataset, else --data."""
    if getattr(cfg, "dataset", None):
        dd = prepare_hf_dataset(cfg.dataset, cfg.block_size, cfg.val_fraction, config_name=cfg.dataset_config,
                                split=cfg.dataset_split, text_column=cfg.text_column, num_proc=cfg.num_proc,
                                cache_dir=cfg.cache_dir, accelerator=accelerator)
    else:
        dd = prepare_datasets(cfg.data, cfg.block_size, cfg.val_fraction, cfg.cache_dir, accelerator=accelerator)
    return dd["train"], dd["validation"]
