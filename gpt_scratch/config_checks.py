"""The checks both model configs run on their fields: one rule for each kind of value.

Copied next to saved weights with the configs (it imports only its sibling errors.py),
so a folder loaded with `trust_remote_code` checks its config the same way.
"""

import difflib

from .errors import ConfigError


def check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def check_positive_number(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}")


def check_probability(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"{name} must be a number in [0, 1), got {value!r}")


def check_bool(name, value):
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")


def check_special_token_ids(config):
    """bos/eos/pad must be None or ids inside the vocabulary (eos may be a list of them).

    The defaults are GPT-2's <|endoftext|> (50256). A vocabulary too small to hold it
    (a tiny test model, a toy tokenizer) gets those fields cleared to None rather than
    refused: the default is GPT-2's, not a choice the user made. Any other id outside
    the vocabulary is refused.
    """
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(config, name)
        ids = value if isinstance(value, list) and name == "eos_token_id" else [value]
        if value == GPT2_EOT and config.vocab_size <= GPT2_EOT:
            setattr(config, name, None)
            continue
        for i in ids:
            if i is not None and (isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < config.vocab_size):
                raise ConfigError(
                    f"{name} must be None or a token id in [0, {config.vocab_size}), got {value!r}; "
                    f"set it to an id of your vocabulary or to None"
                )


GPT2_EOT = 50256  # GPT-2's <|endoftext|>, the default bos and eos of both configs


def check_no_misspelt_fields(config, extra_kwargs):
    """A keyword that is not a field but looks like one (n_layers for n_layer) and disagrees with it is a typo.

    Configs carry other keys too (metadata, settings other code reads): only one that is
    close to a field's name and holds another value than that field would be lost silently.
    """
    fields = [f for f in type(config).__dataclass_fields__ if not f.startswith("_")]
    for key, value in extra_kwargs.items():
        if key in fields or key in type(config).attribute_map:
            continue
        close = difflib.get_close_matches(key, fields, n=1, cutoff=0.8)
        if close and getattr(config, close[0]) != value:
            raise ConfigError(
                f"{type(config).__name__} has no setting {key!r} (given {value!r}); did you mean {close[0]!r}?"
            )
