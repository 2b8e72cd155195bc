"""Sharing a model folder on the Hugging Face Hub: a model card built from the run's files, and a safe push.

    python scripts/push_to_hub.py --model out/shakespeare/model --repo-id you/gpt-shakespeare

``write_model_card`` writes ``README.md`` from what is in the folder (config.json,
model.safetensors, metrics.jsonl, run_config.json, loss.png); a number that is not
in those files is written as "not recorded", never guessed.

``push_to_hub`` checks the folder, the repo id and the token before any network
call, then uploads an allowlist of files in one commit: weights, configs, the
remote-code files named by ``auto_map``, tokenizer files, a freshly rendered card
and the loss plot. Checkpoints, optimizer state, logs, metrics and anything else
in the folder stay local. The card is refreshed in memory, so the local folder
is never modified by a push, failed or not.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys

from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard_data import EvalResult

from . import errors
from .errors import ModelFolderError, run_cli
from .model_folder import CONFIG_FILE, MODEL_FILES, TOKENIZER_FILES, WEIGHTS_FILE

CARD_FILE = "README.md"
LOSS_PLOT = "loss.png"
METRICS_FILE = "metrics.jsonl"
RUN_CONFIG_FILE = "run_config.json"
REQUIRED_FILES = (CONFIG_FILE, WEIGHTS_FILE)
# A push uploads MODEL_FILES + TOKENIZER_FILES (what AutoModelForCausalLM + AutoTokenizer need) and the remote code.
NOT_RECORDED = "not recorded"
TAGS = ["gpt2", "gpt_scratch", "text-generation", "custom_code"]
SHAKESPEARE_ID = "tiny_shakespeare"
_HOW_TO_MAKE_A_FOLDER = (
    "make one with gpt_scratch.save_model_folder(model, DIR) (training writes one too) "
    "or model.save_pretrained(DIR)"
)


HubError = errors.HubError  # a push the Hub refused or could not receive: exit 1


class HubInputError(HubError, ModelFolderError):
    """Bad input (folder, repo id, token), found before anything is sent: exit 2.

    Also a HubError, so `except HubError` still catches every failed push.
    """

    exit_code = 2


LOGIN_HINT = "`hf auth login`"  # the installed huggingface_hub's CLI is `hf`; it has no `huggingface-cli`
HARDWARE_PREFIX = "- Hardware: "
# Settings the card's hardware line says better: `cpu | False` read as "no CPU" on a CPU run.
_HARDWARE_SETTINGS = ("cpu", "cpu_threads")


# ---------------------------------------------------------------------------
# Reading the run's files


def _read_json(path):
    """A JSON object from `path`; HubInputError naming the file when it is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise HubInputError(f"{path} is not valid JSON ({e}); fix or delete it, or re-save the folder") from None
    except OSError as e:
        raise HubInputError(f"cannot read {path}: {e}") from None
    if not isinstance(value, dict):
        raise HubInputError(f"{path} holds a JSON {type(value).__name__}, not an object; fix or delete it, "
                            "or re-save the folder")
    return value


def read_metrics(path):
    """Records of a metrics.jsonl file, in order; [] when the file is absent.

    A line that does not parse (a run killed mid-write) is skipped rather than
    failing the card: the card then reports the last complete record.
    """
    if path is None or not os.path.isfile(path):
        return []
    records = []
    # errors="replace": a damaged byte spoils its line only, which then does not parse and is skipped
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
    return records


def _is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def summarize_metrics(records):
    """The numbers the card reports, each None when the file does not hold it.

    Validation numbers come from the LAST record holding "val_loss"; steps from
    the last record holding "step"; tokens from the last train record (the
    training loop stores cumulative tokens seen there).
    """
    out = {"steps": None, "tokens": None, "val_loss": None, "val_perplexity": None, "val_step": None}
    for rec in records:
        if _is_number(rec.get("step")):
            out["steps"] = int(rec["step"])
        if "train_loss" in rec:
            out["tokens"] = int(rec["tokens"]) if _is_number(rec.get("tokens")) else None
        if _is_number(rec.get("val_loss")):
            out["val_loss"] = float(rec["val_loss"])
            ppl = rec.get("val_perplexity")
            # exp(loss) is what the training loop records; derive it only if that field is missing.
            out["val_perplexity"] = float(ppl) if _is_number(ppl) else math.exp(out["val_loss"])
            out["val_step"] = int(rec["step"]) if _is_number(rec.get("step")) else None
    return out


def count_parameters(safetensors_path, tie_word_embeddings=True):
    """Parameters stored in a safetensors file, read from its header (no tensor is loaded).

    save_pretrained stores a tied embedding once; if a file holds both halves of
    the tie anyway, the output head is not counted a second time.
    """
    from safetensors import SafetensorError, safe_open

    total = 0
    try:
        with safe_open(safetensors_path, "pt") as f:
            keys = set(f.keys())
            for key in keys:
                if tie_word_embeddings and key == "lm_head.weight" and "transformer.wte.weight" in keys:
                    continue
                total += math.prod(f.get_slice(key).get_shape())
    except (SafetensorError, OSError) as e:
        raise HubInputError(f"{safetensors_path} is not a complete safetensors file ({e}); copy it again or "
                            "re-save the model folder") from None
    return total


def _uses_shakespeare(data):
    # None is the training loop's default, tiny Shakespeare (its default URL names it too).
    return data is None or "shakespeare" in str(data).lower()


def _data_description(run_config):
    """(markdown text, model-index dataset type, dataset name) for the training data."""
    if run_config is None or "data" not in run_config:
        return NOT_RECORDED, "text", NOT_RECORDED
    data = run_config["data"]
    text = "" if data is None else str(data)
    is_url = text.startswith(("http://", "https://"))
    if _uses_shakespeare(data):
        source = f" from <{text}>" if is_url else ""
        return f"tiny Shakespeare{source} (about 1 MB of Shakespeare's plays)", SHAKESPEARE_ID, "tiny Shakespeare"
    if is_url:
        return f"<{text}>", "text", text.rstrip("/").rsplit("/", 1)[-1] or text
    # Only the file name: an absolute local path would publish the trainer's directory layout.
    name = os.path.basename(os.path.normpath(text)) or text
    return f"a local text corpus (`{name}`)", "text", name


_SECRET_WORDS = ("token", "secret", "password", "key", "auth")


def _run_settings(run_config):
    """Scalar training settings worth publishing: numbers and flags, and strings that are not paths."""
    rows = []
    for key, value in (run_config or {}).items():
        if key == "data" or key in _HARDWARE_SETTINGS or any(w in key.lower() for w in _SECRET_WORDS):
            continue
        if isinstance(value, bool) or _is_number(value):
            rows.append((key, value))
        elif isinstance(value, str) and value and not re.search(r"[/\\]", value) and len(value) <= 80:
            rows.append((key, value))
    return rows


def _precision(run_config):
    mp = (run_config or {}).get("mixed_precision")
    return NOT_RECORDED if mp is None else {"no": "fp32"}.get(mp, f"{mp} mixed precision")


def _fmt_int(n):
    return NOT_RECORDED if n is None else f"{n:,}"


# ---------------------------------------------------------------------------
# The card


def describe_machine(use_gpu=None):
    """This machine's accelerator or CPU in a few words, e.g. "CPU: AMD EPYC 7B13, 2 cores"."""
    import platform

    import torch

    if use_gpu is None:
        use_gpu = torch.cuda.is_available()
    if use_gpu and torch.cuda.is_available():
        n = torch.cuda.device_count()
        return f"{n} x {torch.cuda.get_device_name(0)} (GPU)"
    name = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown model"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU: {name}, {cores} cores"


def _hardware_from_card(model_dir):
    """The hardware line of the card already in ``model_dir`` (written by training on the machine that trained)."""
    path = os.path.join(model_dir, CARD_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(HARDWARE_PREFIX):
                    return line[len(HARDWARE_PREFIX):].strip() or None
    except OSError:
        return None
    return None


def _published_path(model_dir):
    """The folder a user loads: training renders the card in a staging "model.tmp" that becomes "model"."""
    path = os.path.normpath(model_dir)
    return path[: -len(".tmp")] if path.endswith(".tmp") else path


def render_model_card(model_dir, metrics_path=None, run_config=None, repo_id=None, hardware=None) -> str:
    """The model card text (YAML metadata + markdown) for ``model_dir``; writes nothing.

    ``metrics_path`` defaults to ``model_dir/metrics.jsonl`` and ``run_config``
    (a dict, or a path to a JSON file) to ``model_dir/run_config.json``.
    ``hardware`` (what trained it) defaults to the hardware line of the card
    already in the folder, which training writes on the machine that trained;
    else "not recorded". The usage snippets load ``repo_id``, or the folder itself.
    """
    model_dir = os.fspath(model_dir)
    cfg_path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(cfg_path):
        raise HubInputError(f"{model_dir} holds no config.json, so it is not a model folder: {_HOW_TO_MAKE_A_FOLDER}")
    config = _read_json(cfg_path)
    if metrics_path is None:
        metrics_path = os.path.join(model_dir, METRICS_FILE)
    if run_config is None:
        run_config = os.path.join(model_dir, RUN_CONFIG_FILE)
    if isinstance(run_config, (str, os.PathLike)):
        run_config = _read_json(run_config) if os.path.isfile(run_config) else None
    elif run_config is not None and not isinstance(run_config, dict):
        raise HubInputError(f"run_config must be a dict or a path to a JSON file, got {type(run_config).__name__}")
    records = read_metrics(metrics_path)
    metrics = summarize_metrics(records)
    worlds = [r["world_size"] for r in records if _is_number(r.get("world_size"))]
    metrics["world_size"] = int(worlds[-1]) if worlds else None
    metrics["hardware"] = hardware or _hardware_from_card(model_dir) or NOT_RECORDED

    weights = os.path.join(model_dir, "model.safetensors")
    n_params = (
        count_parameters(weights, config.get("tie_word_embeddings", True)) if os.path.isfile(weights) else None
    )
    # Without a repo id, a neutral title: training writes the card in a staging folder ("model.tmp").
    if repo_id:
        name = repo_id.split("/")[-1]
    else:
        name = "gpt_scratch " + ("GPT" if config.get("model_type") == "gpt_scratch" else "model")
    data_text, dataset_type, dataset_name = _data_description(run_config)
    shakespeare = dataset_type == SHAKESPEARE_ID

    eval_results = None
    if metrics["val_loss"] is not None:
        common = dict(task_type="text-generation", dataset_type=dataset_type, dataset_name=dataset_name,
                      dataset_split="validation")
        eval_results = [
            EvalResult(metric_type="loss", metric_name="Validation loss (nats/token)",
                       metric_value=metrics["val_loss"], **common),
            EvalResult(metric_type="perplexity", metric_name="Validation perplexity",
                       metric_value=metrics["val_perplexity"], **common),
        ]
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="text-generation",
        license="mit",
        # "gpt2" names the architecture, so only GPT models carry it.
        tags=[t for t in TAGS if t != "gpt2" or config.get("model_type") == "gpt_scratch"],
        datasets=[SHAKESPEARE_ID] if shakespeare else None,
        language=["en"] if shakespeare else None,
        model_name=name,
        eval_results=eval_results,
    )
    body = _card_body(name, config, n_params, metrics, data_text, run_config, repo_id or _published_path(model_dir),
                      os.path.isfile(os.path.join(model_dir, LOSS_PLOT)))
    return f"---\n{data.to_yaml()}\n---\n\n{body}"


def _card_body(name, config, n_params, metrics, data_text, run_config, where, has_plot):
    def cfg(key):
        v = config.get(key)
        return NOT_RECORDED if v is None else (f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v))

    block = config.get("block_size")
    tied = "tied" if config.get("tie_word_embeddings", True) else "separate"
    where = where.replace("\\", "/")  # a Windows path works with forward slashes too
    # Prompt + new tokens must fit the context: the model refuses longer generations.
    new_tokens = min(50, block // 2) if isinstance(block, int) and block > 1 else 20
    if metrics["val_loss"] is not None:
        at = f" after step {metrics['val_step']:,}" if metrics["val_step"] is not None else ""
        val = f"{metrics['val_loss']:.4f} (perplexity {metrics['val_perplexity']:.2f}){at}"
    else:
        val = NOT_RECORDED
    gpt = config.get("model_type") == "gpt_scratch"
    kind = {
        "gpt_scratch": "a small GPT-2-architecture language model",
        "gpt_scratch_bigram": "a bigram baseline language model (the next token from the current token only)",
    }.get(config.get("model_type"), f"a `{config.get('model_type')}` language model")
    code = [f"`{f}`" for f in _auto_map_files(config)]
    if code:
        remote = (f"the modeling code ships in this repository ({', '.join(code)}), so it loads with "
                  "`trust_remote_code=True` and does not need gpt_scratch installed.")
    else:
        remote = "it loads with transformers' Auto classes."
    rows = [("Architecture", f"GPT-2 decoder-only transformer ({tied} input/output embedding)" if gpt
             else config.get("model_type") or NOT_RECORDED)]
    for label, key, unit in (("Layers", "n_layer", ""), ("Attention heads", "n_head", ""),
                             ("Width (n_embd)", "n_embd", ""), ("Context (block_size)", "block_size", " tokens"),
                             ("Vocabulary", "vocab_size", " (GPT-2 byte-level BPE)")):
        if gpt or key in config:  # a bigram model has no layers or heads to report
            rows.append((label, cfg(key) + (unit if config.get(key) is not None else "")))
    rows.append(("Parameters", _fmt_int(n_params) + (" (tied embedding counted once)" if tied == "tied" else "")))
    lines = [
        f"# {name}",
        "",
        f"{kind[0].upper() + kind[1:]}, written from scratch in PyTorch with gpt_scratch. "
        f"It is a native 🤗 transformers model: {remote}",
        "",
        "## Model",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows],
        "",
        "## Training",
        "",
        f"- Data: {data_text}",
        f"- Optimizer steps: {_fmt_int(metrics['steps'])}",
        f"- Tokens seen: {_fmt_int(metrics['tokens'])}",
        f"- Final validation loss: {val}",
        f"{HARDWARE_PREFIX}{metrics['hardware']}",
        f"- Processes: {_fmt_int(metrics['world_size'])}; precision: {_precision(run_config)}",
        "",
    ]
    settings = _run_settings(run_config)
    if settings:
        lines += ["Training settings:", "", "| setting | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in settings]
        lines.append("")
    if has_plot:
        lines += ["![Training and validation loss](loss.png)", ""]
    lines += [
        "## Usage",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f"repo = {json.dumps(where)}",
        "tokenizer = AutoTokenizer.from_pretrained(repo, trust_remote_code=True)",
        "model = AutoModelForCausalLM.from_pretrained(repo, trust_remote_code=True)",
        "",
        'inputs = tokenizer("ROMEO:", return_tensors="pt")',
        f"out = model.generate(**inputs, max_new_tokens={new_tokens}, do_sample=True, top_k=50)",
        "print(tokenizer.decode(out[0], skip_special_tokens=True))",
        "```",
        "",
        "or with a pipeline:",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        f'generator = pipeline("text-generation", model={json.dumps(where)}, trust_remote_code=True)',
        f'print(generator("ROMEO:", max_new_tokens={new_tokens})[0]["generated_text"])',
        "```",
        "",
        f"The prompt plus the new tokens must fit in the {cfg('block_size')}-token context.",
        "",
    ]
    return "\n".join(lines)


def write_model_card(model_dir, metrics_path=None, run_config=None, repo_id=None, hardware=None) -> str:
    """Write ``model_dir/README.md`` (see ``render_model_card``) and return its path.

    Training calls this at the end of a run, on the machine that trained, so the
    hardware line describes this machine (its GPU unless the run config says
    cpu, else its CPU) unless ``hardware`` says otherwise or the folder's card
    already has one; a later push keeps that line.
    """
    model_dir = os.fspath(model_dir)
    if hardware is None and _hardware_from_card(model_dir) is None:
        rc = run_config if isinstance(run_config, dict) else None
        if rc is None:
            rc_path = run_config or os.path.join(model_dir, RUN_CONFIG_FILE)
            rc = _read_json(rc_path) if os.path.isfile(rc_path) else {}
        hardware = describe_machine(use_gpu=not rc.get("cpu", False))
    text = render_model_card(model_dir, metrics_path=metrics_path, run_config=run_config, repo_id=repo_id,
                             hardware=hardware)
    path = os.path.join(os.fspath(model_dir), CARD_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)  # a crash mid-write keeps the previous card
    return path


# ---------------------------------------------------------------------------
# Checks done before anything is sent


def _auto_map_files(config):
    """The .py files named by config.json's auto_map ({"AutoConfig": "configuration_gpt.GPTConfig", ...})."""
    names = []
    for ref in (config.get("auto_map") or {}).values():
        for r in ref if isinstance(ref, (list, tuple)) else [ref]:
            if not isinstance(r, str) or "--" in r:
                continue  # None, or code that lives in another repo ("repo--module.Class")
            names.append(r.rsplit(".", 1)[0] + ".py")
    return list(dict.fromkeys(names))


def _remote_code_files(model_dir, config):
    """The auto_map files plus the sibling modules they import, all of which must be in the folder."""
    seen, queue = [], _auto_map_files(config)
    while queue:
        fname = queue.pop(0)
        if fname in seen:
            continue
        path = os.path.join(model_dir, fname)
        if not os.path.isfile(path):
            raise HubInputError(
                f"{model_dir}/config.json names {fname} in auto_map but the file is missing, so the repo would "
                f"not load with trust_remote_code=True; re-save the folder with {_HOW_TO_MAKE_A_FOLDER}"
            )
        seen.append(fname)
        try:
            with open(path, encoding="utf-8") as f:
                source = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise HubInputError(f"cannot read {path} ({e}), which config.json's auto_map needs; re-save the folder "
                                f"with {_HOW_TO_MAKE_A_FOLDER}") from None
        try:
            compile(source, path, "exec")
        except (SyntaxError, ValueError) as e:
            raise HubInputError(f"{path} is not valid Python ({e}), so the repo would not load with "
                                f"trust_remote_code=True; re-save the folder with {_HOW_TO_MAKE_A_FOLDER}") from None
        # transformers copies flat siblings: "from .configuration_gpt import ..."
        queue += [m + ".py" for m in re.findall(r"^\s*from\s+\.(\w+)\s+import", source, re.M)]
    return seen


def check_folder(model_dir):
    """What generate.py checks, before anything is sent: a readable config, exactly the model's tensors, all finite.

    A folder with missing tensors would load on the Hub with random weights in their
    place; one with nan weights (a diverged run) would generate nothing useful.
    """
    from .model_folder import check_model_folder, check_tokenizer_files

    try:
        config = check_model_folder(model_dir, finite=True)
        check_tokenizer_files(model_dir, getattr(config, "block_size", None))
        return config
    except ModelFolderError as e:
        raise HubInputError(f"not pushed: {e}") from None


def upload_file_list(model_dir):
    """The files of ``model_dir`` a push uploads (README.md excluded: it is rendered fresh)."""
    model_dir = os.fspath(model_dir)
    if not os.path.isdir(model_dir):
        state = "is a file, not a folder" if os.path.exists(model_dir) else "does not exist"
        raise HubInputError(f"model folder {model_dir} {state}: {_HOW_TO_MAKE_A_FOLDER}")
    missing = [f for f in REQUIRED_FILES if not os.path.exists(os.path.join(model_dir, f))]
    if missing:
        raise HubInputError(
            f"{model_dir} is not a model folder: {' and '.join(missing)} missing "
            f"(a push needs config.json + model.safetensors); {_HOW_TO_MAKE_A_FOLDER}"
        )
    check_folder(model_dir)
    config = _read_json(os.path.join(model_dir, "config.json"))
    files = [f for f in MODEL_FILES + TOKENIZER_FILES if os.path.isfile(os.path.join(model_dir, f))]
    files += _remote_code_files(model_dir, config)
    if os.path.isfile(os.path.join(model_dir, LOSS_PLOT)):
        files.append(LOSS_PLOT)
    return files


def check_repo_id(repo_id):
    """Refuse anything but ``user/name`` with the Hub's own naming rules."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    form = "expected the form user/name (or org/name), e.g. alice/gpt-shakespeare"
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise HubInputError(f"invalid repo id {repo_id!r}: {form}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise HubInputError(f"invalid repo id {repo_id!r}: {form}; the Hub says: {e}") from None
    return repo_id


def resolve_token(token=None):
    """--token, else $HF_TOKEN, else the token saved by `hf auth login`."""
    from huggingface_hub import get_token

    token = token or os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise HubInputError(
            f"no Hugging Face token found: run {LOGIN_HINT}, set HF_TOKEN, or pass --token (a token with "
            "write access)"
        )
    return token


# ---------------------------------------------------------------------------
# Pushing


def _hub_failure(e, endpoint, repo_id, token):
    """A HubError for an exception raised while talking to the Hub; the token never appears in it."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(e, HfHubHTTPError) and e.response is not None:
        status = e.response.status_code
        hint = {
            401: f"the token was refused: check it is valid ({LOGIN_HINT}, HF_TOKEN or --token)",
            403: f"the token may not write to {repo_id.split('/')[0]}: use a token with write access to that namespace",
            404: f"repo {repo_id} was not found (check the namespace is yours)",
        }.get(status, "")
        detail = str(e).splitlines()[0]
        msg = f"pushing to {repo_id} at {endpoint} failed: HTTP {status}: {detail}" + (f"; {hint}" if hint else "")
    elif isinstance(e, ValueError):  # e.g. the Hub's README metadata validation
        msg = f"pushing to {repo_id} at {endpoint} failed: {e}"
    else:
        msg = f"cannot reach the Hub at {endpoint} ({type(e).__name__}: {e}); check the network or HF_ENDPOINT"
    # Scrubbed in case a server echoes it; a short value would mangle the message, and is no real token.
    return HubError(msg.replace(token, "***") if token and len(token) >= 8 else msg)


def push_to_hub(model_dir, repo_id, token=None, private=False, commit_message=None, endpoint=None):
    """Upload a model folder to ``repo_id`` (created if needed); return the ``CommitInfo``.

    Everything is checked before the first request; the folder is read, never written.
    Raises HubInputError for bad input and HubError when the Hub cannot be reached or refuses.
    """
    model_dir = os.fspath(model_dir)
    files = upload_file_list(model_dir)
    check_repo_id(repo_id)
    token = resolve_token(token)
    card = render_model_card(model_dir, repo_id=repo_id)

    import httpx2
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=endpoint, token=token)
    ops = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=os.path.join(model_dir, f)) for f in files]
    ops.append(CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=card.encode("utf-8")))
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        return api.create_commit(
            repo_id, ops, commit_message=commit_message or f"Upload {os.path.basename(os.path.abspath(model_dir))} "
            "with gpt_scratch", repo_type="model",
        )
    except (httpx2.HTTPError, OSError, ValueError) as e:  # HfHubHTTPError is an httpx2.HTTPError
        raise _hub_failure(e, api.endpoint, repo_id, token) from None


def main(argv=None):
    """Command line: push a model folder (weights, config, tokenizer, card) to the Hugging Face Hub."""
    import argparse

    p = argparse.ArgumentParser(
        prog="push_to_hub.py",
        description=main.__doc__,
        epilog="The Hub address comes from HF_ENDPOINT (default https://huggingface.co). "
        "Only model files are uploaded; checkpoints, optimizer state, logs and metrics stay local.",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model folder (config.json + model.safetensors)")
    p.add_argument("--repo-id", required=True, metavar="NAME", help="target repo, user/name")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--commit-message", metavar="MSG", help="commit message on the Hub")
    p.add_argument("--token", metavar="TOKEN",
                   help="Hub token with write access (default: $HF_TOKEN, then the one `hf auth login` saved); "
                   "prefer those: a token on the command line lands in the shell history")
    args = p.parse_args(argv)
    # exit 2 for bad input (HubInputError, ModelFolderError), 1 when the Hub fails (HubError)
    info = run_cli(p.prog, push_to_hub, args.model, args.repo_id, token=args.token, private=args.private,
                   commit_message=args.commit_message)
    print(f"pushed {args.model} to {info.repo_url} (commit {info.oid[:12]})")
    print(f"load it with AutoModelForCausalLM.from_pretrained({args.repo_id!r}, trust_remote_code=True)")
    return info


if __name__ == "__main__":
    main(sys.argv[1:])
