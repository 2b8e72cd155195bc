"""Text generation end to end: the generate command line (gpt_scratch.folder.generate.main) and transformers' pipeline."""

import io
import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import WITHOUT_GPT_SCRATCH
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

# Importing gpt_scratch registers its model types, so folders load without trust_remote_code.
from gpt_scratch import BigramConfig, BigramForCausalLM, GPTConfig, GPTForCausalLM, load_tokenizer, save_model_folder
from gpt_scratch.folder.model_folder import default_max_new_tokens
from gpt_scratch.folder.generate import DEFAULT_MAX_NEW_TOKENS, SAMPLE_SEPARATOR, main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCK = 64
EOT = 50256


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random GPT with GPT-2's vocabulary, saved as a complete model folder.

    Weights with std 0.5 so the text varies from token to token (GPT-2's 0.02 init
    predicts the same token everywhere and hides mistakes).
    """
    torch.manual_seed(0)
    model = GPTForCausalLM(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=BLOCK))
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.5)
    folder = tmp_path_factory.mktemp("gen") / "model"
    save_model_folder(model, folder)
    return str(folder)


@pytest.fixture(scope="module", autouse=True)
def tokenizer_loaded_once(model_dir):
    """Building GPT-2's tokenizer takes ~1 s and main() builds it on every call, so the
    in-process tests share one (the subprocess tests still load theirs for real)."""
    real = AutoTokenizer.from_pretrained
    shared = real(model_dir)

    def from_pretrained(path, *args, **kwargs):
        return shared if str(path) == model_dir else real(path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(AutoTokenizer, "from_pretrained", from_pretrained)
        yield


@pytest.fixture(scope="module")
def loaded(model_dir):
    return AutoModelForCausalLM.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)


def run(capsys, *argv, stdin=None):
    assert main(list(argv), stdin=stdin) == 0
    return capsys.readouterr().out


def greedy_text(loaded, prompt_ids, n, **kwargs):
    model, tok = loaded
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=n, do_sample=False, **kwargs)
    return tok.decode(out[0, len(prompt_ids):], skip_special_tokens=True)


# ---------------------------------------------------------------- sampling and determinism

def test_same_seed_same_text_other_seed_other_text(model_dir, capsys):
    args = ["--model", model_dir, "--prompt", "Hello", "--max-new-tokens", "20"]
    a = run(capsys, *args, "--seed", "1")
    b = run(capsys, *args, "--seed", "1")
    c = run(capsys, *args, "--seed", "2")
    assert a.startswith("Hello") and len(a) > len("Hello") + 20
    assert a == b
    assert a != c


def test_greedy_is_deterministic_and_equals_model_generate(model_dir, loaded, capsys):
    args = ["--model", model_dir, "--prompt", "Hello world", "--max-new-tokens", "15"]
    a = run(capsys, *args, "--greedy", "--seed", "1")
    b = run(capsys, *args, "--greedy", "--seed", "2")
    t0 = run(capsys, *args, "--temperature", "0")  # temperature 0 means greedy
    ids = loaded[1]("Hello world")["input_ids"]
    assert a == b == t0 == "Hello world" + greedy_text(loaded, ids, 15) + "\n"


def test_repetition_penalty_is_transformers_own(model_dir, loaded, capsys):
    """--repetition-penalty R is generate(repetition_penalty=R): the text a small model's greedy loop would repeat changes."""
    args = ["--model", model_dir, "--prompt", "Hello world", "--max-new-tokens", "30", "--greedy"]
    ids = loaded[1]("Hello world")["input_ids"]
    penalised = run(capsys, *args, "--repetition-penalty", "1.3")
    assert penalised == "Hello world" + greedy_text(loaded, ids, 30, repetition_penalty=1.3) + "\n"
    assert penalised != run(capsys, *args)


def test_num_samples_are_separated_and_differ(model_dir, capsys):
    out = run(capsys, "--model", model_dir, "--prompt", "Hi", "--max-new-tokens", "10", "--num-samples", "3")
    samples = out.split(SAMPLE_SEPARATOR + "\n")
    assert len(samples) == 3 and all(s.startswith("Hi") for s in samples)
    assert len(set(samples)) == 3


def test_default_max_new_tokens_fits_block_size(model_dir, capsys, monkeypatch):
    seen = {}
    real = GPTForCausalLM.generate

    def spy(self, *a, **kw):
        seen["max_new_tokens"] = kw["max_new_tokens"]
        return real(self, *a, **kw)

    monkeypatch.setattr(GPTForCausalLM, "generate", spy)
    run(capsys, "--model", model_dir, "--prompt", "Hello", "--greedy")
    assert DEFAULT_MAX_NEW_TOKENS > BLOCK and seen["max_new_tokens"] == BLOCK - 1  # "Hello" is one token


def test_output_streams_while_generating(model_dir, monkeypatch):
    """Text reaches stdout between forward passes, not all at the end."""
    calls = {"n": 0}
    real_forward = GPTForCausalLM.forward

    def counting_forward(self, *a, **kw):
        calls["n"] += 1
        return real_forward(self, *a, **kw)

    class Spy(io.StringIO):
        writes = []

        def write(self, s):
            if s:
                self.writes.append((calls["n"], s))
            return super().write(s)

    monkeypatch.setattr(GPTForCausalLM, "forward", counting_forward)
    spy = Spy()
    monkeypatch.setattr(sys, "stdout", spy)
    main(["--model", model_dir, "--prompt", "Hello", "--max-new-tokens", "40", "--greedy"])
    total = calls["n"]
    streamed = [n for n, s in Spy.writes[1:] if s.strip()]  # after the prompt echo
    assert total == 40
    assert len(set(streamed)) >= 3, Spy.writes
    assert min(streamed) < total  # something was printed before the last forward pass


def test_bigram_folder_generates_too(tmp_path, capsys):
    torch.manual_seed(0)
    bigram = BigramForCausalLM(BigramConfig(n_embd=8, block_size=32, tie_word_embeddings=False)).eval()
    with torch.no_grad():
        for p in bigram.parameters():
            p.normal_(0.0, 0.5)
    save_model_folder(bigram, tmp_path / "bigram")
    out = run(capsys, "--model", str(tmp_path / "bigram"), "--prompt", "", "--greedy")
    with torch.no_grad():
        ref = bigram.generate(torch.tensor([[EOT]]), max_new_tokens=31, do_sample=False)  # default fits block 32
    assert out == load_tokenizer().decode(ref[0, 1:], skip_special_tokens=True) + "\n"


# ---------------------------------------------------------------- where the prompt comes from

def test_prompt_from_file_and_stdin(model_dir, tmp_path, capsys):
    common = ["--model", model_dir, "--max-new-tokens", "12", "--greedy"]
    ref = run(capsys, *common, "--prompt", "Once upon a time")
    path = tmp_path / "prompt.txt"
    path.write_text("Once upon a time\n", encoding="utf-8")  # the trailing newline is dropped
    assert run(capsys, *common, "--prompt-file", str(path)) == ref
    assert run(capsys, *common, "--prompt", "-", stdin=io.StringIO("Once upon a time\n")) == ref
    assert run(capsys, *common, stdin=io.StringIO("Once upon a time")) == ref  # no prompt, stdin not a tty


def test_empty_prompt_starts_from_endoftext(model_dir, loaded, capsys):
    out = run(capsys, "--model", model_dir, "--prompt", "", "--max-new-tokens", "12", "--greedy")
    assert out == greedy_text(loaded, [EOT], 12) + "\n"


# ---------------------------------------------------------------- bad arguments: exit 2, before any model load

def _bad_cases(model_dir, tmp_path):
    no_config = tmp_path / "empty"
    no_config.mkdir()
    no_weights = tmp_path / "config_only"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps({"model_type": "gpt_scratch"}))
    m = ["--model", model_dir]
    return [
        (m + ["--max-new-tokens", "0"], "--max-new-tokens: must be a positive integer, got 0"),
        (m + ["--max-new-tokens", "-5"], "must be a positive integer, got -5"),
        (m + ["--temperature", "-0.5"], "--temperature: must be a number >= 0"),
        (m + ["--temperature", "nan"], "--temperature: must be a number >= 0"),
        (m + ["--top-p", "0"], "--top-p: must be in (0, 1]"),
        (m + ["--top-p", "1.5"], "--top-p: must be in (0, 1]"),
        (m + ["--top-k", "-1"], "--top-k: must be >= 0"),
        (m + ["--num-samples", "0"], "--num-samples: must be a positive integer"),
        (["--model", str(tmp_path / "nope")], "does not exist; make one by training"),
        (["--model", str(no_config)], "has no config.json"),
        (["--model", str(no_weights)], "no model.safetensors"),
        (m + ["--prompt", "Hello", "--max-new-tokens", "64"], "at most 63 new tokens are allowed"),
        (m + ["--prompt", "Hello" * 80], "shorten it to at most 63 tokens"),
        (m + ["--prompt-file", str(tmp_path / "missing.txt")], "cannot read --prompt-file"),
        (m + ["--prompt", "a", "--prompt-file", "b"], "not allowed with argument"),
    ]


def test_bad_arguments_exit_2_with_message_before_loading(model_dir, tmp_path, capsys, monkeypatch):
    def no_load(*a, **kw):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_load)
    cases = _bad_cases(model_dir, tmp_path)
    if not torch.cuda.is_available():
        cases.append((["--model", model_dir, "--device", "cuda"], "no CUDA GPU"))
    for argv, message in cases:
        with pytest.raises(SystemExit) as exc:
            main(argv, stdin=io.StringIO(""))
        err = capsys.readouterr().err
        assert exc.value.code == 2, argv
        assert message in err, (argv, err)


def test_help_documents_the_empty_prompt_policy(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "<|endoftext|>" in capsys.readouterr().out


# ---------------------------------------------------------------- transformers' text-generation pipeline

@pytest.fixture(scope="module")
def generator(model_dir):
    return pipeline("text-generation", model=model_dir)


def test_folder_asks_for_tokens_that_fit(model_dir, generator):
    saved = json.loads(open(os.path.join(model_dir, "generation_config.json")).read())
    assert saved["max_new_tokens"] == default_max_new_tokens(BLOCK) == BLOCK // 2
    # The pipeline's own default (256 new tokens) would exceed block_size 64.
    out = generator("Hello")[0]["generated_text"]
    assert out.startswith("Hello")


def test_pipeline_greedy_equals_model_generate(generator, loaded):
    out = generator("The meaning of life is", do_sample=False, max_new_tokens=12)[0]["generated_text"]
    ids = loaded[1]("The meaning of life is")["input_ids"]
    assert out == "The meaning of life is" + greedy_text(loaded, ids, 12)


def test_pipeline_batch_of_two_matches_one_by_one(generator):
    prompts = ["Hello", "The quick brown fox jumps over"]  # different lengths: left padding is exercised
    kw = dict(do_sample=False, max_new_tokens=10)
    batched = generator(prompts, batch_size=2, **kw)
    alone = [generator(p, **kw) for p in prompts]
    assert [b[0]["generated_text"] for b in batched] == [a[0]["generated_text"] for a in alone]


# ---------------------------------------------------------------- the real script, and a pipeline without gpt_scratch

SCRIPT_ARGS = ["--prompt", "Hello", "--max-new-tokens", "10", "--seed", "5"]
REMOTE_PROMPT = "The meaning of life is"

REMOTE_PIPELINE = WITHOUT_GPT_SCRATCH + textwrap.dedent(
    """
    from transformers import pipeline
    gen = pipeline("text-generation", model=sys.argv[1], trust_remote_code=True)
    assert type(gen.model).__module__.startswith("transformers_modules"), type(gen.model).__module__
    out = gen(sys.argv[2], do_sample=False, max_new_tokens=12)
    print(json.dumps(out[0]["generated_text"]))
    """
)


@pytest.fixture(scope="module", autouse=True)
def subprocess_runs(model_dir, tmp_path_factory):
    """Starts both subprocesses before this module's other tests, so their ~10 s of
    imports each overlap the in-process tests; the last two tests collect them."""
    tmp = tmp_path_factory.mktemp("runs")
    (tmp / "pipe.py").write_text(REMOTE_PIPELINE)
    env = dict(os.environ, HF_HOME=str(tmp / "hf_home"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    script = [sys.executable, os.path.join(REPO, "scripts", "generate.py"), "--model", model_dir, *SCRIPT_ARGS]
    isolated = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    remote = [sys.executable, "-I", str(tmp / "pipe.py"), model_dir, REMOTE_PROMPT]
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs = {
        "script": subprocess.Popen(script, cwd=REPO, env=env, **pipes),
        "remote": subprocess.Popen(remote, cwd=tmp, env=isolated, **pipes),
    }
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def collect(proc):
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    return stdout


def test_script_runs_end_to_end(model_dir, subprocess_runs, capsys):
    assert collect(subprocess_runs["script"]) == run(capsys, "--model", model_dir, *SCRIPT_ARGS)


def test_pipeline_with_remote_code_without_gpt_scratch(subprocess_runs, generator):
    got = json.loads(collect(subprocess_runs["remote"]).strip().splitlines()[-1])
    assert got == generator(REMOTE_PROMPT, do_sample=False, max_new_tokens=12)[0]["generated_text"]


def test_readme_generate_commands_run_as_printed(tmp_path, monkeypatch, capsys):
    """README's Generate block, word for word, in a folder holding out/shakespeare/model."""
    from readme_commands import readme_commands

    torch.manual_seed(0)
    save_model_folder(GPTForCausalLM(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=128)),
                      tmp_path / "out" / "shakespeare" / "model")
    monkeypatch.chdir(tmp_path)
    commands = readme_commands("Generate")
    assert len(commands) == 4
    for argv, stdin in commands:
        assert argv[:2] == ["python", "scripts/generate.py"], argv
        out = run(capsys, *argv[2:], stdin=io.StringIO(stdin or ""))
        prompt = stdin[:-1] if stdin else argv[argv.index("--prompt") + 1]
        assert out.startswith(prompt) and len(out) > len(prompt) + 10, (argv, out)
