import contextlib
import hashlib
import http.server
import shutil
import socket
import threading

import numpy as np
import pytest
import torch

from gpt_scratch import data
from gpt_scratch.data import DataError, build_datasets, collate, prepare_datasets, read_text
from gpt_scratch.tokenizer import load_tiktoken

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


def stream(dd):
    """Concatenated token ids of train then validation."""
    return np.concatenate([dd[s][:]["input_ids"].numpy().reshape(-1) for s in ("train", "validation")])


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
    path = write(tmp_path / "t.txt", TEXT)
    block_size, vf = 8, 0.25
    dd = build_datasets(str(path), block_size, vf, cache_dir=tmp_path / "c")

    ids = load_tiktoken().encode_ordinary(TEXT)
    n_val = int(len(ids) * vf)
    train_ids, val_ids = ids[: len(ids) - n_val], ids[len(ids) - n_val :]
    assert dd["train"][:]["input_ids"].numpy().reshape(-1).tolist() == train_ids[: len(train_ids) // block_size * block_size]
    assert dd["validation"][:]["input_ids"].numpy().reshape(-1).tolist() == val_ids[: len(val_ids) // block_size * block_size]
    # Newlines survive as GPT-2 tokenizes them: "\n" = 198, "\n\n" = 628 (one token, not two 198s).
    assert 198 in ids and 628 in ids
    assert load_tiktoken().decode(ids) == TEXT


def test_split_sizes_and_columns(tmp_path):
    path = write(tmp_path / "t.txt", TEXT * 5)
    n = len(load_tiktoken().encode_ordinary(TEXT * 5))
    dd = build_datasets(path, 16, 0.1, cache_dir=tmp_path / "c")
    n_val = int(n * 0.1)
    assert set(dd) == {"train", "validation"}
    assert dd["train"].column_names == ["input_ids"]
    assert len(dd["train"]) == (n - n_val) // 16
    assert len(dd["validation"]) == n_val // 16
    assert dd["train"][0]["input_ids"].shape == (16,)


def test_dataloader_yields_long_batches(tmp_path):
    path = write(tmp_path / "t.txt", TEXT * 5)
    dd = build_datasets(path, 16, 0.1, cache_dir=tmp_path / "c")
    batch = next(iter(torch.utils.data.DataLoader(dd["train"], batch_size=3)))
    assert batch["input_ids"].dtype == torch.long and batch["input_ids"].shape == (3, 16)

    rows = [dd["train"][i] for i in range(3)]
    b = collate(rows)
    assert b["input_ids"].dtype == torch.long and b["input_ids"].shape == (3, 16)
    assert torch.equal(b["labels"], b["input_ids"]) and b["labels"].data_ptr() != b["input_ids"].data_ptr()
    assert torch.equal(collate([{"input_ids": [1, 2]}, {"input_ids": [3, 4]}])["input_ids"], torch.tensor([[1, 2], [3, 4]]))


# --- cache -------------------------------------------------------------------


def test_second_call_uses_cache(tmp_path, monkeypatch):
    path = write(tmp_path / "t.txt", TEXT * 3)
    cache = tmp_path / "c"
    first = build_datasets(path, 8, 0.2, cache_dir=cache)

    def boom():
        raise AssertionError("tokenized again despite the cache")

    monkeypatch.setattr(data, "load_tiktoken", boom)
    second = build_datasets(path, 8, 0.2, cache_dir=cache)
    assert np.array_equal(stream(first), stream(second))
    assert second["train"].format["type"] == "torch"
    # Only the finished entry remains; no temp folder left behind.
    assert [p.name for p in cache.iterdir()] == [data.cache_key([TEXT * 3], 8, 0.2)]
    # A different block size is a different key, so it must tokenize (and fails here on purpose).
    with pytest.raises(AssertionError, match="tokenized again"):
        build_datasets(path, 4, 0.2, cache_dir=cache)


def test_changed_text_changes_key(tmp_path):
    path = write(tmp_path / "t.txt", TEXT * 3)
    cache = tmp_path / "c"
    a = build_datasets(path, 8, 0.2, cache_dir=cache)
    write(path, TEXT * 3 + "More.\n")
    b = build_datasets(path, 8, 0.2, cache_dir=cache)
    assert len(list(cache.iterdir())) == 2
    assert not np.array_equal(stream(a), stream(b))


def test_interrupted_write_is_not_a_cache_hit(tmp_path, monkeypatch):
    path = write(tmp_path / "t.txt", TEXT * 3)
    cache = tmp_path / "c"

    def crash(self, *a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(data.DatasetDict, "save_to_disk", crash)
        with pytest.raises(KeyboardInterrupt):
            build_datasets(path, 8, 0.2, cache_dir=cache)
    assert list(cache.iterdir()) == []
    dd = build_datasets(path, 8, 0.2, cache_dir=cache)
    assert len(dd["train"]) > 0


def test_prepare_datasets_main_process_first(tmp_path):
    path = write(tmp_path / "t.txt", TEXT * 3)
    events = []

    class FakeAccelerator:
        @contextlib.contextmanager
        def main_process_first(self):
            events.append("enter")
            yield
            events.append("exit")

    dd = prepare_datasets(path, 8, 0.2, tmp_path / "c", FakeAccelerator())
    assert events == ["enter", "exit"] and len(dd["validation"]) > 0


# --- folder ------------------------------------------------------------------


def test_folder_of_txt_files(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    docs = {"b.txt": "Second doc.\n\nWith <|endoftext|> as plain text.\n", "a.txt": TEXT, "c.txt": ""}
    for name, text in docs.items():
        write(folder / name, text)
    write(folder / "notes.md", "not a .txt, ignored")
    (folder / "sub.txt").mkdir()  # a folder named .txt is ignored too

    enc = load_tiktoken()
    expected = enc.encode_ordinary(docs["a.txt"]) + [50256] + enc.encode_ordinary(docs["b.txt"])
    assert data.tokenize_documents(data.read_documents(folder)).tolist() == expected
    assert read_text(str(folder)) == docs["a.txt"] + "<|endoftext|>" + docs["b.txt"]

    dd = build_datasets(str(folder), 4, 0.25, cache_dir=tmp_path / "c")
    n_val = int(len(expected) * 0.25)
    assert stream(dd)[: len(dd["train"]) * 4].tolist() == expected[: len(dd["train"]) * 4]
    assert stream(dd)[len(dd["train"]) * 4 :].tolist() == expected[len(expected) - n_val :][: n_val // 4 * 4]


# --- errors ------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match=r"does not exist.*--data"):
        read_text(str(tmp_path / "nope.txt"))


def test_empty_file_and_folders(tmp_path):
    write(tmp_path / "empty.txt", "")
    with pytest.raises(DataError, match=r"empty.txt is empty"):
        read_text(str(tmp_path / "empty.txt"))
    (tmp_path / "d").mkdir()
    write(tmp_path / "d" / "x.md", "hello")
    with pytest.raises(DataError, match=r"no \.txt files"):
        read_text(str(tmp_path / "d"))
    write(tmp_path / "d" / "y.txt", "")
    with pytest.raises(DataError, match=r"all 1 \.txt files .* are empty"):
        read_text(str(tmp_path / "d"))


def test_non_utf8_names_file_and_offset(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    write(folder / "a.txt", "fine\n")
    (folder / "latin.txt").write_bytes("caf".encode() + b"\xe9 au lait\n")
    with pytest.raises(DataError) as e:
        build_datasets(folder, 4, cache_dir=tmp_path / "c")
    msg = str(e.value)
    assert "latin.txt" in msg and "offset 3" in msg and "0xe9" in msg and "UTF-8" in msg


def test_too_few_tokens_in_validation(tmp_path):
    path = write(tmp_path / "t.txt", TEXT * 5)
    n = len(load_tiktoken().encode_ordinary(TEXT * 5))
    n_val = int(n * 0.1)
    assert n - n_val >= 64 > n_val  # train has a block, validation does not
    with pytest.raises(DataError) as e:
        build_datasets(path, 64, 0.1, cache_dir=tmp_path / "c")
    msg = str(e.value)
    assert f"validation split has {n_val} tokens" in msg and "block_size=64" in msg
    assert "smaller block_size or more text" in msg
    assert not (tmp_path / "c").exists() or list((tmp_path / "c").iterdir()) == []


def test_too_few_tokens_in_train(tmp_path):
    path = write(tmp_path / "t.txt", "Hi there.\n")
    with pytest.raises(DataError, match=r"train split has \d+ tokens .* block_size=1024"):
        build_datasets(path, 1024, 0.1, cache_dir=tmp_path / "c")


@pytest.mark.parametrize("bs,vf", [(0, 0.1), (8, 0.0), (8, 1.0), (2.5, 0.1)])
def test_bad_arguments(tmp_path, bs, vf):
    path = write(tmp_path / "t.txt", TEXT)
    with pytest.raises(DataError):
        build_datasets(path, bs, vf, cache_dir=tmp_path / "c")


def test_url_without_network_says_pass_data():
    with pytest.raises(DataError, match=r"--data PATH"):
        read_text(closed_port_url())


def test_url_download_is_cached(user_cache):
    with serve({"x.txt": TEXT.encode()}) as base:
        assert read_text(f"{base}/x.txt") == TEXT
        assert data.download_path(f"{base}/x.txt").read_bytes() == TEXT.encode()
    # Server gone: the cached copy is used.
    assert read_text(f"{base}/x.txt") == TEXT


def test_http_error_is_reported():
    with serve({}) as base:
        with pytest.raises(DataError, match=r"HTTP 404.*--data"):
            read_text(f"{base}/missing.txt")


# --- default URL -------------------------------------------------------------


def test_default_url_uses_cached_file(shakespeare_path, monkeypatch):
    dest = data.download_path(data.DEFAULT_DATA_URL)
    dest.parent.mkdir(parents=True)
    shutil.copyfile(shakespeare_path, dest)

    def no_network(*a, **k):
        raise AssertionError("tried to download although the cache is valid")

    monkeypatch.setattr(data.urllib.request, "urlopen", no_network)
    text = read_text(None)
    assert len(text) == 1_115_394
    # Tiny Shakespeare is 338,025 GPT-2 tokens.
    assert len(data.tokenize_documents([text])) == 338_025


def test_shakespeare_splits(shakespeare_path, tmp_path):
    dd = build_datasets(shakespeare_path, 1024, 0.1, cache_dir=tmp_path / "c")
    n_val = int(338_025 * 0.1)
    assert len(dd["train"]) == (338_025 - n_val) // 1024
    assert len(dd["validation"]) == n_val // 1024


@pytest.fixture
def local_default(monkeypatch):
    """Point the default URL at a loopback server (no internet here) with a made-up file and its sha."""
    good = TEXT.encode()
    files = {"input.txt": good}
    with serve(files) as base:
        monkeypatch.setattr(data, "DEFAULT_DATA_URL", f"{base}/input.txt")
        monkeypatch.setattr(data, "DEFAULT_DATA_SHA256", hashlib.sha256(good).hexdigest())
        yield files


def test_wrong_sha_cached_default_is_redownloaded(local_default):
    dest = data.download_path(data.DEFAULT_DATA_URL)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"truncated")
    assert read_text(None) == TEXT
    assert dest.read_bytes() == TEXT.encode()


def test_wrong_sha_cached_default_refused_without_network(monkeypatch):
    url = closed_port_url()
    monkeypatch.setattr(data, "DEFAULT_DATA_URL", url)
    dest = data.download_path(url)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"truncated")
    with pytest.raises(DataError) as e:
        read_text(None)
    msg = str(e.value)
    assert "corrupt" in msg and data.DEFAULT_DATA_SHA256 in msg and "--data" in msg


def test_default_download_with_wrong_sha_is_refused(local_default):
    local_default["input.txt"] = b"tampered content\n"
    with pytest.raises(DataError, match=r"sha256 .* expected"):
        read_text(None)
    dest = data.download_path(data.DEFAULT_DATA_URL)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # no .part file left either


# --- any corpus datasets can read (--dataset) ---------------------------------

DOCS = ["First Citizen:\nBefore we proceed any further, hear me speak.\n\n", "All:\nSpeak, speak.\n",
        "", "First Citizen:\nYou are all resolved rather to die than to famish?\n\n\n"] * 30


def hf_stream(d):
    """Token ids of train then validation as one array (the blocks cover all but the tails)."""
    return np.concatenate([torch.stack([d[s][i]["input_ids"] for i in range(len(d[s]))]).numpy().reshape(-1)
                           for s in ("train", "validation")])


def expected_blocks(tokens, block_size, val_fraction=0.1):
    blocks = data.split_tokens(np.asarray(tokens, dtype=np.int32), block_size, val_fraction)
    return np.concatenate([blocks["train"].reshape(-1), blocks["validation"].reshape(-1)])


def docs_tokens(docs):
    enc = load_tiktoken()
    out = []
    for i, d in enumerate(docs):
        ids = enc.encode_ordinary(d) if d else []
        out += ([data.EOT_ID] if i and ids else []) + ids
    return out


def test_dataset_text_file_keeps_gpt2_tokens(tmp_path):
    # load_dataset("text") is line-based by default: newlines would vanish and tokens change
    path = write(tmp_path / "play.txt", TEXT * 20)
    d = data.build_hf_dataset(str(path), 8, cache_dir=str(tmp_path / "c"))
    want = expected_blocks(load_tiktoken().encode_ordinary(TEXT * 20), 8)
    assert np.array_equal(hf_stream(d), want)
    assert d["train"][0]["input_ids"].dtype == torch.long and d["train"][0]["input_ids"].shape == (8,)


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
    want = expected_blocks(docs_tokens(DOCS), 16)
    for src in ("c.parquet", "c.jsonl", "c.csv", "saved", "shards"):
        d = data.build_hf_dataset(str(tmp_path / src), 16, text_column="body", num_proc=2,
                                  cache_dir=str(tmp_path / f"cache-{src}"))
        assert np.array_equal(hf_stream(d), want), src  # (csv reads the empty documents as None: same tokens)


def test_dataset_second_build_reuses_the_caches(tmp_path, monkeypatch):
    import datasets

    datasets.Dataset.from_dict({"text": DOCS}).to_parquet(str(tmp_path / "c.parquet"))
    first = hf_stream(data.build_hf_dataset(str(tmp_path / "c.parquet"), 16, cache_dir=str(tmp_path / "c")))

    def no_tokenizing(*a, **k):
        raise AssertionError("tokenized again")

    def files():
        return sorted(str(p) for p in (tmp_path / "c").rglob("*") if p.is_file() and ".lock" not in p.name)

    before = files()
    monkeypatch.setattr(data, "_write_stream", no_tokenizing)
    again = data.build_hf_dataset(str(tmp_path / "c.parquet"), 16, cache_dir=str(tmp_path / "c"))
    assert np.array_equal(hf_stream(again), first)
    assert files() == before  # datasets' map found its cache: no new Arrow file


def test_dataset_errors_name_the_fix(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"body": DOCS}).to_parquet(str(tmp_path / "c.parquet"))
    with pytest.raises(DataError, match="no column 'text' .*body.*--text_column"):
        data.build_hf_dataset(str(tmp_path / "c.parquet"), 16, cache_dir=str(tmp_path / "c"))
    with pytest.raises(DataError, match="does not exist"):
        data.build_hf_dataset(str(tmp_path / "nope.parquet"), 16, cache_dir=str(tmp_path / "c"))
    with pytest.raises(DataError, match="block_size=4096"):
        data.build_hf_dataset(str(tmp_path / "c.parquet"), 4096, text_column="body", cache_dir=str(tmp_path / "c"))
    datasets.Dataset.from_dict({"n": [1, 2, 3]}).to_parquet(str(tmp_path / "n.parquet"))
    with pytest.raises(DataError, match="not text"):
        data.build_hf_dataset(str(tmp_path / "n.parquet"), 4, text_column="n", cache_dir=str(tmp_path / "c"))
    with pytest.raises(DataError, match="cannot load dataset 'no-such/corpus'"):  # offline (conftest)
        data.build_hf_dataset("no-such/corpus", 16, cache_dir=str(tmp_path / "c"))
