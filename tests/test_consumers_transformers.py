"""A folder gpt_scratch wrote, loaded by its own code under the oldest and the newest supported transformers.

The oldest (extra_envs.TRANSFORMERS_FLOOR) runs in an environment of its own, built once and
cached (extra_envs.py), where gpt_scratch cannot be imported: only the folder's remote code
loads the model. remote_code_checks.py runs there and in this environment; the greedy tokens
of every way of generating (CPU decoding cache, static cache, DynamicCache, no cache, a
left-padded batch, the pipeline) must equal those gpt_scratch itself generates here.
"""

import json
import os
import subprocess
import sys

import torch
from transformers import AutoTokenizer

from conftest import WITHOUT_GPT_SCRATCH, built_or_skip
from extra_envs import TRANSFORMERS_FLOOR, clean_env, python_of
from gpt_scratch import GPTForCausalLM
from remote_code_checks import NEW_TOKENS, PROMPTS

TESTS = os.path.dirname(os.path.abspath(__file__))


def run_checks(python, folders, tmp_path, name):
    """remote_code_checks.main on each folder, in `python`'s environment with gpt_scratch made unimportable."""
    runner = tmp_path / "run_checks.py"
    runner.write_text(WITHOUT_GPT_SCRATCH + f"sys.path.insert(0, {TESTS!r})\nimport remote_code_checks\n"
                      "print(json.dumps([remote_code_checks.main(f) for f in sys.argv[1:]]))\n")
    env = clean_env(HF_HOME=str(tmp_path / f"hf_home_{name}"))
    done = subprocess.run([python, "-I", str(runner), *folders], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"{name}: {done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def reference_tokens(folder):
    """The greedy tokens gpt_scratch generates for PROMPTS in this environment, each prompt alone."""
    model = GPTForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        return [model.generate(**tok(p, return_tensors="pt"), do_sample=False, max_new_tokens=NEW_TOKENS,
                               pad_token_id=tok.eos_token_id)[0].tolist() for p in PROMPTS]


def test_folder_runs_by_remote_code_on_the_oldest_and_newest_transformers(trained_model_dir, wide_model_dir, tmp_path):
    folders = [trained_model_dir, wide_model_dir]
    for folder in folders:
        auto_map = json.load(open(os.path.join(folder, "config.json")))["auto_map"]
        assert auto_map == {"AutoConfig": "configuration_gpt.GPTConfig", "AutoModel": "modeling_gpt.GPTModel",
                            "AutoModelForCausalLM": "modeling_gpt.GPTForCausalLM"}
    recorded = [reference_tokens(folder) for folder in folders]
    assert len({t for row in recorded[1] for t in row[-NEW_TOKENS:]}) > NEW_TOKENS, "wide weights too tame"

    floor = run_checks(built_or_skip(python_of, "transformers-floor"), folders, tmp_path, "floor")
    newest = run_checks(sys.executable, folders, tmp_path, "newest")
    assert floor[0]["transformers"] == TRANSFORMERS_FLOOR
    import transformers

    assert newest[0]["transformers"] == transformers.__version__
    for run in (floor, newest):
        for result, tokens, folder in zip(run, recorded, folders):
            where = f"transformers {result['transformers']}, {os.path.basename(os.path.dirname(folder))}"
            for way in ("default", "static", "dynamic", "no_cache"):
                assert result[way] == tokens, (where, way)
            # the left-padded batch continues each prompt as it does alone
            assert result["left_padded_new_tokens"] == [t[-NEW_TOKENS:] for t in tokens], where
            assert result["pipeline"] == result["decoded_default"], where
            assert result["auto_model_class"] == "GPTModel" and result["auto_model_rel_diff"] < 1e-6, where
            for key in ("eager_rel_diff", "flex_attention_rel_diff", "checkpointing_rel_diff"):
                assert isinstance(result[key], float) and result[key] < 1e-4, (where, key, result[key])
