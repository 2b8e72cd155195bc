"""Training data: any source -> datasets.load_dataset -> GPT-2 tokens in one flat file -> blocks read by position.

Sources (`--data` or `--dataset`, the same path for both):

* nothing: tiny Shakespeare, downloaded once into the user cache and sha256-checked;
* an http(s) URL: downloaded once into the user cache;
* a text file, or a folder of them: each file is one document (`load_dataset("text",
  sample_by="document")`, so newlines stay and the tokens are GPT-2's own for the
  document as datasets reads it: line endings become "\\n");
* parquet / json / jsonl / csv / tsv / arrow files, or a folder of files of one kind:
  each row of `--text_column` is one document;
* a `save_to_disk` folder, or a Hub dataset name (online only).

Each document is tokenized whole with tiktoken (`map(batched=True)`, cached by
datasets), with `<|endoftext|>` between documents; the ids are written once to a flat
uint16 file in the cache (keyed by datasets' own cache files of that map), and
training reads each block with one positioned read, so nothing the size of the
corpus sits in the trainer's memory. The last `val_fraction` of the tokens is
validation; each split is cut into blocks of `block_size` tokens, the tail dropped.
The user cache is `$GPT_SCRATCH_CACHE` or `~/.cache/gpt_scratch`.
"""

from __future__ import annotations

import codecs
import hashlib
import http.client
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..folder.durable import file_sha256, staged_file
from ..tokenizer import EOT_ID, R50K_PATTERN, RANKS_SHA256, load_tiktoken

DEFAULT_DATA_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
DEFAULT_DATA_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
NO_NETWORK = "pass --data PATH with a local text file or a folder of .txt files"
BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv", ".arrow": "arrow",
            ".txt": "text"}
TOKEN_FILE_VERSION = f"2|gpt2-r50k:{RANKS_SHA256}:{R50K_PATTERN}:eot={EOT_ID}"  # what decides the ids in a token file


def user_cache_dir() -> Path:
    env = os.environ.get("GPT_SCRATCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gpt_scratch"


# ---------------------------------------------------------------- downloads

def download_path(url):
    name = url.rstrip("/").rsplit("/", 1)[-1] or "download"
    return user_cache_dir() / "downloads" / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{name}"


def _download(url, dest, sha):
    dest.parent.mkdir(parents=True, exist_ok=True)
    with staged_file(dest, "wb") as out:
        h = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=15) as resp:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    h.update(chunk)
                    out.write(chunk)
        except urllib.error.HTTPError as e:
            raise DataError(f"downloading {url} failed: HTTP {e.code} {e.reason}; {NO_NETWORK}.") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:  # DNS, refused, cut off, timeout
            raise DataError(f"cannot download {url} ({getattr(e, 'reason', e)}): no network? {NO_NETWORK} (or put "
                            f"the file at {dest}).") from None
        if sha is not None and h.hexdigest() != sha:
            raise DataError(f"downloaded {url} has sha256 {h.hexdigest()}, expected {sha}: the file changed or the "
                            f"download was altered; nothing was saved. {NO_NETWORK}.")


def fetch(url):
    """A local copy of `url`, downloaded once; the default URL's copy must match its sha256 (else fetched again)."""
    dest = download_path(url)
    sha = DEFAULT_DATA_SHA256 if url == DEFAULT_DATA_URL else None
    if dest.is_file() and (sha is None or file_sha256(dest) == sha):
        return dest
    try:
        _download(url, dest, sha)
    except DataError as e:
        if dest.is_file():
            raise DataError(f"the cached copy of {url} at {dest} is corrupt (sha256 {file_sha256(dest)}, expected {sha}) "
                            f"and downloading it again failed: {e}") from None
        raise
    return dest


# ---------------------------------------------------------------- sources

def _check_text_files(files, shown):
    """Refuse text files that are all empty or not UTF-8 (naming the byte); True if one is tiny Shakespeare."""
    if not any(f.stat().st_size for f in files):
        raise DataError(f"all {len(files)} .txt files in {shown} are empty; pass --data PATH with some text." if
                        shown.is_dir() else f"{shown} is empty (0 bytes); pass --data PATH with a non-empty UTF-8 text "
                        "file.")
    for path in files:
        decoder, h, offset = codecs.getincrementaldecoder("utf-8")(), hashlib.sha256(), 0
        with open(path, "rb") as f:
            while True:
                chunk = f.read(1 << 20)
                try:
                    decoder.decode(chunk, final=not chunk)  # at the end (b""), a cut-off character shows
                except UnicodeDecodeError as e:
                    bad = (chunk or decoder.getstate()[0])[e.start:e.start + 1].hex()
                    raise DataError(f"{path} is not valid UTF-8: byte 0x{bad} at byte offset {offset + e.start} "
                                    f"({e.reason}). Convert it to UTF-8 (e.g. `iconv -f latin1 -t utf-8`) or pass "
                                    "another --data PATH.") from None
                if not chunk:
                    break
                h.update(chunk)
                offset += len(chunk)
    return len(files) == 1 and h.hexdigest() == DEFAULT_DATA_SHA256


def _local_files(path, cfg):
    """(builder, data files, description) for a local file or a folder of files of one kind."""
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in BUILDERS)
    kinds = {BUILDERS.get(p.suffix.lower(), "text") for p in files}
    if len(kinds) != 1:
        wanted = "no .txt files" if not kinds else f"files of {len(kinds)} kinds ({', '.join(sorted(kinds))})"
        raise DataError(f"folder {path} contains {wanted}; put UTF-8 .txt files in it (or files of one kind among "
                        f"{', '.join(sorted(BUILDERS))}), or pass --data PATH with a text file.")
    builder = kinds.pop()
    where = f"a local {builder} file, `{path.name}`" if path.is_file() else f"a folder of {len(files)} {builder} files, `{path.name}/`"
    if builder != "text":
        return builder, files, f"{where}, column `{cfg.text_column}`"
    shakespeare = _check_text_files(files, path)
    return builder, files, (f"tiny Shakespeare (a local copy, {where})" if shakespeare else where)


def load_source(cfg):
    """(datasets.Dataset with the text column, description facts) for cfg.data / cfg.dataset."""
    import datasets

    name = cfg.dataset or cfg.data or DEFAULT_DATA_URL
    facts = {"dataset_id": None, "language": None}
    hf_cache = str(Path(cfg.cache_dir or user_cache_dir() / "datasets").expanduser() / "hf")
    if name.startswith(("http://", "https://")):
        path, url = fetch(name), name
    else:
        path, url = Path(name).expanduser(), None
    try:
        if path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if cfg.dataset_split not in ds:
                    raise DataError(f"{path} has splits {sorted(ds)}, not {cfg.dataset_split!r}; pass --dataset_split "
                                    "with one of them")
                ds = ds[cfg.dataset_split]
            return ds, dict(facts, data=f"a saved dataset, `{path.name}`, column `{cfg.text_column}`")
        if path.exists():
            if cfg.dataset_split != "train":
                raise DataError(f"local files give one split, 'train', not {cfg.dataset_split!r}: drop --dataset_split "
                                "(validation is the last val_fraction of the tokens), or save a DatasetDict with "
                                "save_to_disk")
            builder, files, where = _local_files(path, cfg)
            kwargs = {"sample_by": "document"} if builder == "text" else {"sep": "\t"} if files[0].suffix == ".tsv" else {}
            if url == DEFAULT_DATA_URL or where.startswith("tiny Shakespeare"):
                facts.update(dataset_id="tiny_shakespeare", language="en")
                where = f"tiny Shakespeare ({url})" if url else where
            ds = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train", cache_dir=hf_cache,
                                       **kwargs)
            return ds, dict(facts, data=f"<{url}>" if url and url != DEFAULT_DATA_URL else where)
        if name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).suffix.lower() in BUILDERS:
            raise DataError(f"data path {path} does not exist; pass --data PATH with an existing text file or folder, "
                            "or --dataset with a dataset file, folder or Hub name.")
        ds = datasets.load_dataset(name, cfg.dataset_config, split=cfg.dataset_split, cache_dir=hf_cache)
        what = f"the Hub dataset `{name}`" + (f" ({cfg.dataset_config})" if cfg.dataset_config else "")
        return ds, dict(facts, dataset_id=name, data=f"{what}, split {cfg.dataset_split}, column `{cfg.text_column}`")
    except DataError:
        raise
    except Exception as e:  # datasets' errors for a source it cannot read: named with the fix
        while e.__cause__ is not None:  # "An error occurred while generating the dataset": the reason is inside
            e = e.__cause__
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"cannot load dataset {name!r}{f' ({cfg.dataset_config})' if cfg.dataset_config else ''}, split "
                        f"{cfg.dataset_split!r}: {first}. Check the name and format (offline, only local files and "
                        "save_to_disk folders work) and --dataset_config / --dataset_split") from None


# ---------------------------------------------------------------- tokens

def _tokenize_batch(batch, indices, text_column):
    """map() function: each document's ids, with 50256 before every non-empty document but the corpus's first."""
    enc, out = load_tiktoken(), []
    for text, i in zip(batch[text_column], indices):
        if text is not None and not isinstance(text, str):
            raise DataError(f"column {text_column!r} holds {type(text).__name__} values, not text; pass --text_column "
                            "with the name of a text column")
        ids = enc.encode_ordinary(text) if text else []
        out.append(([EOT_ID] if i and ids else []) + ids)
    return {"ids": out}


def _arrow_id_batches(tokenized):
    """The ids of every row, in order, one Arrow record batch at a time, read (not memory-mapped) from the map's
    cache files: a memory map would leave the whole file resident in this process."""
    import pyarrow as pa

    files = [f["filename"] for f in tokenized.cache_files]
    counts = []
    for name in files:  # the files must hold exactly the dataset's rows, in order
        with pa.OSFile(name) as src:
            counts.append(sum(b.num_rows for b in pa.ipc.open_stream(src)))
    if not files or sum(counts) != len(tokenized):
        for batch in tokenized.with_format("numpy").iter(batch_size=1000):
            yield np.concatenate([np.asarray(x) for x in batch["ids"]] or [np.zeros(0, np.int64)])
        return
    for name in files:
        with pa.OSFile(name) as src:
            for b in pa.ipc.open_stream(src):
                yield b.column(b.schema.get_field_index("ids")).flatten().to_numpy(zero_copy_only=False)


def token_file(cfg, accelerator=None):
    """(path of the flat uint16 token file, its length, description facts): built by the first process of each
    machine (datasets' cache and this file are then found by the others)."""
    import datasets

    ds, facts = load_source(cfg)
    if cfg.text_column not in ds.column_names:
        raise DataError(f"dataset {cfg.dataset or cfg.data!r} has no column {cfg.text_column!r} (its columns: "
                        f"{', '.join(ds.column_names)}); pass --text_column with the one holding the text")
    if len(ds) == 0:
        raise DataError(f"dataset {cfg.dataset or cfg.data!r} (split {cfg.dataset_split!r}) has no rows; pass another "
                        "--dataset or --dataset_split")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    procs = max(1, min(cfg.num_proc or min(cores, 8), len(ds)))
    tokenized = ds.map(_tokenize_batch, batched=True, with_indices=True, fn_kwargs={"text_column": cfg.text_column},
                       remove_columns=ds.column_names, num_proc=procs if procs > 1 else None, desc="tokenizing",
                       features=datasets.Features({"ids": datasets.List(datasets.Value("int32"))}))
    key = json.dumps([TOKEN_FILE_VERSION, [os.path.basename(f["filename"]) for f in tokenized.cache_files], len(ds)])
    root = Path(cfg.cache_dir or user_cache_dir() / "datasets").expanduser() / "tokens"
    path = root / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.u16"
    if not path.is_file() or not tokenized.cache_files:
        root.mkdir(parents=True, exist_ok=True)
        with staged_file(path, "wb") as f:
            for ids in _arrow_id_batches(tokenized):
                ids.astype(np.uint16).tofile(f)
    return path, path.stat().st_size // 2, facts


class TokenBlocks(torch.utils.data.Dataset):
    """`n_blocks` blocks of `block_size` tokens from a flat uint16 token file, starting at token `start`.

    One positioned read (pread) per block, not numpy.memmap: on a 68 MB token file, 160
    shuffled block reads through a memory map added 45 MB to the process's RSS (the kernel
    maps ~300 KB of neighbouring pages per fault); a pread copies just the block.
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
        raw = os.pread(self._fd, 2 * self.block_size, 2 * (self.start + i * self.block_size))
        if len(raw) != 2 * self.block_size:
            raise DataError(f"token file {self.path} is shorter than its blocks (truncated?); delete it to rebuild")
        return torch.from_numpy(np.frombuffer(raw, dtype=np.uint16).astype(np.int64))

    def used_ids(self, vocab_size, chunk=1 << 22):
        """Sorted ids that occur in these blocks (train_vocab data), read in chunks."""
        seen = np.zeros(vocab_size, dtype=bool)
        end = self.start + self.n_blocks * self.block_size
        for at in range(self.start, end, chunk):
            seen[np.fromfile(self.path, dtype=np.uint16, count=min(chunk, end - at), offset=2 * at)] = True
        return torch.from_numpy(np.flatnonzero(seen))

    def __getstate__(self):  # picklable: each process opens the file itself
        return dict(self.__dict__, _fd=None)

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


def load_blocks(cfg):
    """(train blocks, validation blocks, facts about the data) for a TrainConfig."""
    try:
        os.makedirs(cfg.cache_dir or user_cache_dir(), exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot use {cfg.cache_dir or user_cache_dir()} as the data cache ({e.strerror or e}: a file "
                        "is in the way, or no permission); pass another --cache_dir") from None
    path, n, facts = token_file(cfg)
    n_val = int(n * cfg.val_fraction)
    splits = {}
    for split, start, length in (("train", 0, n - n_val), ("validation", n - n_val, n_val)):
        if length < cfg.block_size:
            raise DataError(f"the {split} split has {length} tokens (of {n} in total, val_fraction={cfg.val_fraction}) "
                            f"but one block needs block_size={cfg.block_size}; use a smaller block_size or more text"
                            + (" (or a larger val_fraction)." if split == "validation" else "."))
        splits[split] = TokenBlocks(path, start, length // cfg.block_size, cfg.block_size)
    facts["data"] += f"; {n:,} GPT-2 tokens, the last {cfg.val_fraction:.0%} ({n_val:,}) held out for validation"
    return splits["train"], splits["validation"], facts
