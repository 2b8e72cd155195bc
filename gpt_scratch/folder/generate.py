"""Sample text from a model folder (GPT or bigram): the engine behind scripts/generate.py.

Everything cheap is checked first (arguments, the prompt, the folder's config and
tokenizer files, the prompt's length against the context), then the weights are
loaded through model_folder.load_model, the same checked door every command uses.
stdout carries text only: the prompt, then the new text as it streams; notes go to stderr.
"""

import argparse
import math
import os
import sys

import torch

from ..errors import ModelFolderError, run_cli
from ..tokenizer import EOT_TOKEN, load_tokenizer
from .model_folder import check_tokenizer_files, load_model, read_config

DEFAULT_MAX_NEW_TOKENS = 200
SAMPLE_SEPARATOR = "-" * 15  # printed on its own line between samples

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


def _number(kind, ok, rule):
    """An argparse type: `kind(text)` that satisfies `ok`, else an error saying `rule`."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {rule}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value
    return parse


def build_parser():
    p = argparse.ArgumentParser(prog="generate.py", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="DIR", help="model folder: config.json + model.safetensors "
                   "(+ tokenizer files), as written by training or by converting GPT-2 weights")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--prompt", metavar="TEXT", help="text to continue; '-' reads standard input; '' (empty) starts "
                     "from <|endoftext|>")
    src.add_argument("--prompt-file", metavar="PATH", help="read the prompt from this UTF-8 file")
    p.add_argument("--max-new-tokens", type=_number(int, lambda v: v > 0, "a positive integer"), metavar="N",
                   help=f"tokens to generate (default: {DEFAULT_MAX_NEW_TOKENS}, or fewer if that would not fit in the "
                   "model's block_size; an explicit N that does not fit is an error naming the maximum)")
    p.add_argument("--temperature", type=_number(float, lambda v: math.isfinite(v) and v >= 0,
                                                 "a number >= 0 (0 means greedy)"), default=0.8, metavar="T",
                   help="softmax temperature; 0 means greedy (default: 0.8)")
    p.add_argument("--top-k", type=_number(int, lambda v: v >= 0, ">= 0 (0 turns top-k off)"), default=200,
                   metavar="K", help="sample among the K most likely tokens; 0 = off (default: 200)")
    p.add_argument("--top-p", type=_number(float, lambda v: 0 < v <= 1, "in (0, 1] (1 turns top-p off)"), default=1.0,
                   metavar="P", help="nucleus sampling: smallest set of tokens with probability >= P; 1 = off "
                   "(default: 1.0)")
    p.add_argument("--num-samples", type=_number(int, lambda v: v > 0, "a positive integer"), default=1, metavar="N",
                   help="independent samples to draw, one after another (default: 1)")
    p.add_argument("--seed", type=_number(int, lambda v: 0 <= v < 2**32, f"in 0 .. {2**32 - 1}"), default=1337,
                   help="random seed; same seed, same text (default: 1337)")
    p.add_argument("--repetition-penalty", type=_number(float, lambda v: math.isfinite(v) and v > 0, "a number > 0 "
                   "(1 turns it off)"), default=1.0, metavar="R", help="divide the scores of tokens already in the text "
                   "by R (CTRL's penalty; greedy decoding of a small model repeats itself without it, try 1.3; "
                   "default: 1.0, off)")
    p.add_argument("--greedy", action="store_true", help="always take the most likely token (ignores temperature, "
                   "top-k, top-p)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to run; auto = cuda if available, else cpu (default: auto)")
    return p


def _read_prompt(parser, args, stdin):
    try:
        if args.prompt_file is not None:
            with open(args.prompt_file, encoding="utf-8") as f:
                text = f.read()
        elif args.prompt == "-" or (args.prompt is None and not stdin.isatty()):
            text = stdin.read()
        else:
            return args.prompt or ""
    except UnicodeDecodeError as e:
        where = f"cannot read --prompt-file {args.prompt_file}: it" if args.prompt_file else "standard input"
        parser.error(f"{where} is not UTF-8 text ({e.reason} at byte {e.start}); convert it (iconv -t UTF-8) or pass "
                     "--prompt")
    except OSError as e:
        parser.error(f"cannot read --prompt-file {args.prompt_file}: {e}")
    return text[:-1] if text.endswith("\n") else text


def _tokenizer(folder, block_size):
    present = check_tokenizer_files(folder)
    if not present:  # a bare save_pretrained: every gpt_scratch model uses GPT-2's, shipped with the package
        print(f"note: {folder} has no tokenizer files; using GPT-2's tokenizer", file=sys.stderr)
        return load_tokenizer(model_max_length=block_size or 1024)
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as e:  # the tokenizers library raises plain Exception for a hand-broken file
        raise ModelFolderError(f"the tokenizer files in {folder} ({', '.join(present)}) cannot be loaded: "
                               f"{type(e).__name__}: {str(e)[:300]}; re-save them with gpt_scratch.save_tokenizer") from None
    if len(tokenizer) < 2:
        raise ModelFolderError(f"the tokenizer in {folder} has {len(tokenizer)} token(s), so it cannot encode text (is "
                               "tokenizer.json missing?); re-save it with gpt_scratch.save_tokenizer")
    return tokenizer


def _prompt_ids(parser, tokenizer, prompt, config):
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    if not ids:  # a new document: GPT-2's <|endoftext|>, else the model's own bos
        eot = tokenizer.convert_tokens_to_ids(EOT_TOKEN)
        ids = [eot if eot is not None and tokenizer.convert_ids_to_tokens(eot) == EOT_TOKEN else config.bos_token_id]
        if ids[0] is None:
            parser.error(f"the prompt is empty and this model has neither {EOT_TOKEN} nor a bos token to start from")
    if max(ids) >= config.vocab_size:
        raise ModelFolderError(f"the tokenizer gives id {max(ids)}, but the model's vocab_size is {config.vocab_size}: "
                               "the tokenizer files belong to another model; rewrite them with "
                               "gpt_scratch.save_tokenizer or copy the ones saved with this model")
    return ids


def _max_new(parser, args, n_prompt, block_size):
    if block_size is None:
        return args.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
    room = block_size - n_prompt
    if room <= 0:
        parser.error(f"the prompt is {n_prompt} token(s), but this model's block_size is {block_size}: shorten it to "
                     f"at most {block_size - 1} tokens")
    if args.max_new_tokens is not None and args.max_new_tokens > room:
        parser.error(f"--max-new-tokens {args.max_new_tokens} does not fit: the prompt is {n_prompt} token(s) and "
                     f"block_size is {block_size}, so at most {room} new tokens are allowed")
    return args.max_new_tokens or min(DEFAULT_MAX_NEW_TOKENS, room)


def sampling_kwargs(greedy, temperature, top_k, top_p):
    """generate() keyword arguments for a decoding choice; temperature 0 means greedy."""
    if greedy or temperature == 0:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": temperature, "top_k": top_k, "top_p": top_p}  # top_k=0 explicit: off


def _generate(argv, stdin):
    from transformers import TextStreamer, set_seed

    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.model.strip():
        parser.error("the model folder name is empty: pass --model DIR (a folder holding config.json)")
    prompt = _read_prompt(parser, args, sys.stdin if stdin is None else stdin)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda asked for, but torch sees no CUDA GPU (use --device cpu or auto)")
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else "cpu" if args.device == "auto" else args.device
    config = read_config(args.model)
    block_size = getattr(config, "max_position_embeddings", None)
    tokenizer = _tokenizer(args.model, block_size)
    ids = _prompt_ids(parser, tokenizer, prompt, config)
    max_new = _max_new(parser, args, len(ids), block_size)
    model = load_model(args.model, device=device)
    input_ids = torch.tensor([ids], device=device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else config.eos_token_id
    set_seed(args.seed)  # once: samples differ from each other, the run repeats exactly
    try:
        for i in range(args.num_samples):
            print(SAMPLE_SEPARATOR + "\n" if i else "", end="")
            print(prompt, end="", flush=True)
            streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)  # prompt echoed as given
            with torch.no_grad():
                model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new,
                               pad_token_id=pad, streamer=streamer, repetition_penalty=args.repetition_penalty,
                               **sampling_kwargs(args.greedy, args.temperature, args.top_k, args.top_p))
    except BrokenPipeError:  # the reader went away (generate.py ... | head): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(141) from None
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        raise SystemExit(130) from None
    return 0


def main(argv=None, stdin=None):
    """Run the command line with `argv`; bad input exits 2 with `generate.py: error: ...`, the environment 1."""
    return run_cli("generate.py", _generate, argv, stdin)
