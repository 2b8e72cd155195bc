"""Configuration of the gpt_scratch bigram baseline.

A bigram model has no layers and no positions: `block_size` is only the longest
context it accepts, kept so the bigram obeys the same length contract as the GPT
(and so tokenizers and pipelines get the same limit).

This file is copied next to saved weights for `trust_remote_code` loading, with
the sibling modules it imports (input_checks.py, errors.py).
"""

from transformers import PretrainedConfig

# What invalid values raise (through input_checks.py). Imported here as well because transformers
# before 5.10 copies only the files a config or model file imports itself next to the remote code.
from .errors import ConfigError  # noqa: F401
from .input_checks import (
    check_no_misspelt_fields,
    check_positive_int,
    check_positive_number,
    check_special_token_ids,
)


class BigramConfig(PretrainedConfig):
    """Bigram hyper-parameters. Invalid values raise ConfigError (a ValueError) naming the field."""

    model_type = "gpt_scratch_bigram"
    attribute_map = {
        "hidden_size": "n_embd",
        "max_position_embeddings": "block_size",
    }

    vocab_size: int = 50257
    n_embd: int = 256  # width of the factorisation vocab -> n_embd -> vocab
    block_size: int = 1024  # longest sequence accepted (there are no position embeddings)
    initializer_range: float = 0.02
    # The 5.x base config no longer declares these; without them tying silently does not happen.
    tie_word_embeddings: bool = True
    use_cache: bool = True
    bos_token_id: int | None = 50256
    eos_token_id: int | list[int] | None = 50256
    pad_token_id: int | None = None

    # DynamicCache(config=...) sizes itself from num_hidden_layers. The bigram keeps a
    # single, empty cache layer whose length only counts the positions seen so far.
    # A read-only property, not a field: it is never saved or set from config.json.
    @property
    def num_hidden_layers(self):
        return 1

    def __post_init__(self, **kwargs):
        check_no_misspelt_fields(self, kwargs)
        for name in ("vocab_size", "n_embd", "block_size"):
            check_positive_int(name, getattr(self, name))
        check_positive_number("initializer_range", self.initializer_range)
        check_special_token_ids(self)
        super().__post_init__(**kwargs)
