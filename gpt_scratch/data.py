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

from .checkpoints import fsync_dir, fsync_tree
from .errors import DataError  # bad or missing training data; the message names the fix
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
                out.flush()
                os.fsync(out.fileno())
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
        fsync_dir(dest.parent)
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
        fsync_tree(tmp)  # a power loss must not publish empty files under the final name
        try:
            os.rename(tmp, final)
            fsync_dir(root)
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
    if cfg.cache_dir is not None and os.path.exists(cfg.cache_dir) and not os.path.isdir(cfg.cache_dir):
        raise DataError(f"cache_dir {cfg.cache_dir} is a file, not a folder; pass another --cache_dir")
    if getattr(cfg, "dataset", None):
        dd = prepare_hf_dataset(cfg.dataset, cfg.block_size, cfg.val_fraction, config_name=cfg.dataset_config,
                                split=cfg.dataset_split, text_column=cfg.text_column, num_proc=cfg.num_proc,
                                cache_dir=cfg.cache_dir, accelerator=accelerator)
    else:
        dd = prepare_datasets(cfg.data, cfg.block_size, cfg.val_fraction, cfg.cache_dir, accelerator=accelerator)
    return dd["train"], dd["validation"]


# ---------------------------------------------------------------------------
# Any corpus `datasets` reads (--dataset): load_dataset -> map(tokenize) -> one memory-mapped token file
#
# load_dataset reads the source into Arrow (memory-mapped, never all in RAM); `map(batched=True,
# num_proc=N)` tokenizes each document whole in N worker processes and keeps its result in datasets'
# own cache (reused by the next run and by the other training processes). The token ids are then
# streamed, record batch by record batch, into one flat uint16 file (GPT-2's 50,257 ids fit) under
# cache_dir/streams/, and training reads its blocks from that file one pread at a time: nothing
# the size of the corpus is held in the trainer's memory.

_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv",
             ".txt": "text", ".arrow": "arrow"}
STREAM_FORMAT_VERSION = 1


def _tokenize_batch(batch, indices, text_column):
    """map() function: each document's ids, with 50256 *before* every document but the corpus's first."""
    enc = load_tiktoken()
    out = []
    for text, i in zip(batch[text_column], indices):
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise DataError(f"column {text_column!r} holds {type(text).__name__} values, not text; "
                            "pass --text_column with the name of a text column")
        ids = enc.encode_ordinary(text) if text else []
        out.append(([EOT_ID] if i and ids else []) + ids)
    return {"ids": out}


def _load_source(name, config_name, split, hf_cache=None):
    """A datasets.Dataset for --dataset (see TrainConfig.dataset); DataError with the fix otherwise."""
    import datasets

    path = Path(os.path.expanduser(name))
    kwargs = {}
    try:
        if path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
            ds = datasets.load_from_disk(str(path))  # a save_to_disk folder
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise DataError(f"{path} has splits {sorted(ds)}, not {split!r}; pass --dataset_split with one of them")
                ds = ds[split]
            return ds
        if path.is_file() or path.is_dir():
            if split != "train":
                raise DataError(f"local files give one split, 'train', not {split!r}: drop --dataset_split (validation "
                                "is the last val_fraction of the tokens), or save a DatasetDict with save_to_disk")
            files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
            kinds = {_BUILDERS.get(p.suffix.lower()) for p in files} - {None}
            if len(kinds) != 1:
                raise DataError(f"{path}: found {sorted(kinds) or 'no'} readable file kinds; --dataset takes files "
                                f"of one kind among {', '.join(sorted(_BUILDERS))}, or a save_to_disk folder")
            builder = kinds.pop()
            if builder == "text":
                kwargs["sample_by"] = "document"  # line-based reading would drop the newlines and change the tokens
            if builder == "csv" and any(p.suffix.lower() == ".tsv" for p in files):
                kwargs["sep"] = "\t"
            data_files = [str(p) for p in files if _BUILDERS.get(p.suffix.lower()) == builder]
            return datasets.load_dataset(builder, data_files=data_files, split="train", cache_dir=hf_cache, **kwargs)
        if name.startswith((".", "/", "~")) or name.count("/") > 1:
            raise DataError(f"dataset path {name} does not exist; pass --dataset with an existing file or folder, "
                            "or a Hub dataset name")
        return datasets.load_dataset(name, config_name, split=split, cache_dir=hf_cache)
    except DataError:
        raise
    except (FileNotFoundError, ConnectionError, ValueError, OSError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"cannot load dataset {name!r}{f' ({config_name})' if config_name else ''}, split "
                        f"{split!r}: {first}. Check the name (offline, only local files and save_to_disk folders "
                        "work) and --dataset_config / --dataset_split") from None


def _write_stream(tokenized, dest: Path) -> int:
    """Write the ids of every row, in order, as one flat uint16 file (temp file, fsync, rename); its length."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    n = 0
    try:
        with os.fdopen(fd, "wb") as out:
            for values in _id_batches(tokenized):
                values.astype(np.uint16).tofile(out)
                n += len(values)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except OSError as e:
        raise DataError(f"cannot write the token file {dest} ({e.strerror or e}); check free disk space or pass "
                        "--cache_dir on a larger disk") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return n


def _id_batches(tokenized):
    """Flat int arrays of ids, batch by batch: read from the Arrow cache files without memory-mapping them.

    (A memory-mapped read would leave the whole file resident in this process; a plain
    stream read holds one record batch at a time.)
    """
    files = [f["filename"] for f in tokenized.cache_files]
    if files and tokenized._indices is None:
        rows = 0
        for name in files:  # count first: the files must hold exactly the dataset's rows, in order
            with pa.OSFile(name) as src:
                rows += sum(rb.num_rows for rb in pa.ipc.open_stream(src))
        if rows == len(tokenized):
            for name in files:
                with pa.OSFile(name) as src:
                    for rb in pa.ipc.open_stream(src):
                        yield rb.column(rb.schema.get_field_index("ids")).flatten().to_numpy(zero_copy_only=False)
            return
    for batch in tokenized.with_format("numpy").iter(batch_size=1000):
        parts = [np.asarray(x) for x in batch["ids"]]
        yield np.concatenate(parts) if parts else np.zeros(0, np.int64)


class TokenBlocks(torch.utils.data.Dataset):
    """Blocks of block_size tokens read from a flat uint16 token file, one positioned read (pread) per block.

    Rows look like the text path's: ``{"input_ids": LongTensor(block_size)}``. Not
    numpy.memmap: measured on a 68 MB token file, 160 shuffled block reads through a
    memory map added 45 MB to the process's RSS (the kernel maps ~300 KB of
    neighbouring pages per fault, MADV_RANDOM or not); a pread copies just the block
    and leaves the rest to the page cache, so RSS does not grow with the corpus.
    """

    def __init__(self, path, start, n_blocks, block_size):
        self.path, self.start, self.n_blocks, self.block_size = str(path), int(start), int(n_blocks), int(block_size)
        self._fd = None

    def __len__(self):
        return self.n_blocks

    def __getitem__(self, i):
        if not 0 <= i < self.n_blocks:
            raise IndexError(i)
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        nbytes = 2 * self.block_size
        raw = os.pread(self._fd, nbytes, 2 * (self.start + i * self.block_size))
        if len(raw) != nbytes:
            raise DataError(f"token file {self.path} is shorter than its blocks (truncated?); delete it to rebuild")
        return {"input_ids": torch.from_numpy(np.frombuffer(raw, dtype=np.uint16).astype(np.int64))}

    def __getstate__(self):  # picklable for DataLoader workers: each opens the file itself
        return dict(self.__dict__, _fd=None)

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


def build_hf_dataset(name, block_size, val_fraction=0.1, config_name=None, split="train", text_column="text",
                     num_proc=0, cache_dir=None) -> dict:
    """{"train", "validation"} TokenBlocks for a corpus datasets can read; the last val_fraction is validation."""
    _check_args(block_size, val_fraction)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_dataset_cache_dir()
    # datasets' own cache (Arrow copy of the source, map results) under cache_dir when one is given
    ds = _load_source(name, config_name, split, hf_cache=str(root / "hf") if cache_dir is not None else None)
    if text_column not in ds.column_names:
        raise DataError(f"dataset {name!r} has no column {text_column!r} (its columns: {', '.join(ds.column_names)}); "
                        "pass --text_column with the one holding the text")
    if len(ds) == 0:
        raise DataError(f"dataset {name!r} (split {split!r}) has no rows; pass another --dataset or --dataset_split")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    procs = max(1, min(num_proc or min(cores, 8), len(ds)))
    from datasets import Features, List, Value

    tokenized = ds.map(_tokenize_batch, batched=True, with_indices=True, fn_kwargs={"text_column": text_column},
                       remove_columns=ds.column_names, num_proc=procs if procs > 1 else None,
                       features=Features({"ids": List(Value("int32"))}), desc="tokenizing")
    key = hashlib.sha256(f"v{STREAM_FORMAT_VERSION}|{TOKENIZER_ID}|{tokenized._fingerprint}".encode()).hexdigest()[:32]
    stream = root / "streams" / f"{key}.u16"
    if stream.is_file():
        n = stream.stat().st_size // 2
    else:
        n = _write_stream(tokenized, stream)
        logger.info("wrote %d tokens to %s", n, stream)
    n_val = int(n * val_fraction)
    out = {}
    for split_name, start, length in (("train", 0, n - n_val), ("validation", n - n_val, n_val)):
        if length < block_size:
            raise DataError(
                f"the {split_name} split of {name!r} has {length} tokens (of {n}, val_fraction={val_fraction}) but "
                f"one block needs block_size={block_size}; use a smaller block_size or more text")
        out[split_name] = TokenBlocks(stream, start, length // block_size, block_size)
    return out


def prepare_hf_dataset(name, block_size, val_fraction=0.1, config_name=None, split="train", text_column="text",
                       num_proc=0, cache_dir=None, accelerator=None) -> dict:
    """build_hf_dataset with the main process first: the others then find datasets' cache and the token file."""
    kw = dict(config_name=config_name, split=split, text_column=text_column, num_proc=num_proc, cache_dir=cache_dir)
    if accelerator is None:
        return build_hf_dataset(name, block_size, val_fraction, **kw)
    with accelerator.main_process_first():
        return build_hf_dataset(name, block_size, val_fraction, **kw)
