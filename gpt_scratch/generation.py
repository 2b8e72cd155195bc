"""Sample text from a saved model folder (GPT or bigram): the engine behind scripts/generate.py.

`main(argv)` is the whole command line, callable from Python (tests, notebooks).
Every argument is checked before anything is loaded; the prompt length is
checked against block_size after the (small) tokenizer is loaded and before the
weights are. Output on stdout is text only: the prompt echo, then the new text
streamed as it is produced; notes go to stderr.
"""

import argparse
import math
import os
import sys

import torch
from transformers import AutoTokenizer, TextStreamer, set_seed

# Being inside gpt_scratch, this module is only imported after gpt_scratch/__init__.py has
# registered the GPT and bigram classes with AutoConfig/AutoModelForCausalLM: both load below.
from .errors import ModelFolderError, run_cli
from .model_folder import (check_tokenizer_files, check_weight_names, load_config, load_model, read_config_dict,
                           tokenizer_fix, weight_files)
from .tokenizer import load_tokenizer

DEFAULT_MAX_NEW_TOKENS = 200
SAMPLE_SEPARATOR = "-" * 15  # printed on its own line between samples
EOT_TOKEN = "<|endoftext|>"

DESCRIPTION = """\
Generate text with a gpt_scratch model folder (GPT or bigram) or any transformers causal LM folder.

Prompt: --prompt TEXT, --prompt-file PATH, or standard input (--prompt - , or no
prompt at all while stdin is not a terminal). One trailing newline of a file or
of stdin is dropped (editors and echo add it). An empty prompt starts the text
from <|endoftext|>, GPT-2's document separator, i.e. "a new document".

Output: the prompt, then the new text as it is produced. With --num-samples N
the samples follow one another, separated by a line of dashes.
"""

EPILOG = """\
examples:
  python scripts/generate.py --model out/shakespeare/model --prompt "ROMEO:" --max-new-tokens 100
  python scripts/generate.py --model out/shakespeare/model --num-samples 3 --temperature 1.0 --top-k 50
  echo "To be, or not to be" | python scripts/generate.py --model out/shakespeare/model --greedy
"""


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0 turns top-k off), got {value}")
    return value


def _temperature(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0 (0 means greedy), got {text}")
    return value


def _top_p(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value <= 1:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be in (0, 1] (1 turns top-p off), got {text}")
    return value


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= value < 2**32:  # numpy's generator, seeded alongside torch's, takes 32 bits
        raise argparse.ArgumentTypeError(f"must be in 0 .. {2**32 - 1}, got {value}")
    return value


def build_parser():
    p = argparse.ArgumentParser(
        prog="generate.py",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, metavar="DIR",
                   help="model folder: config.json + model.safetensors (+ tokenizer files), as written by "
                        "training or by converting GPT-2 weights")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--prompt", metavar="TEXT",
                     help="text to continue; '-' reads standard input; '' (empty) starts from <|endoftext|>")
    src.add_argument("--prompt-file", metavar="PATH", help="read the prompt from this UTF-8 file")
    p.add_argument("--max-new-tokens", type=_positive_int, default=None, metavar="N",
                   help=f"tokens to generate (default: {DEFAULT_MAX_NEW_TOKENS}, or fewer if that would not fit "
                        "in the model's block_size; an explicit N that does not fit is an error naming the maximum)")
    p.add_argument("--temperature", type=_temperature, default=0.8, metavar="T",
                   help="softmax temperature; 0 means greedy (default: 0.8)")
    p.add_argument("--top-k", type=_non_negative_int, default=200, metavar="K",
                   help="sample among the K most likely tokens; 0 = off (default: 200)")
    p.add_argument("--top-p", type=_top_p, default=1.0, metavar="P",
                   help="nucleus sampling: smallest set of tokens with probability >= P; 1 = off (default: 1.0)")
    p.add_argument("--num-samples", type=_positive_int, default=1, metavar="N",
                   help="independent samples to draw, one after another (default: 1)")
    p.add_argument("--seed", type=_seed, default=1337, help="random seed; same seed, same text (default: 1337)")
    p.add_argument("--greedy", action="store_true",
                   help="always take the most likely token (ignores temperature, top-k, top-p)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to run; auto = cuda if available, else cpu (default: auto)")
    return p


def _check_model_folder(folder):
    """The cheap checks (config.json readable, weights file present), before anything is loaded."""
    read_config_dict(folder)
    weight_files(folder)


def _read_prompt(parser, args, stdin):
    """The prompt text, per the policy in DESCRIPTION."""
    if args.prompt_file is not None:
        try:
            with open(args.prompt_file, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            parser.error(f"cannot read --prompt-file {args.prompt_file}: {e}")
    elif args.prompt == "-" or (args.prompt is None and not stdin.isatty()):
        try:
            text = stdin.read()
        except UnicodeDecodeError as e:
            parser.error(f"standard input is not UTF-8 text ({e.reason} at byte {e.start}); "
                         "convert it (iconv -t UTF-8) or pass --prompt")
    else:
        return args.prompt or ""
    return text[:-1] if text.endswith("\n") else text


def _resolve_device(parser, name):
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda asked for, but torch sees no CUDA GPU (use --device cpu or auto)")
    return name


def _load_tokenizer(folder, block_size):
    present = check_tokenizer_files(folder, block_size)
    if present:
        fix = tokenizer_fix(folder, block_size)
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
        except Exception as e:  # a hand-broken tokenizer file; the tokenizers library raises plain Exception
            raise ModelFolderError(
                f"the tokenizer files in {folder} ({', '.join(present)}) cannot be loaded: {type(e).__name__}: "
                f"{str(e)[:300]}; {fix}") from None
        if len(tokenizer) < 2:  # e.g. tokenizer_config.json alone: a tokenizer that encodes everything to []
            raise ModelFolderError(f"the tokenizer in {folder} has {len(tokenizer)} token(s), so it cannot encode "
                                   f"text (is tokenizer.json missing?); {fix}")
        return tokenizer
    # A folder from a bare save_pretrained has no tokenizer files; every gpt_scratch
    # model uses GPT-2's, which ships with the package.
    print(f"note: {folder} has no tokenizer files; using GPT-2's tokenizer", file=sys.stderr)
    return load_tokenizer(model_max_length=block_size or 1024)


def sampling_kwargs(greedy, temperature, top_k, top_p):
    """generate() keyword arguments for a decoding choice; temperature 0 means greedy."""
    if greedy or temperature == 0:
        return {"do_sample": False}
    # top_k=0 must be passed explicitly: leaving it out means transformers' default of 50.
    return {"do_sample": True, "temperature": temperature, "top_k": top_k, "top_p": top_p}


def main(argv=None, stdin=None):
    """Run the command line with `argv` (default sys.argv[1:]). Returns 0.

    Bad input (arguments, a broken model folder) prints `generate.py: error: ...`
    and exits with code 2; the environment (permissions, a full disk) with code 1.
    """
    # A weights-loading progress bar on every run says nothing when nothing is wrong.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return run_cli("generate.py", _main, argv, stdin)


def _main(argv, stdin):
    parser = build_parser()
    args = parser.parse_args(argv)
    stdin = sys.stdin if stdin is None else stdin

    # Everything cheap first, so a typo never costs a model load.
    _check_model_folder(args.model)
    prompt = _read_prompt(parser, args, stdin)
    device = _resolve_device(parser, args.device)

    config = load_config(args.model)
    check_weight_names(args.model, config)  # the safetensors header only: cheap, before the tokenizer
    block_size = getattr(config, "max_position_embeddings", None)
    tokenizer = _load_tokenizer(args.model, block_size)

    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    if not ids:
        eot = tokenizer.convert_tokens_to_ids(EOT_TOKEN)
        unknown = eot is None or (eot == tokenizer.unk_token_id and tokenizer.unk_token != EOT_TOKEN)
        if unknown:  # not a GPT-2 vocabulary: start from the model's own bos instead
            eot = config.bos_token_id
        if eot is None:
            parser.error(f"the prompt is empty and this model has neither {EOT_TOKEN} nor a bos token to start from")
        ids = [eot]
    if block_size is not None:
        room = block_size - len(ids)
        if room <= 0:
            parser.error(
                f"the prompt is {len(ids)} token(s), but this model's block_size is {block_size}: "
                f"shorten it to at most {block_size - 1} tokens"
            )
        if args.max_new_tokens is not None and args.max_new_tokens > room:
            parser.error(
                f"--max-new-tokens {args.max_new_tokens} does not fit: the prompt is {len(ids)} token(s) and "
                f"block_size is {block_size}, so at most {room} new tokens are allowed"
            )
        max_new = args.max_new_tokens or min(DEFAULT_MAX_NEW_TOKENS, room)
    else:
        max_new = args.max_new_tokens or DEFAULT_MAX_NEW_TOKENS

    vocab = getattr(config, "vocab_size", None)
    if vocab is not None and max(ids) >= vocab:
        raise ModelFolderError(
            f"the tokenizer of {args.model} gives id {max(ids)}, but the model's vocab_size is {vocab}: the "
            "tokenizer files belong to another model; rewrite them with gpt_scratch.save_tokenizer or copy the "
            "ones saved with this model")

    model = load_model(args.model, config=config, device=device)
    input_ids = torch.tensor([ids], device=device)
    gen_kwargs = dict(
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=max_new,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else config.eos_token_id,
        **sampling_kwargs(args.greedy, args.temperature, args.top_k, args.top_p),
    )

    set_seed(args.seed)  # once: samples differ from each other, the run repeats exactly
    try:
        for i in range(args.num_samples):
            if i:
                print(SAMPLE_SEPARATOR, flush=True)
            print(prompt, end="", flush=True)
            # skip_prompt: the prompt was echoed above exactly as given (and <|endoftext|> is not shown)
            streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
            with torch.no_grad():
                model.generate(input_ids, streamer=streamer, **gen_kwargs)
    except BrokenPipeError:
        # The reader went away (generate.py ... | head): stop quietly, as other command-line tools do.
        _silence_stdout()
        raise SystemExit(141) from None
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        raise SystemExit(130) from None
    return 0


def _silence_stdout():
    """Point stdout at /dev/null so Python's exit flush does not raise a second BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # an in-memory stdout (tests): nothing to flush to a pipe
