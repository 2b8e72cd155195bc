"""What differs between the transformers releases the model files run on (5.4 to 5.25): one name.

transformers 5.24 renamed the KV cache from `past_key_values` to `cache`: in
forward() arguments, in model outputs, in `create_causal_mask` and in what
generate() passes to forward(). Serving engines pin older releases (vLLM and
SGLang: 5.16-5.19), so a saved model folder must run under both names. The
model files use `cache` and go through the three helpers below; nothing else in
them depends on the release (tests/test_consumers_transformers.py runs a saved
folder on the oldest supported release).

Copied next to saved weights with modeling_gpt.py (it imports only transformers).
"""

import functools

from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.utils.deprecation import deprecate_kwarg

# The name this transformers gives the KV cache ("cache" from 5.24, "past_key_values" before).
CACHE = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"


def accepts_cache_under_either_name(forward):
    """forward(..., cache=...) that also takes `past_key_values=`, the name older releases pass.

    From 5.24 the old name is deprecated, so transformers' own decorator warns about it;
    before 5.24 it is the library's name (generate() passes it), so it is taken silently.
    """
    if CACHE == "cache":
        return deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")(forward)

    @functools.wraps(forward)
    def renamed(*args, **kwargs):
        if "past_key_values" in kwargs:
            if kwargs.get("cache") is not None:
                raise ValueError("pass the KV cache once, as cache= or as past_key_values=, not both")
            kwargs["cache"] = kwargs.pop("past_key_values")
        return forward(*args, **kwargs)

    return renamed


def causal_mask(config, inputs_embeds, attention_mask, cache, position_ids):
    """transformers' causal + padding mask for the configured attention backend.

    The cache goes by keyword: it is keyword-only before 5.9, and named `cache` from 5.24.
    """
    return create_causal_mask(config, inputs_embeds, attention_mask, position_ids=position_ids, **{CACHE: cache})


def output_with_cache(output_class, cache, **fields):
    """output_class(..., cache=cache) under this release's field name."""
    return output_class(**fields, **{CACHE: cache})


def cache_of(output):
    """The KV cache an output carries (None when use_cache was off)."""
    return getattr(output, CACHE)
