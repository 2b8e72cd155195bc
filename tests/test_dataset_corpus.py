"""--dataset: a parquet corpus trains, and peak RSS does not grow with the corpus (100x tiny Shakespeare)."""

import json
import os
import subprocess
import sys

import numpy as np

from gpt_scratch.train import main as train_main

from test_training import _fresh_accelerate_state, child_env, corpus, records, tiny_args  # noqa: F401  (fixtures)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_SHAKESPEARE_BYTES = 1_115_394

MEASURE = """\
import json, resource, sys
from gpt_scratch.train import main as train_main
train_main(sys.argv[1:])
print("RSS " + json.dumps({"self_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                           "tokenizer_workers_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def synthetic_parquet(path, n_bytes, seed=0):
    """Made-up documents of ~1.5 kB written in row groups of 1,000 (never the whole corpus in memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    syll = np.array(["ka", "lo", "mi", "ren", "tor", "vu", "sel", "an", "dre", "po", "qui", "zen"])
    words = np.array(["".join(rng.choice(syll, rng.integers(1, 4))) for _ in range(3000)])
    writer = pq.ParquetWriter(str(path), pa.schema([("text", pa.string())]))
    written = 0
    while written < n_bytes:
        docs = [" ".join(words[row]) + ".\n" for row in rng.integers(0, len(words), size=(1000, 250))]
        writer.write_table(pa.table({"text": docs}))
        written += sum(map(len, docs))
    writer.close()
    return written


def test_parquet_corpus_trains(tmp_path):
    corpus = tmp_path / "corpus.parquet"
    synthetic_parquet(corpus, 300_000)
    out = tmp_path / "run"
    train_main(tiny_args(None, out, dataset=str(corpus), max_steps=20, learning_rate=1e-2, eval_interval=10,
                            save_interval=0, dropout=0.0))
    losses = [r["train_loss"] for r in records(out) if "train_loss" in r]
    assert len(losses) == 20 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 1.0
    assert (out / "model" / "model.safetensors").is_file()


def peak_rss(tmp_path, name, n_bytes):
    corpus = tmp_path / f"{name}.parquet"
    synthetic_parquet(corpus, n_bytes)
    argv = ["--dataset", str(corpus), "--out_dir", str(tmp_path / f"out-{name}"), "--cache_dir",
            str(tmp_path / f"cache-{name}"), "--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--block_size", "64",
            "--batch_size", "8", "--max_steps", "10", "--eval_interval", "0", "--eval_steps", "4", "--save_interval", "0",
            "--sample_tokens", "0", "--num_proc", "2"]
    p = subprocess.run([sys.executable, "-c", MEASURE] + argv, cwd=REPO, env=child_env(), capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    line = [l for l in p.stdout.splitlines() if l.startswith("RSS ")][-1]
    return json.loads(line[4:])


def test_peak_rss_does_not_grow_with_the_corpus(tmp_path):
    small = peak_rss(tmp_path, "tiny", TINY_SHAKESPEARE_BYTES)
    big = peak_rss(tmp_path, "100x", 100 * TINY_SHAKESPEARE_BYTES)
    print(f"\npeak RSS of the training process (tokenizing, packing and 10 steps, caches cold): "
          f"{small['self_mib']:.0f} MiB on a tiny-Shakespeare-sized corpus (1.1 MB), {big['self_mib']:.0f} MiB on "
          f"100x that (111 MB): {big['self_mib'] / small['self_mib'] - 1:+.1%}; tokenizer workers' peak "
          f"{small['tokenizer_workers_mib']:.0f} / {big['tokenizer_workers_mib']:.0f} MiB")
    assert big["self_mib"] <= 1.15 * small["self_mib"]


def test_readme_own_data_commands_run_as_printed(tmp_path, corpus):  # noqa: F811
    """The README's "Your own data" lines, with configs/shakespeare.yaml unchanged (steps and size shrunk)."""
    import shutil

    import datasets

    from readme_commands import TINY, readme_commands, workdir

    work = workdir(tmp_path)
    folder = work / "path" / "to" / "text-folder"
    folder.mkdir(parents=True)
    text = open(corpus).read()
    (folder / "a.txt").write_text(text[: len(text) // 2])
    (folder / "b.txt").write_text(text[len(text) // 2:])
    datasets.Dataset.from_dict({"text": text.split("\n\n")}).to_parquet(str(work / "path" / "to" / "corpus.parquet"))
    env = dict(child_env(), GPT_SCRATCH_CACHE=str(tmp_path / "cache"), HF_HOME=str(tmp_path / "hf"))
    (text_run, _), (parquet_run, _), (hub_run, _) = readme_commands("Your own data")
    for argv, want in ((text_run, "a folder of 2 text files, `text-folder/`"),
                       (parquet_run, "a local parquet file, `corpus.parquet`, column `text`")):
        shutil.rmtree(work / "out", ignore_errors=True)
        p = subprocess.run([sys.executable] + argv[1:] + TINY, cwd=work, env=env, capture_output=True, text=True,
                           timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
        summary = json.load(open(work / "out" / "shakespeare" / "model" / "run_summary.json"))
        assert summary["data"].startswith(want) and summary["steps"] == 2
    # the Hub dataset needs the network: offline it stops with the reason and the fix
    p = subprocess.run([sys.executable] + hub_run[1:] + TINY, cwd=work, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 2 and "cannot load dataset 'wikitext'" in p.stderr and "offline" in p.stderr, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
