"""A model folder: what `from_pretrained` reads, written in one piece and checked in one place.

The folder holds config.json, model.safetensors, generation_config.json, GPT-2's
tokenizer files, the remote-code files named by auto_map, and after training the
model card, metrics and loss plot. `save_model_folder` writes it through a staging
folder (durable.py), replacing an earlier model folder only once the new one is on
disk, and never replacing anything that is not a model folder.

`load_model` is the one door every reader uses (generate, push, convert,
`--init_from`): it refuses, by name and with the fix, a config.json or
generation_config.json that cannot be right, a weights file that is missing,
truncated or not safetensors, tensors that are missing (transformers would fill
them with random numbers), unexpected or of the wrong shape, and non-finite
weights, which a diverged run leaves.
"""

import contextlib
import copy
import json
import os

from ..errors import EnvironmentFault, GptScratchError, ModelFolderError
from ..input_checks import checked_from_pretrained
from ..tokenizer import save_tokenizer
from .durable import staged_folder

CONFIG_FILE, WEIGHTS_FILE, GENERATION_FILE = "config.json", "model.safetensors", "generation_config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")
HOW_TO_MAKE_ONE = ("make one by training (python scripts/train.py ..., which writes OUT_DIR/model), by converting GPT-2 "
                   "weights (python scripts/convert_gpt2.py --from-hf HF_DIR --out DIR) or with "
                   "gpt_scratch.save_model_folder(model, DIR)")
PIPELINE_MAX_NEW_TOKENS = 256  # what transformers' text-generation pipeline asks for by default


def default_max_new_tokens(block_size):
    """New tokens a folder asks for by default: half the context (the other half is the prompt's), at most 256."""
    return max(1, min(PIPELINE_MAX_NEW_TOKENS, block_size // 2))


# ---------------------------------------------------------------- writing

def check_replaceable(final):
    """Refuse to publish over anything but a previous model folder or an empty folder."""
    shown = os.fspath(final)
    if not shown.strip():
        raise ModelFolderError("the output folder name is empty: give the folder to write, e.g. out/model")
    final = os.path.abspath(shown)
    parent = os.path.dirname(final)
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise ModelFolderError(f"cannot create {shown}: a part of the path above it is a file ({parent}), not a "
                               "folder; choose another output folder")
    if not os.path.lexists(final):
        return
    if os.path.islink(final) or not os.path.isdir(final):
        kind = "a symbolic link" if os.path.islink(final) else "a file, not a folder"
        raise ModelFolderError(f"{shown} is {kind}: choose a new output folder")
    cwd = os.getcwd()
    if final == os.path.dirname(final) or cwd == final or cwd.startswith(final.rstrip(os.sep) + os.sep):
        raise ModelFolderError(f"{shown} is the current folder or one above it: choose a new folder to write into")
    entries = sorted(os.listdir(final))
    if entries and CONFIG_FILE not in entries:
        raise ModelFolderError(f"{shown} already holds files that are not a model folder ({', '.join(entries[:3])}"
                               f"{' ...' if len(entries) > 3 else ''}): nothing was overwritten; choose a new or "
                               "empty folder")


@contextlib.contextmanager
def quiet_transformers():
    """transformers' progress bars and load reports off: one small file needs no bar, and a refusal of ours says
    more than its report would."""
    from transformers.utils import logging as hf_logging

    bar, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def write_model_files(model, out_dir, state_dict=None):
    """Weights, config, generation config, remote code and tokenizer into `out_dir` (a staging folder)."""
    with quiet_transformers():
        model.save_pretrained(out_dir, state_dict=state_dict)
    gen = getattr(model, "generation_config", None)
    if gen is not None and gen.max_new_tokens is None and gen.max_length is None:
        gen = copy.deepcopy(gen)  # the model passed in is not modified
        gen.max_new_tokens = default_max_new_tokens(model.config.max_position_embeddings)
        gen.save_pretrained(out_dir)
    save_tokenizer(out_dir, model_max_length=model.config.max_position_embeddings)


def save_model_folder(model, out_dir, state_dict=None, extra=None):
    """save_pretrained + tokenizer files into `out_dir`, all at once (see the module docstring).

    `state_dict` replaces the model's own (a full one gathered from sharded training);
    `extra(tmp)` writes more files (metrics, card) into the staging folder before it
    is published. The tokenizer's model_max_length is the model's context, and the
    generation config asks for default_max_new_tokens unless it sets a length itself.
    """
    check_replaceable(out_dir)
    with staged_folder(out_dir) as tmp:
        write_model_files(model, tmp, state_dict)
        if extra is not None:
            extra(tmp)
    return os.fspath(out_dir)


# ---------------------------------------------------------------- reading and checking

def read_json(path, fix):
    """A JSON object from `path`, refused by name when it is a folder, empty, not UTF-8, not JSON or not an object."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except IsADirectoryError:
        raise ModelFolderError(f"{path} is a folder, not a file; {fix}") from None
    except UnicodeDecodeError:
        raise ModelFolderError(f"{path} is not UTF-8 text (a binary or damaged file); {fix}") from None
    except PermissionError:
        raise EnvironmentFault(f"cannot read {path}: permission denied; fix its permissions (chmod u+r)") from None
    except OSError as e:
        raise EnvironmentFault(f"cannot read {path}: {e}") from None
    if not text.strip():
        raise ModelFolderError(f"{path} is empty (a save or copy that was cut off); {fix}")
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ModelFolderError(f"{path} is not valid JSON ({e}; cut off or hand-edited?); {fix}") from None
    if not isinstance(value, dict):
        raise ModelFolderError(f"{path} holds a JSON {type(value).__name__}, not an object; {fix}")
    return value


def _check_ids_and_lengths(path, values, fix):
    """Token ids and lengths that transformers would accept and then fail on mid-generation."""
    for key in ("bos_token_id", "eos_token_id", "pad_token_id", "max_new_tokens", "max_length"):
        v = values.get(key)
        if not (v is None or (type(v) is int and v >= 0) or
                (key == "eos_token_id" and isinstance(v, list) and v and all(type(i) is int for i in v))):
            what = "a token id (an integer) or a list of them" if key.endswith("_id") else "a whole number of tokens"
            raise ModelFolderError(f"{path}: {key} must be {what}, got {v!r}; {fix}")


def _usable(path, build, values, fix):
    try:
        return build(values)
    except Exception as e:  # the library's own validation: anything it cannot build from the file
        raise ModelFolderError(f"{path} is not a usable config: {e}; {fix}") from None


def read_config(folder):
    """The transformers config of `folder`, after config.json and generation_config.json check out (each read once:
    the config is built from the values checked)."""
    from transformers import CONFIG_MAPPING, GenerationConfig

    folder = os.fspath(folder)
    if not folder.strip() or not os.path.isdir(folder):
        state = "is a file, not a model folder" if os.path.isfile(folder) else "does not exist"
        raise ModelFolderError(f"model folder {folder!r} {state}; {HOW_TO_MAKE_ONE}")
    path = os.path.join(folder, CONFIG_FILE)
    if not os.path.lexists(path):
        raise ModelFolderError(f"{folder} has no {CONFIG_FILE}, so it is not a saved model; {HOW_TO_MAKE_ONE}")
    fix = "fix that value or re-save the model folder"
    values = read_json(path, fix)
    model_type = values.get("model_type")
    if not isinstance(model_type, str):
        raise ModelFolderError(f"{path} has no model_type (a string such as \"gpt_scratch\" or \"gpt2\"), so "
                               "transformers cannot tell which model it is; re-save the model folder")
    if model_type not in CONFIG_MAPPING:
        raise ModelFolderError(f"{path} has model_type {model_type!r}, which neither transformers nor gpt_scratch "
                               "defines (gpt_scratch's are gpt_scratch and gpt_scratch_bigram); fix it or re-save the "
                               "model folder")
    _check_ids_and_lengths(path, values, fix)
    config = _usable(path, CONFIG_MAPPING[model_type].from_dict, values, fix)
    gen_path = os.path.join(folder, GENERATION_FILE)
    if os.path.lexists(gen_path):
        gen_fix = f"{fix}, or delete {GENERATION_FILE} (transformers then uses its defaults)"
        gen_values = read_json(gen_path, gen_fix)
        _check_ids_and_lengths(gen_path, gen_values, gen_fix)
        _usable(gen_path, GenerationConfig.from_dict, gen_values, gen_fix)
    return config


def check_tokenizer_files(folder):
    """Refuse tokenizer files that are there but broken; returns the names of those present."""
    fix = (f"rewrite them with python -c \"import gpt_scratch; gpt_scratch.save_tokenizer('{os.fspath(folder)}', "
           "model_max_length=BLOCK_SIZE)\" (every gpt_scratch model uses GPT-2's tokenizer)")
    present = [f for f in TOKENIZER_FILES if os.path.lexists(os.path.join(folder, f))]
    for name in (f for f in present if f.endswith(".json")):
        limit = read_json(os.path.join(folder, name), fix).get("model_max_length")
        if limit is not None and not (type(limit) is int and limit > 0):
            raise ModelFolderError(f"{os.path.join(folder, name)} sets model_max_length to {limit!r}, not a positive "
                                   f"number of tokens; {fix}")
    return present


def load_model(folder, device="cpu", model_class=None):
    """The model of `folder`, in eval mode, after every check; a ModelFolderError (exit 2) names what is wrong."""
    from transformers import AutoModelForCausalLM

    config = read_config(folder)
    weights = os.path.join(folder, WEIGHTS_FILE)
    if os.path.isdir(weights):
        raise ModelFolderError(f"{weights} is a folder, not a weights file; {HOW_TO_MAKE_ONE}")
    if not os.path.exists(weights) and not os.path.exists(weights + ".index.json"):
        old = [n for n in ("pytorch_model.bin", "tf_model.h5") if os.path.exists(os.path.join(folder, n))]
        hint = (f" ({old[0]} is there: an old format; load it once with from_pretrained and save_pretrained it "
                "to get safetensors)") if old else ""
        raise ModelFolderError(f"{folder} has {CONFIG_FILE} but no {WEIGHTS_FILE} (the weights){hint}; {HOW_TO_MAKE_ONE}")
    try:  # the same checks as gpt_scratch's own from_pretrained, for every class (transformers' GPT-2 too)
        with quiet_transformers():
            model = checked_from_pretrained((model_class or AutoModelForCausalLM).from_pretrained, folder, (),
                                            {"config": config})
    except GptScratchError:
        raise
    except OSError as e:
        raise EnvironmentFault(f"cannot read the weights in {folder}: {e}") from None
    except Exception as e:  # the checks above passed: a file transformers still cannot use
        raise ModelFolderError(f"transformers cannot load the model in {folder}: {type(e).__name__}: {e}; re-save "
                               "the model folder") from None
    return model.to(device).eval()


def check_model_folder(folder):
    """Every check a folder gets before it is shared; returns the loaded model."""
    model = load_model(folder)
    check_tokenizer_files(folder)
    return model
