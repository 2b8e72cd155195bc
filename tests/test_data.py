import contextlib
import hashlib
import http.server
import shutil
import socket
import threading

import numpy as np
import pytest
import torch

from gpt_scratch.errors import ConfigError, DataError
from gpt_scratch.tokenizer import load_tiktoken
from gpt_scratch.train import TrainConfig, data

TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\n"
    "All:\nResolved. resolved.\n\n   indented line\n\n\nThe end.\n"
)


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    # Downloads and default dataset caches land in tmp, never in ~/.cache.
    d = tmp_path / "user_cache"
    monkeypatch.setenv("GPT_SCRATCH_CACHE", str(d))
    return d


def write(path, text):
    path.write_bytes(text.encode("utf-8"))
    return path


def blocks(source, block_size, val_fraction=0.1, cache=None, **settings):
    """(train, validation, facts) as training reads them, from --data (or --dataset=..., via settings)."""
    key = "dataset" if "dataset" in settings else "data"
    src = settings.pop("dataset", source)
    cfg = TrainConfig(**{key: None if src is None else str(src)}, block_size=block_size, val_fraction=val_fraction,
                      cache_dir=None if cache is None else str(cache), **settings)
    return data.load_blocks(cfg)


def stream(train, val):
    """Token ids of the train blocks then the validation blocks."""
    return np.concatenate([torch.stack([split[i] for i in range(len(split))]).numpy().reshape(-1)
                           for split in (train, val)])


def expected(tokens, block_size, val_fraction=0.1):
    """What the blocks must hold: the last val_fraction of the tokens is validation, tails cut to whole blocks."""
    n_val = int(len(tokens) * val_fraction)
    train, val = tokens[: len(tokens) - n_val], tokens[len(tokens) - n_val:]
    return np.array(train[: len(train) // block_size * block_size] + val[: len(val) // block_size * block_size])


def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Socket closed: nothing listens there now, so connecting is refused at once.
    return f"http://127.0.0.1:{port}/input.txt"


@contextlib.contextmanager
def serve(files):
    """Loopback HTTP server answering GET /<name> with files[name]."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = files.get(self.path.lstrip("/"))
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# --- tokens and splits -----------------------------------------------------


def test_tokens_equal_encode_ordinary_of_whole_text(tmp_path):
    path = write(tmp_path / "t.txt", TEXT * 2)
    train, val, facts = blocks(path, 8, 0.25, tmp_path / "c")
    ids = load_tiktoken().encode_ordinary(TEXT * 2)
    assert stream(train, val).tolist() == expected(ids, 8, 0.25).tolist()
    # Newlines survive as GPT-2 tokenizes them: "\n" = 198, "\n\n" = 628 (one token, not two 198s).
    assert 198 in ids and 628 in ids
    assert train[0].dtype == torch.long and train[0].shape == (8,)
    assert "a local text file, `t.txt`" in facts["data"] and facts["dataset_id"] is None


def test_split_sizes(tmp_path):
    path = write(tmp_path / "t.txt", TEXT * 5)
    n = len(load_tiktoken().encode_ordinary(TEXT * 5))
    train, val, facts = blocks(path, 16, 0.1, tmp_path / "c")
    n_val = int(n * 0.1)
    assert (len(train), len(val)) == ((n - n_val) // 16, n_val // 16)
    assert f"{n:,} GPT-2 tokens, the last 10% ({n_val:,}) held out" in facts["data"]


def test_used_ids_are_the_ids_of_the_training_split(tmp_path):
    path = write(tmp_path / "t.txt", TEXT * 5)
    train, val, _ = blocks(path, 16, 0.3, tmp_path / "c")
    seen = {int(i) for b in range(len(train)) for i in train[b]}
    assert train.used_ids(50257).tolist() == sorted(seen)


# --- caches --------------------------------------------------------------------


def token_files(cache):
    return sorted((cache / "tokens").glob("*.u16"))


def test_second_call_uses_the_caches(tmp_path, monkeypatch):
    path = write(tmp_path / "t.txt", TEXT * 3)
    first = stream(*blocks(path, 8, 0.2, tmp_path / "c")[:2])
    made = token_files(tmp_path / "c")
    assert len(made) == 1
    stamp = made[0].stat().st_mtime_ns

    def no_tokenizing(*a, **k):
        raise AssertionError("tokenized again despite the cache")

    monkeypatch.setattr(data, "_arrow_id_batches", no_tokenizing)
    assert np.array_equal(stream(*blocks(path, 8, 0.2, tmp_path / "c")[:2]), first)
    assert token_files(tmp_path / "c") == made and made[0].stat().st_mtime_ns == stamp


def test_changed_text_changes_the_tokens(tmp_path):
    a = stream(*blocks(write(tmp_path / "t.txt", TEXT * 3), 8, 0.2, tmp_path / "c")[:2])
    b = stream(*blocks(write(tmp_path / "t.txt", TEXT * 3 + "A new line.\n"), 8, 0.2, tmp_path / "c")[:2])
    assert not np.array_equal(a, b)
    assert len(token_files(tmp_path / "c")) == 2


def test_interrupted_token_file_write_is_not_a_cache_hit(tmp_path, monkeypatch):
    path = write(tmp_path / "t.txt", TEXT * 3)
    real = data._arrow_id_batches

    def dies_midway(tokenized):
        yield next(real(tokenized))[:5]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(data, "_arrow_id_batches", dies_midway)
    with pytest.raises(Exception, match="no space left"):
        blocks(path, 8, 0.2, tmp_path / "c")
    assert token_files(tmp_path / "c") == [] and not [p for p in (tmp_path / "c" / "tokens").iterdir()]
    monkeypatch.setattr(data, "_arrow_id_batches", real)
    train, val, _ = blocks(path, 8, 0.2, tmp_path / "c")
    assert stream(train, val).tolist() == expected(load_tiktoken().encode_ordinary(TEXT * 3), 8, 0.2).tolist()


# --- sources and their errors ----------------------------------------------------


def test_folder_of_txt_files(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    docs = {"b.txt": "Second document.\n" * 20, "a.txt": "First document.\n" * 20, "empty.txt": ""}
    for name, text in docs.items():
        write(folder / name, text)
    (folder / "notes.md").write_text("not read")  # another kind of file beside them is ignored
    enc = load_tiktoken()
    want = enc.encode_ordinary(docs["a.txt"]) + [50256] + enc.encode_ordinary(docs["b.txt"])  # sorted by name
    train, val, facts = blocks(folder, 4, 0.1, tmp_path / "c")
    assert stream(train, val).tolist() == expected(want, 4, 0.1).tolist()
    assert "a folder of 3 text files, `docs/`" in facts["data"]


def test_missing_path_and_empty_files(tmp_path):
    with pytest.raises(DataError, match=r"does not exist.*--data"):
        blocks(tmp_path / "nope.txt", 8, cache=tmp_path / "c")
    with pytest.raises(DataError, match=r"empty.txt is empty"):
        blocks(write(tmp_path / "empty.txt", ""), 8, cache=tmp_path / "c")
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError, match=r"no \.txt files"):
        blocks(tmp_path / "d", 8, cache=tmp_path / "c")
    write(tmp_path / "d" / "e.txt", "")
    with pytest.raises(DataError, match=r"all 1 \.txt files .* are empty"):
        blocks(tmp_path / "d", 8, cache=tmp_path / "c")


def test_non_utf8_names_file_and_offset(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(DataError) as e:
        blocks(path, 8, cache=tmp_path / "c")
    msg = str(e.value)
    assert "latin.txt" in msg and "offset 3" in msg and "0xe9" in msg and "UTF-8" in msg


def test_too_few_tokens_in_a_split(tmp_path):
    path = write(tmp_path / "t.txt", TEXT)
    n = len(load_tiktoken().encode_ordinary(TEXT))
    n_val = int(n * 0.1)
    assert n - n_val >= 32 > n_val  # train has a block, validation does not
    with pytest.raises(DataError) as e:
        blocks(path, 32, 0.1, tmp_path / "c")
    assert f"validation split has {n_val} tokens" in str(e.value) and "block_size=32" in str(e.value)
    assert "smaller block_size or more text" in str(e.value)
    with pytest.raises(DataError, match=r"train split has \d+ tokens .* block_size=1024"):
        blocks(path, 1024, 0.1, tmp_path / "c")


@pytest.mark.parametrize("bs, vf", [(0, 0.1), (8, 0.0), (8, 1.0)])
def test_bad_settings_are_refused_before_any_reading(tmp_path, bs, vf):
    with pytest.raises(ConfigError):
        blocks(tmp_path / "nope.txt", bs, vf, tmp_path / "c")


def test_url_without_network_says_pass_data(tmp_path):
    with pytest.raises(DataError, match=r"--data PATH"):
        blocks(closed_port_url(), 8, cache=tmp_path / "c")


def test_url_download_is_cached(tmp_path):
    with serve({"x.txt": (TEXT * 3).encode()}) as base:
        first = stream(*blocks(f"{base}/x.txt", 8, cache=tmp_path / "c")[:2])
        assert data.download_path(f"{base}/x.txt").read_bytes() == (TEXT * 3).encode()
    # the server is gone: the cached download is used
    assert np.array_equal(stream(*blocks(f"{base}/x.txt", 8, cache=tmp_path / "c")[:2]), first)


def test_http_error_is_reported(tmp_path):
    with serve({}) as base:
        with pytest.raises(DataError, match=r"HTTP 404.*--data"):
            blocks(f"{base}/missing.txt", 8, cache=tmp_path / "c")


def test_tiny_shakespeare_by_default_and_recognised_by_its_sha(shakespeare_path, tmp_path, monkeypatch):
    dest = data.download_path(data.DEFAULT_DATA_URL)
    dest.parent.mkdir(parents=True)
    shutil.copyfile(shakespeare_path, dest)

    def no_network(*a, **k):
        raise AssertionError("tried to download although the cache is valid")

    monkeypatch.setattr(data.urllib.request, "urlopen", no_network)
    train, val, facts = blocks(None, 1024, 0.1, tmp_path / "c")
    n_val = int(338_025 * 0.1)  # tiny Shakespeare is 338,025 GPT-2 tokens
    assert (len(train), len(val)) == ((338_025 - n_val) // 1024, n_val // 1024)
    assert facts["dataset_id"] == "tiny_shakespeare" and facts["data"].startswith(f"tiny Shakespeare ({data.DEFAULT_DATA_URL})")
    # a local copy is tiny Shakespeare too, because its sha256 says so (not because of its name)
    copy = tmp_path / "corpus.txt"
    shutil.copyfile(shakespeare_path, copy)
    facts = blocks(copy, 1024, 0.1, tmp_path / "c")[2]
    assert facts["dataset_id"] == "tiny_shakespeare" and "a local copy" in facts["data"]


@pytest.fixture
def local_default(monkeypatch):
    """Point the default URL at a loopback server (no internet here) with a made-up file and its sha."""
    good = (TEXT * 3).encode()
    files = {"input.txt": good}
    with serve(files) as base:
        monkeypatch.setattr(data, "DEFAULT_DATA_URL", f"{base}/input.txt")
        monkeypatch.setattr(data, "DEFAULT_DATA_SHA256", hashlib.sha256(good).hexdigest())
        yield files


def test_wrong_sha_cached_default_is_redownloaded(local_default, tmp_path):
    dest = data.download_path(data.DEFAULT_DATA_URL)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"truncated")
    blocks(None, 8, cache=tmp_path / "c")
    assert dest.read_bytes() == local_default["input.txt"]


def test_wrong_sha_cached_default_refused_without_network(monkeypatch, tmp_path):
    url = closed_port_url()
    monkeypatch.setattr(data, "DEFAULT_DATA_URL", url)
    dest = data.download_path(url)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"truncated")
    with pytest.raises(DataError) as e:
        blocks(None, 8, cache=tmp_path / "c")
    assert "corrupt" in str(e.value) and data.DEFAULT_DATA_SHA256 in str(e.value) and "--data" in str(e.value)


def test_default_download_with_wrong_sha_is_refused(local_default, tmp_path):
    local_default["input.txt"] = b"tampered content\n"
    with pytest.raises(DataError, match=r"sha256 .* expected"):
        blocks(None, 8, cache=tmp_path / "c")
    dest = data.download_path(data.DEFAULT_DATA_URL)
    assert not dest.exists() and list(dest.parent.iterdir()) == []  # no staging file left either


# --- any corpus datasets can read (--dataset) ---------------------------------

DOCS = ["First Citizen:\nBefore we proceed any further, hear me speak.\n\n", "All:\nSpeak, speak.\n",
        "", "First Citizen:\nYou are all resolved rather to die than to famish?\n\n\n"] * 30


def docs_tokens(docs):
    enc = load_tiktoken()
    out = []
    for i, d in enumerate(docs):
        ids = enc.encode_ordinary(d) if d else []
        out += ([50256] if i and ids else []) + ids
    return out


def test_dataset_parquet_json_csv_and_save_to_disk_give_the_same_tokens(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"id": list(range(len(DOCS))), "body": DOCS})
    ds.to_parquet(str(tmp_path / "c.parquet"))
    ds.to_json(str(tmp_path / "c.jsonl"))
    ds.to_csv(str(tmp_path / "c.csv"), index=False)
    ds.save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "shards").mkdir()
    ds.select(range(60)).to_parquet(str(tmp_path / "shards" / "a.parquet"))
    ds.select(range(60, len(DOCS))).to_parquet(str(tmp_path / "shards" / "b.parquet"))
    want = expected(docs_tokens(DOCS), 16).tolist()
    for src in ("c.parquet", "c.jsonl", "c.csv", "saved", "shards"):
        train, val, facts = blocks(None, 16, dataset=tmp_path / src, text_column="body", num_proc=2,
                                   cache=tmp_path / f"cache-{src}")
        assert stream(train, val).tolist() == want, src  # (csv reads the empty documents as None: same tokens)
        assert "column `body`" in facts["data"], facts


def test_dataset_errors_name_the_fix(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"body": DOCS}).to_parquet(str(tmp_path / "c.parquet"))
    c = tmp_path / "c"
    with pytest.raises(DataError, match="no column 'text' .*body.*--text_column"):
        blocks(None, 16, dataset=tmp_path / "c.parquet", cache=c)
    with pytest.raises(DataError, match="does not exist"):
        blocks(None, 16, dataset=tmp_path / "nope.parquet", cache=c)
    with pytest.raises(DataError, match="block_size=4096"):
        blocks(None, 4096, dataset=tmp_path / "c.parquet", text_column="body", cache=c)
    datasets.Dataset.from_dict({"n": [1, 2, 3]}).to_parquet(str(tmp_path / "n.parquet"))
    with pytest.raises(DataError, match="not text"):
        blocks(None, 4, dataset=tmp_path / "n.parquet", text_column="n", cache=c)
    datasets.Dataset.from_dict({"text": []}, features=datasets.Features({"text": datasets.Value("string")})
                               ).to_parquet(str(tmp_path / "empty.parquet"))
    with pytest.raises(DataError, match="no rows|empty"):
        blocks(None, 4, dataset=tmp_path / "empty.parquet", cache=c)
    with pytest.raises(DataError, match="cannot load dataset 'no-such/corpus'"):  # offline (conftest)
        blocks(None, 16, dataset="no-such/corpus", cache=c)
