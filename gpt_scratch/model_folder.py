"""What a model folder holds, how it is saved and how it is checked: one place for every command.

A model folder is what `from_pretrained` reads: config.json, model.safetensors
(or a sharded index), generation_config.json, the remote-code files named by
auto_map, and GPT-2's tokenizer files.

Saving: everything is written into a temporary sibling folder, every file and
the folder are fsync'ed, and one rename publishes it. A full disk, a kill or a
power loss never leaves half a model under the folder's name; a failure that
Python sees removes the temporary folder, so a retry starts clean (a kill -9
leaves a `.NAME.partial-*` sibling behind). Replacing an earlier model folder
takes two renames (old aside, new in); a crash between them leaves the old one
complete as `.NAME.old-*`.

Measured cost of the fsyncs (2-core VM, virtio disk, 2 runs each): the main job's
29 MB model saves in 0.29 s with them against 0.18 s without; GPT-2 124M (498 MB)
in 1.9-2.0 s against 1.4-2.0 s, within run-to-run noise. tests/test_faults.py
prints the figure for its tiny model.

Checking: transformers loads a model.safetensors with missing tensors by
putting random weights in their place (and ignores unexpected ones), exit 0.
The project's own loaders read the safetensors header first and refuse missing
or unexpected tensors by name, and refuse non-finite weights (a diverged run).
Every failure is a ModelFolderError (bad input, exit 2) or an EnvironmentFault
(disk, permissions, exit 1) whose message names the file, what is wrong and the fix.
"""

import contextlib
import copy
import errno
import json
import os
import shutil
import uuid

from .errors import EnvironmentFault, ModelFolderError
from .tokenizer import save_tokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
GENERATION_CONFIG_FILE = "generation_config.json"
# What from_pretrained needs for the model, and the tokenizer files AutoTokenizer reads (GPT-2's, for every
# gpt_scratch model); a push uploads these plus the remote code named by auto_map.
MODEL_FILES = (CONFIG_FILE, GENERATION_CONFIG_FILE, WEIGHTS_FILE)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")
# The model types gpt_scratch defines: for these the expected tensors are known exactly.
OWN_MODEL_TYPES = ("gpt_scratch", "gpt_scratch_bigram")
HOW_TO_MAKE_ONE = (
    "make one by training (python scripts/train.py ..., which writes OUT_DIR/model), by converting GPT-2 weights "
    "(python scripts/convert_gpt2.py --from-hf HF_DIR --out DIR) or with gpt_scratch.save_model_folder(model, DIR)"
)
DIVERGED_HINT = (
    "this is what a diverged training run leaves (the loss became nan or inf); retrain with a lower "
    "learning_rate (e.g. half of it) or more warmup_steps, and keep a checkpoint from before the loss blew up"
)

# transformers' text-generation pipeline asks for 256 new tokens unless the folder's
# generation_config says otherwise; generate() refuses to run past block_size.
PIPELINE_MAX_NEW_TOKENS = 256


def default_max_new_tokens(block_size):
    """New tokens a folder asks for by default: half the context, at most the pipeline's usual 256.

    Half leaves the other half for the prompt, so `pipeline("text-generation", model=dir)`
    works out of the box on a model with a small block_size.
    """
    return max(1, min(PIPELINE_MAX_NEW_TOKENS, block_size // 2))


# ---------------------------------------------------------------------------
# Durable writes


_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(exc):
    """True for an out-of-space error, including the ones safetensors' Rust writer raises as text."""
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
        return True
    text = str(exc)
    return "No space left on device" in text or "os error 28" in text or "Disk quota exceeded" in text


def environment_fault(exc, what):
    """An EnvironmentFault for an OSError (or a disk-full error of a writer) met while doing `what`."""
    if is_disk_full(exc):
        return EnvironmentFault(f"no space left on the disk while {what}: free some disk space (df -h shows "
                                "which disk is full) and run the same command again; nothing was published")
    if isinstance(exc, PermissionError) or getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM):
        return EnvironmentFault(f"permission denied while {what} ({exc}): choose a folder you can write to "
                                "or fix its permissions")
    if getattr(exc, "errno", None) == errno.EROFS:
        return EnvironmentFault(f"read-only file system while {what}: choose a writable folder")
    return EnvironmentFault(f"{what} failed: {type(exc).__name__}: {exc}")


def fsync_path(path):
    """fsync one file or folder (a folder's fsync makes the names in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root):
    """fsync every file under `root`, then every folder, deepest first: data before the names that point at it."""
    folders = []
    for dirpath, _, files in os.walk(root):
        folders.append(dirpath)
        for name in files:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                fsync_path(path)
    for dirpath in reversed(folders):
        fsync_path(dirpath)


def staging_folder(final):
    """A new empty folder beside `final` (same file system, so a rename can publish it)."""
    final = os.path.abspath(os.fspath(final))
    tmp = os.path.join(os.path.dirname(final), f".{os.path.basename(final)}.partial-{uuid.uuid4().hex[:8]}")
    os.mkdir(tmp)  # the usual permissions (umask), unlike tempfile.mkdtemp's 0700
    return tmp


def check_replaceable(final):
    """Refuse to publish over anything but a previous model folder (or an empty folder): nothing else is replaced.

    Without this, an empty or "." output path would replace the current folder, and
    a folder of the user's own files would be moved aside and deleted.
    """
    shown = os.fspath(final)
    if not shown.strip():
        raise ModelFolderError("the output folder name is empty: give the folder to write, e.g. out/model")
    final = os.path.abspath(shown)
    if not os.path.lexists(final):
        return
    if os.path.islink(final):
        raise ModelFolderError(f"{shown} is a symbolic link: give the real folder it points to, or a new folder")
    if not os.path.isdir(final):
        raise ModelFolderError(f"{shown} is a file, not a folder: choose another output folder or remove the file")
    cwd = os.path.abspath(os.getcwd())
    if final == os.path.dirname(final) or cwd == final or cwd.startswith(final.rstrip(os.sep) + os.sep):
        raise ModelFolderError(f"{shown} is the current folder or one above it: choose a new folder to write into")
    entries = os.listdir(final)
    if entries and CONFIG_FILE not in entries:
        raise ModelFolderError(f"{shown} already holds files that are not a model folder ({', '.join(sorted(entries)[:3])}"
                               f"{' ...' if len(entries) > 3 else ''}): nothing was overwritten; choose a new or empty "
                               "folder")


def publish_folder(tmp, final):
    """fsync `tmp` and rename it to `final`, replacing a previous model folder only once the new one is durable.

    A power loss at any moment leaves the old folder or the new one, complete. A
    previous model folder at `final` is moved aside, the new one renamed in, then
    the old one removed; anything else at `final` is refused (see check_replaceable).
    """
    check_replaceable(final)
    tmp, final = os.path.abspath(tmp), os.path.abspath(os.fspath(final))
    fsync_tree(tmp)
    parent = os.path.dirname(final)
    old = None
    if os.path.isdir(final) and os.listdir(final):
        old = os.path.join(parent, f".{os.path.basename(final)}.old-{uuid.uuid4().hex[:8]}")
        os.rename(final, old)
    os.replace(tmp, final)  # also replaces an empty folder
    fsync_path(parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def no_progress_bar():
    """transformers' progress bars off for the block: a one-file save needs no "Writing model shards" bar."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def write_model_files(model, out_dir, state_dict=None):
    """Weights, config, generation config, remote code and tokenizer into `out_dir`, not atomically:
    for a writer already inside write_folder's staging folder."""
    with no_progress_bar():
        model.save_pretrained(out_dir, state_dict=state_dict)  # safetensors only in 5.x
    gen = getattr(model, "generation_config", None)
    if gen is not None and gen.max_new_tokens is None and gen.max_length is None:
        gen = copy.deepcopy(gen)
        gen.max_new_tokens = default_max_new_tokens(model.config.block_size)
        gen._from_model_config = False  # it now holds a setting the model config does not imply
        gen.save_pretrained(out_dir)
    save_tokenizer(out_dir, model_max_length=model.config.block_size)


def write_folder(out_dir, write):
    """Call write(tmp) on a staging folder beside `out_dir`, then publish it there with fsync + rename.

    On any failure the staging folder is removed and `out_dir` is left as it was;
    an OSError (a full disk, permissions) or a writer's disk-full error becomes an
    EnvironmentFault that says so.
    """
    out_dir = os.fspath(out_dir)
    check_replaceable(out_dir)  # before any work: refused now rather than after the weights are written
    parent = os.path.dirname(os.path.abspath(out_dir))
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = staging_folder(out_dir)
    except (NotADirectoryError, FileExistsError):
        raise ModelFolderError(f"cannot create {out_dir}: a part of the path above it is a file, not a folder; "
                               "choose another output folder") from None
    except OSError as e:
        raise environment_fault(e, f"creating a folder for {out_dir}") from e
    try:
        write(tmp)
        publish_folder(tmp, out_dir)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) or is_disk_full(e):
            raise environment_fault(e, f"writing {out_dir}") from e
        raise
    return out_dir


def save_model_folder(model, out_dir, state_dict=None):
    """save_pretrained (safetensors, config, generation config, remote-code files) + tokenizer files, atomically.

    Written into a temporary sibling folder, fsync'ed, then renamed to `out_dir`
    (see `write_folder`); a model folder already at `out_dir` is replaced as a
    whole once the new one is durable, and any other non-empty folder is refused. On any failure `out_dir` is as it was; a full
    disk or a permission problem raises EnvironmentFault.

    The tokenizer's model_max_length is the model's block_size, so pipelines
    never feed it more positions than it has. Unless the model's generation
    config already sets a length, the saved one gets
    max_new_tokens = default_max_new_tokens(block_size); the model passed in is
    not modified. `state_dict` replaces the model's own (a full one gathered
    from sharded FSDP training, for instance).
    """
    return write_folder(out_dir, lambda tmp: write_model_files(model, tmp, state_dict))


# ---------------------------------------------------------------------------
# Reading and checking


def _unreadable(path, e):
    if isinstance(e, PermissionError):
        return EnvironmentFault(f"cannot read {path}: permission denied; fix its permissions (chmod u+r) "
                                "or run as its owner")
    if isinstance(e, IsADirectoryError):
        return ModelFolderError(f"{path} is a folder, not a file; {HOW_TO_MAKE_ONE}")
    return EnvironmentFault(f"cannot read {path}: {e}")


def read_config_dict(folder):
    """config.json of `folder` as a dict, refusing a missing, truncated or non-object file by name."""
    folder = os.fspath(folder)
    if not folder.strip():
        raise ModelFolderError(f"the model folder name is empty: pass the folder holding config.json; {HOW_TO_MAKE_ONE}")
    if not os.path.exists(folder):
        raise ModelFolderError(f"model folder {folder} does not exist; {HOW_TO_MAKE_ONE}")
    if not os.path.isdir(folder):
        raise ModelFolderError(f"{folder} is a file, not a model folder; {HOW_TO_MAKE_ONE}")
    path = os.path.join(folder, CONFIG_FILE)
    if not os.path.exists(path):
        raise ModelFolderError(f"{folder} has no {CONFIG_FILE}, so it is not a saved model; {HOW_TO_MAKE_ONE}")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise ModelFolderError(f"{path} is not UTF-8 text (a binary or damaged file); re-save the model "
                               "folder or restore config.json from where it came from") from None
    except OSError as e:
        raise _unreadable(path, e) from None
    if not text.strip():
        raise ModelFolderError(f"{path} is empty (a save or copy that was cut off); re-save the model folder "
                               "or copy config.json again")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise ModelFolderError(f"{path} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}; a "
                               "truncated download or a hand edit?); re-save the model folder or fix the file") from None
    if not isinstance(config, dict):
        raise ModelFolderError(f"{path} holds a JSON {type(config).__name__}, not an object of settings "
                               '({"model_type": ..., ...}); re-save the model folder')
    if not isinstance(config.get("model_type"), str):
        raise ModelFolderError(f"{path} has no model_type (a string such as \"gpt_scratch\" or \"gpt2\"), so "
                               "transformers cannot tell which model it is; re-save the model folder")
    return config


def check_json_file(folder, name, fix=None):
    """Refuse `folder/name` when it is there but is not a readable file holding a JSON object; None if absent."""
    path = os.path.join(os.fspath(folder), name)
    if not os.path.exists(path):
        return None
    fix = fix or f"re-save the model folder, or delete {name} (transformers then uses its defaults)"
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except IsADirectoryError:
        raise ModelFolderError(f"{path} is a folder, not a file; {fix}") from None
    except OSError as e:
        raise _unreadable(path, e) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelFolderError(f"{path} is not valid JSON ({e}; cut off or hand-edited?); {fix}") from None
    if not isinstance(value, dict):
        raise ModelFolderError(f"{path} holds a JSON {type(value).__name__}, not an object; {fix}")
    return value


_TOKEN_ID_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")
_LENGTH_FIELDS = ("max_new_tokens", "max_length", "min_new_tokens", "min_length")


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def check_generation_config(folder):
    """Refuse a generation_config.json that transformers would accept and then fail on mid-generation."""
    from transformers import GenerationConfig

    values = check_json_file(folder, GENERATION_CONFIG_FILE)
    if values is None:
        return None
    path = os.path.join(os.fspath(folder), GENERATION_CONFIG_FILE)
    fix = f"fix that value, or delete {GENERATION_CONFIG_FILE} (transformers then uses its defaults)"
    for key in _TOKEN_ID_FIELDS:
        v = values.get(key)
        if v is not None and not (_is_int(v) or (isinstance(v, list) and v and all(_is_int(i) for i in v))):
            raise ModelFolderError(f"{path}: {key} must be a token id (an integer) or a list of them, got {v!r}; {fix}")
    for key in _LENGTH_FIELDS:
        v = values.get(key)
        if v is not None and not (_is_int(v) and v >= 0):
            raise ModelFolderError(f"{path}: {key} must be a whole number of tokens, got {v!r}; {fix}")
    try:
        return GenerationConfig.from_pretrained(folder)
    except Exception as e:  # its own validation: a value of the wrong kind or out of range
        raise ModelFolderError(f"{path} is not a usable generation config: {e}; {fix}") from None


def tokenizer_fix(folder, block_size=None):
    """How to repair the tokenizer files of a gpt_scratch folder (they are GPT-2's, rewritten from the package)."""
    return (f"rewrite the tokenizer files with python -c \"import gpt_scratch; gpt_scratch.save_tokenizer("
            f"'{os.fspath(folder)}', model_max_length={block_size or 1024})\" (every gpt_scratch model uses GPT-2's "
            "tokenizer), or delete them to use GPT-2's")


def check_tokenizer_files(folder, block_size=None):
    """Refuse tokenizer files that are there but broken: not JSON objects, or a model_max_length that is no length.

    Returns the names of the tokenizer files present.
    """
    fix = tokenizer_fix(folder, block_size)
    present = [f for f in TOKENIZER_FILES if os.path.exists(os.path.join(os.fspath(folder), f))]
    for name in present:
        if name.endswith(".json"):
            values = check_json_file(folder, name, fix=fix)
            limit = values.get("model_max_length") if name == "tokenizer_config.json" else None
            if limit is not None and not (_is_int(limit) and limit > 0):
                raise ModelFolderError(f"{os.path.join(os.fspath(folder), name)} sets model_max_length to {limit!r}, "
                                       f"not a positive number of tokens; {fix}")
    return present


def load_config(folder):
    """The transformers config of `folder` (gpt_scratch's types included), every failure a ModelFolderError."""
    from transformers import AutoConfig

    from . import configuration_gpt  # noqa: F401  (registering happens in gpt_scratch/__init__)

    from transformers import CONFIG_MAPPING

    model_type = read_config_dict(folder)["model_type"]
    if model_type not in CONFIG_MAPPING:
        raise ModelFolderError(
            f"{os.path.join(os.fspath(folder), CONFIG_FILE)} has model_type {model_type!r}, which neither "
            f"transformers nor gpt_scratch defines (gpt_scratch's are {', '.join(OWN_MODEL_TYPES)}); fix the "
            "model_type or re-save the model folder")
    check_generation_config(folder)
    try:
        return AutoConfig.from_pretrained(folder)
    except Exception as e:  # anything that cannot build a config from the user's file is the file's fault
        raise ModelFolderError(f"{os.path.join(os.fspath(folder), CONFIG_FILE)} is not a usable config: {e}; "
                               "fix that setting or re-save the model folder") from None


def weight_files(folder):
    """The safetensors files of `folder` (one file, or the shards its index names); refuses a folder without."""
    folder = os.fspath(folder)
    single = os.path.join(folder, WEIGHTS_FILE)
    index = os.path.join(folder, WEIGHTS_INDEX_FILE)
    if os.path.isdir(single):
        raise ModelFolderError(f"{single} is a folder, not a weights file; {HOW_TO_MAKE_ONE}")
    if os.path.exists(single):
        return [single]
    if os.path.exists(index):
        try:
            with open(index, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
            names = sorted(set(weight_map.values()))
        except OSError as e:
            raise _unreadable(index, e) from None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ModelFolderError(f"{index} is not a valid shard index (JSON with a \"weight_map\" object); "
                                   "re-save the model folder") from None
        return [os.path.join(folder, n) for n in names]
    others = [n for n in ("pytorch_model.bin", "model.bin", "tf_model.h5") if os.path.exists(os.path.join(folder, n))]
    extra = (f" ({others[0]} is there: an old format; load it once with from_pretrained and save_pretrained it to "
             "get safetensors)") if others else ""
    raise ModelFolderError(f"{folder} has {CONFIG_FILE} but no {WEIGHTS_FILE} (the weights){extra}; "
                           f"{HOW_TO_MAKE_ONE}")


def read_weights_header(folder):
    """{tensor name: (shape, dtype)} from the safetensors headers of `folder`; no tensor is loaded."""
    from safetensors import SafetensorError, safe_open

    out = {}
    for path in weight_files(folder):
        if not os.path.exists(path):
            raise ModelFolderError(f"{path} is missing: {WEIGHTS_INDEX_FILE} names it; copy the missing shard "
                                   "or re-save the model folder")
        try:
            with safe_open(path, "pt") as f:
                for key in f.keys():
                    sl = f.get_slice(key)
                    out[key] = (tuple(sl.get_shape()), sl.get_dtype())
        except SafetensorError as e:
            raise ModelFolderError(f"{path} is not a complete safetensors file ({e}; a download or copy that "
                                   "was cut off, or a disk that filled up while saving); copy it again or "
                                   "re-save the model folder") from None
        except OSError as e:
            raise _unreadable(path, e) from None
    return out


def _meta_model(config):
    """The model `config` describes, built without memory (meta device), for its expected tensor names."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def expected_tensors(config):
    """(required, optional) tensor names with shapes for one of gpt_scratch's model types.

    A tied output head (lm_head.weight = transformer.wte.weight) is stored once by
    save_pretrained, so it is optional in the file.
    """
    model = _meta_model(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    tied = set(getattr(model, "all_tied_weights_keys", None) or {}) if getattr(
        config, "tie_word_embeddings", False) else set()
    required = {k: s for k, s in shapes.items() if k not in tied}
    optional = {k: s for k, s in shapes.items() if k in tied}
    return required, optional


def _names(keys, limit=6):
    keys = sorted(keys)
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_weight_names(folder, config):
    """Refuse a model.safetensors whose tensors are not exactly the model's, naming what is missing or extra.

    Only for gpt_scratch's own model types (whose tensor names are known); other
    models are checked by `check_loading_info` after loading.
    """
    header = read_weights_header(folder)
    if config.model_type not in OWN_MODEL_TYPES:
        return header
    required, optional = expected_tensors(config)
    where = os.path.join(os.fspath(folder), WEIGHTS_FILE)
    missing = set(required) - set(header)
    unexpected = set(header) - set(required) - set(optional)
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s) the model needs: {_names(missing)} (transformers would "
                        "fill them with random numbers)")
    if unexpected:
        problems.append(f"{len(unexpected)} tensor(s) this model does not have: {_names(unexpected)}")
    wrong = [f"{k} is {header[k][0]}, expected {s}" for k, s in {**required, **optional}.items()
             if k in header and header[k][0] != s]
    if wrong:
        problems.append("shapes that do not match config.json: " + "; ".join(wrong[:4]))
    if problems:
        raise ModelFolderError(f"{where} does not fit {CONFIG_FILE}: " + "; ".join(problems) +
                               ". The weights and the config come from different models or the file was cut "
                               "down; save the folder again from the model (save_model_folder) or copy both files "
                               "from the same save")
    return header


def check_loading_info(folder, info):
    """Refuse what from_pretrained(output_loading_info=True) reports as missing, unexpected or mismatched."""
    problems = []
    for label, key in (("missing (filled with random weights)", "missing_keys"),
                       ("unexpected", "unexpected_keys"), ("of the wrong shape", "mismatched_keys")):
        keys = info.get(key) or ()
        keys = [k[0] if isinstance(k, tuple) else k for k in keys]
        if keys:
            problems.append(f"{label}: {_names(keys)}")
    if info.get("error_msgs"):
        problems.append("; ".join(map(str, info["error_msgs"]))[:500])
    if problems:
        raise ModelFolderError(f"the weights in {folder} do not fit its {CONFIG_FILE}: tensors " +
                               "; ".join(problems) + ". Save the folder again from the model or copy "
                               "config.json and the weights from the same save")


def check_finite(named_tensors, where):
    """Refuse the first tensor holding nan or inf, naming it, how many values and the likely cause."""
    import torch

    def finite(t):
        if not t.is_floating_point() or t.numel() == 0:
            return True
        try:  # min and max carry any nan or inf: ~60x faster than isfinite(t).all() (7 ms vs 450 ms, 38M floats)
            return all(bool(torch.isfinite(x)) for x in torch.aminmax(t))
        except RuntimeError:  # a dtype aminmax does not cover
            return bool(torch.isfinite(t).all())

    for name, t in named_tensors:
        if not finite(t):
            n_nan, n_inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
            raise ModelFolderError(
                f"{where}: tensor {name} holds non-finite values ({n_nan} nan, {n_inf} inf of {t.numel()}); "
                f"{DIVERGED_HINT}")


def check_model_folder(folder, finite=True):
    """Every check a folder gets before it is used or shared; returns its transformers config.

    config.json readable and valid, the weights complete safetensors with
    exactly the tensors the model has, and (finite=True) no nan or inf in them.
    """
    config = load_config(folder)
    check_weight_names(folder, config)
    if finite:
        from safetensors import safe_open

        for path in weight_files(folder):
            with safe_open(path, "pt") as f:
                check_finite(((k, f.get_tensor(k)) for k in f.keys()), path)
    return config


def load_model(folder, config=None, device="cpu", model_class=None):
    """A model loaded from `folder` after every check, in eval mode; refused with a ModelFolderError otherwise."""
    if config is None:
        config = load_config(folder)
    check_weight_names(folder, config)
    if model_class is None:
        from transformers import AutoModelForCausalLM as model_class
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report would come before our own, clearer refusal
    try:
        model, info = model_class.from_pretrained(folder, config=config, output_loading_info=True)
    except OSError as e:
        raise _unreadable(folder, e) from None
    except Exception as e:  # the checks above passed, so this is a file transformers still cannot use
        raise ModelFolderError(f"transformers cannot load the model in {folder}: {type(e).__name__}: {e}; "
                               "re-save the model folder") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    check_loading_info(folder, info)
    check_finite(model.state_dict().items(), os.path.join(os.fspath(folder), WEIGHTS_FILE))
    return model.to(device).eval()
