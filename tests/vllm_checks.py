"""vLLM on CPU, offline: the greedy tokens vLLM generates for a folder, by either of its model implementations.

Run in the vLLM environment (extra_envs.py) as
`python -I vllm_checks.py SPEC.json`, SPEC = {"prompts": [[ids], ...], "new_tokens": N,
"runs": {name: {"model": folder, ...other LLM() arguments}}}. Prints {name: [[new ids], ...]}
as the last line. vLLM starts worker processes that import this file again: everything
happens under `if __name__ == "__main__":`.
"""

import gc
import json
import sys


def generate_all(spec):
    from vllm import LLM, SamplingParams

    greedy = SamplingParams(temperature=0.0, max_tokens=spec["new_tokens"], ignore_eos=True)
    prompts = [{"prompt_token_ids": ids} for ids in spec["prompts"]]
    out = {}
    for name, kwargs in spec["runs"].items():
        # float32 as the folder holds it (vLLM would otherwise compute in bf16 on CPU)
        llm = LLM(dtype="float32", seed=0, **kwargs)
        out[name] = [list(r.outputs[0].token_ids) for r in llm.generate(prompts, greedy, use_tqdm=False)]
        del llm
        gc.collect()
    return out


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(json.dumps(generate_all(json.load(f))))
