"""Sharing a model folder on the Hugging Face Hub, safely.

    python scripts/push_to_hub.py --model out/shakespeare/model --repo-id you/gpt-shakespeare

Everything is checked before the first request: the folder gets the same checks as
generate.py (model_folder.load_model), then the repo id and the token. One commit
uploads an allowlist: weights, configs, the remote code named by auto_map with the
files it imports, tokenizer files, the loss plot and the card rendered again for the
repo id (in memory: the local folder is never modified). Checkpoints, optimizer
state, metrics and anything else in the folder stay local. The token is never
printed or written.
"""

import argparse
import os

from ..errors import HubError, ModelFolderError, run_cli
from .card import CARD_FILE, LOSS_PLOT, render_model_card
from .model_folder import CONFIG_FILE, GENERATION_FILE, TOKENIZER_FILES, WEIGHTS_FILE, check_model_folder

LOGIN_HINT = "`hf auth login`"


class HubInputError(HubError, ModelFolderError):
    """Bad input (folder, repo id, token), found before anything is sent: exit 2."""

    exit_code = 2


def remote_code_files(folder, config):
    """The files auto_map names and every sibling they import (transformers' own scan), all in the folder."""
    from transformers.dynamic_module_utils import get_relative_import_files

    files = set()
    for ref in (getattr(config, "auto_map", None) or {}).values():
        path = os.path.join(folder, ref.rsplit(".", 1)[0] + ".py")
        try:
            files |= {path, *get_relative_import_files(path)}
            for f in files:
                with open(f, encoding="utf-8") as src:
                    compile(src.read(), f, "exec")
        except (OSError, SyntaxError, ValueError) as e:
            what = "is not valid Python" if isinstance(e, SyntaxError) else "is missing or unreadable"
            raise HubInputError(f"{getattr(e, 'filename', None) or path} {what} ({e}), and config.json's auto_map "
                                "needs it: the repo would not load with trust_remote_code=True; re-save the folder") from None
    return sorted(os.path.relpath(f, folder) for f in files)


def upload_files(folder):
    """The files a push uploads (the card is rendered fresh), after every check of the folder."""
    folder = os.fspath(folder)
    try:  # the folder, config.json and model.safetensors: there, readable and fitting each other
        config = check_model_folder(folder).config
    except ModelFolderError as e:
        raise HubInputError(f"not pushed: {e}") from None
    files = [f for f in (CONFIG_FILE, GENERATION_FILE, WEIGHTS_FILE, *TOKENIZER_FILES, LOSS_PLOT)
             if os.path.isfile(os.path.join(folder, f))]
    return files + remote_code_files(folder, config)


def check_repo_id(repo_id):
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    form = "expected the form user/name (or org/name), e.g. alice/gpt-shakespeare"
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise HubInputError(f"invalid repo id {repo_id!r}: {form}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise HubInputError(f"invalid repo id {repo_id!r}: {form}; the Hub says: {e}") from None


def _failure(e, endpoint, repo_id, token):
    """A HubError for what went wrong on the wire; the token never appears in it."""
    response = getattr(e, "response", None)
    status = getattr(response, "status_code", None)
    if status is not None:
        hint = {401: f"the token was refused: check it ({LOGIN_HINT}, HF_TOKEN or --token)",
                403: f"the token may not write to {repo_id.split('/')[0]}: use one with write access there",
                404: f"repo {repo_id} was not found (check the namespace is yours)"}.get(status)
        msg = f"pushing to {repo_id} at {endpoint} failed: HTTP {status}: {str(e).splitlines()[0]}"
        msg += f"; {hint}" if hint else ""
    elif isinstance(e, ValueError):  # e.g. the Hub's validation of the card's metadata
        msg = f"pushing to {repo_id} at {endpoint} failed: {e}"
    else:
        msg = f"cannot reach the Hub at {endpoint} ({type(e).__name__}: {e}); check the network or HF_ENDPOINT"
    return HubError(msg.replace(token, "***") if len(token) >= 8 else msg)


def push_to_hub(model_dir, repo_id, token=None, private=False, commit_message=None, endpoint=None):
    """Upload a model folder to `repo_id` (created if needed); returns the CommitInfo."""
    from huggingface_hub import CommitOperationAdd, HfApi, get_token

    model_dir = os.fspath(model_dir)
    files = upload_files(model_dir)
    check_repo_id(repo_id)
    token = token or os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise HubInputError(f"no Hugging Face token found: run {LOGIN_HINT}, set HF_TOKEN, or pass --token (a token "
                            "with write access)")
    card = render_model_card(model_dir, where=repo_id).encode("utf-8")
    api = HfApi(endpoint=endpoint, token=token)
    ops = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=os.path.join(model_dir, f)) for f in files]
    ops.append(CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=card))
    message = commit_message or f"Upload {os.path.basename(os.path.abspath(model_dir))} with gpt_scratch"
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        return api.create_commit(repo_id, ops, commit_message=message, repo_type="model")
    except Exception as e:  # whatever the HTTP client raises: reported with the Hub's answer, never the token
        raise _failure(e, api.endpoint, repo_id, token) from None


def main(argv=None):
    """Command line: push a model folder (weights, config, tokenizer, remote code, card) to the Hugging Face Hub."""
    p = argparse.ArgumentParser(prog="push_to_hub.py", description=main.__doc__,
                                epilog="The Hub address comes from HF_ENDPOINT (default https://huggingface.co). Only "
                                "model files are uploaded; checkpoints, optimizer state, logs and metrics stay local.")
    p.add_argument("--model", required=True, metavar="DIR", help="model folder (config.json + model.safetensors)")
    p.add_argument("--repo-id", required=True, metavar="NAME", help="target repo, user/name")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--commit-message", metavar="MSG", help="commit message on the Hub")
    p.add_argument("--token", metavar="TOKEN", help="Hub token with write access (default: $HF_TOKEN, then the one "
                   "`hf auth login` saved); prefer those: a token on the command line lands in the shell history")
    args = p.parse_args(argv)
    info = run_cli(p.prog, push_to_hub, args.model, args.repo_id, token=args.token, private=args.private,
                   commit_message=args.commit_message)
    print(f"pushed {args.model} to {info.repo_url} (commit {info.oid[:12]})")
    print(f"load it with AutoModelForCausalLM.from_pretrained({args.repo_id!r}, trust_remote_code=True)")
    return info
