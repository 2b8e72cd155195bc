"""The model card: rendered from facts recorded when they were true, never guessed back.

Training writes `run_summary.json` (what data it read, the machine, how it ran, the
final figures) and `run_config.json` (its settings) into the model folder; the card
is `model_card.md` (a Jinja template, through huggingface_hub's ModelCard) filled
from them and from config.json and the weights' header. A folder without them (a
conversion, a model saved by hand) gets "not recorded" where a fact is missing.
The usage snippets load the path or repo id the caller names: the real output
folder after training, the repo id on a push.
"""

import json
import math
import os

from ..errors import ModelFolderError

CARD_FILE, SUMMARY_FILE, SETTINGS_FILE, LOSS_PLOT = "README.md", "run_summary.json", "run_config.json", "loss.png"
TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_card.md")
_PRIVATE = ("token", "secret", "password", "key", "auth", "dir", "path", "data", "dataset", "init_from", "cpu")


def _read(folder, name):
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        raise ModelFolderError(f"{path} is unreadable ({e}); delete it or re-save the folder") from None
    if not isinstance(value, dict):
        raise ModelFolderError(f"{path} holds a JSON {type(value).__name__}, not an object; delete it or re-save the "
                               "folder")
    return value


def count_parameters(folder, tied):
    """Parameters in the weights file, from its header (no tensor loaded); a tied head counted once."""
    from safetensors import safe_open

    path = os.path.join(folder, "model.safetensors")
    if not os.path.isfile(path):
        return None
    with safe_open(path, "pt") as f:
        keys = set(f.keys())
        return sum(math.prod(f.get_slice(k).get_shape()) for k in keys
                   if not (tied and k == "lm_head.weight" and "transformer.wte.weight" in keys))


def _shape_rows(config, n_params):
    gpt = config.get("model_type") == "gpt_scratch"
    tied = config.get("tie_word_embeddings", True)
    rows = [("Architecture", f"GPT-2 decoder-only transformer ({'tied' if tied else 'separate'} input/output "
             "embedding)" if gpt else "bigram: the next token from the current token only")]
    for label, key, unit in (("Layers", "n_layer", ""), ("Attention heads", "n_head", ""), ("Width (n_embd)", "n_embd", ""),
                             ("Context (block_size)", "block_size", " tokens"),
                             ("Vocabulary", "vocab_size", " (GPT-2 byte-level BPE)")):
        if key in config:
            rows.append((label, f"{config[key]:,}{unit}"))
    rows.append(("Parameters", "not recorded" if n_params is None else
                 f"{n_params:,}" + (" (tied embedding counted once)" if tied else "")))
    return rows


def render_model_card(folder, where=None):
    """The card's text (YAML metadata + markdown) for `folder`; its snippets load `where` (default: the folder)."""
    from huggingface_hub import ModelCard, ModelCardData
    from huggingface_hub.repocard_data import EvalResult

    config = _read(folder, "config.json")
    facts, settings = _read(folder, SUMMARY_FILE), _read(folder, SETTINGS_FILE)
    facts = {k: facts.get(k) for k in ("data", "dataset_id", "language", "init_from", "steps", "tokens", "val_loss",
                                       "val_bpb", "val_perplexity", "hardware", "strategy", "precision")}
    where = os.fspath(where or os.path.abspath(folder)).replace("\\", "/")
    gpt = config.get("model_type") == "gpt_scratch"
    evals = None
    if facts["val_loss"] is not None:
        common = dict(task_type="text-generation", dataset_type=facts["dataset_id"] or "text",
                      dataset_name=facts["dataset_id"] or "training text", dataset_split="validation")
        evals = [EvalResult(metric_type=t, metric_name=n, metric_value=facts[k], **common) for t, n, k in (
            ("loss", "Validation loss (nats/token)", "val_loss"), ("bits_per_byte", "Validation bits per byte", "val_bpb"),
            ("perplexity", "Validation perplexity", "val_perplexity"))]
    parts = where.rstrip("/").split("/")
    name = parts[-2] if parts[-1] == "model" and len(parts) > 1 else parts[-1]  # out/shakespeare/model: shakespeare
    data = ModelCardData(library_name="transformers", pipeline_tag="text-generation", license="mit",
                         tags=["gpt2", "gpt_scratch", "text-generation", "custom_code"] if gpt else
                         ["gpt_scratch", "text-generation", "custom_code"],
                         datasets=[facts["dataset_id"]] if facts["dataset_id"] else None,
                         language=[facts["language"]] if facts["language"] else None,
                         base_model=facts["init_from"] if facts["init_from"] and not os.path.isabs(facts["init_from"])
                         and facts["init_from"].count("/") == 1 else None,
                         model_name=name, eval_results=evals)
    block = config.get("block_size", 1024)
    code = sorted({ref.rsplit(".", 1)[0] + ".py" for ref in (config.get("auto_map") or {}).values()})
    card = ModelCard.from_template(
        data, template_path=TEMPLATE, model_name=name, facts=facts, where=where, block_size=block,
        kind="A small GPT-2-architecture language model" if gpt else "A bigram baseline language model",
        code_files=", ".join(f"`{c}`" for c in code) or "none",
        shape_rows=_shape_rows(config, count_parameters(folder, config.get("tie_word_embeddings", True))),
        settings=[(k, v) for k, v in settings.items() if isinstance(v, (bool, int, float, str)) and v != ""
                  and not any(w in k.lower() for w in _PRIVATE)],
        has_plot=os.path.isfile(os.path.join(folder, LOSS_PLOT)), new_tokens=max(1, min(50, block // 2)))
    return str(card)


def write_model_card(folder, where=None):
    """Write `folder/README.md` (inside a staging folder: the folder is published as a whole)."""
    path = os.path.join(folder, CARD_FILE)
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_model_card(folder, where))
    return path
