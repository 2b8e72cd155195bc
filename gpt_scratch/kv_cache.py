"""A KV cache for decoding on CPU: transformers' DynamicCache, with two measured speed-ups.

generate() on CPU uses it instead of a plain DynamicCache when the caller asks for
no particular cache (`decoding_cache_for`); everything else sees an ordinary Cache.

1. Appends without copying the past. DynamicLayer appends with torch.cat, so each
   new token copies all S cached keys and values of every layer. GrowingLayer keeps
   them in a buffer with room to spare (doubled when full) and exposes a view of
   its filled part; crop, reorder and select keep working (they slice the view or
   make a new tensor, and the next append then starts a new buffer).
2. The lm_head product of a decoding step, laid out the way MKL reads fastest
   (bench/README.md, measured on an AVX2 and an AVX-512 EPYC): one row against a
   transposed copy of the (vocab, C) weight, made once per cache, i.e. once per
   generate() call, so no weight update can make it stale; 2-64 rows (batched or
   beam decoding) as (W @ x.T).T.

Copied next to saved weights with modeling_gpt.py (it imports torch, transformers and
its sibling transformers_compat.py).
"""

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache, DynamicLayer

from .transformers_compat import CACHE

FEW_ROWS = 64  # up to this many rows, (W @ x.T).T beat x @ W.T for the lm_head on both CPUs


class GrowingLayer(DynamicLayer):
    """A DynamicLayer whose keys and values are views of buffers that grow by doubling."""

    _buffers = None  # (keys, values) with capacity >= the filled length

    def _owns_view(self):
        if self._buffers is None or self.keys is None or self.keys.numel() == 0:
            return False
        return all(
            view.data_ptr() == buf.data_ptr() and view.stride() == buf.stride() and view.shape[:2] == buf.shape[:2]
            for view, buf in zip((self.keys, self.values), self._buffers)
        )

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        S, T = self.get_seq_length(), key_states.shape[-2]
        owned = self._owns_view()
        if not owned or self._buffers[0].shape[-2] < S + T or self._buffers[0].dtype != key_states.dtype:
            B, H, _, D = key_states.shape
            capacity = max(2 * (S + T), 64)
            buf_k = key_states.new_empty(B, H, capacity, D)
            buf_v = value_states.new_empty(B, H, capacity, value_states.shape[-1])
            if S:
                buf_k[:, :, :S] = self.keys
                buf_v[:, :, :S] = self.values
            self._buffers = (buf_k, buf_v)
        buf_k, buf_v = self._buffers
        buf_k[:, :, S:S + T] = key_states
        buf_v[:, :, S:S + T] = value_states
        self.keys, self.values = buf_k[:, :, :S + T], buf_v[:, :, :S + T]
        return self.keys, self.values

    def reset(self):
        self._buffers = None
        super().reset()


class DecodingCache(DynamicCache):
    """DynamicCache made of GrowingLayers, which also computes decoding steps' lm_head products."""

    def __init__(self, config):
        super().__init__(config=config)
        self.layers = [GrowingLayer() for _ in self.layers]
        self._weight_t = None  # (C, vocab) copy of the lm_head weight, made at the first one-row step

    def lm_head(self, x, weight):
        """x @ weight.T for hidden states x (..., C), as nn.Linear without bias would return it."""
        rows = x.numel() // x.shape[-1]
        if torch.is_grad_enabled() or torch.is_autocast_enabled(x.device.type) or rows > FEW_ROWS:
            return F.linear(x, weight)
        if rows == 1:
            if self._weight_t is None or self._weight_t.shape != weight.t().shape:
                self._weight_t = transposed_copy(weight.detach())
            return x @ self._weight_t
        xt = x.reshape(rows, x.shape[-1]).t()  # (C, rows)
        return (weight @ xt).t().reshape(*x.shape[:-1], weight.shape[0]).contiguous()


def transposed_copy(w, rows_per_block=256):
    """w.t().contiguous(), a block of rows at a time: for the small model's lm_head weight
    131 -> 92 ms on the AVX2 CPU (one transpose of 50,257 rows writes each cache line
    it touches thousands of times apart)."""
    out = w.new_empty(w.shape[1], w.shape[0])
    for start in range(0, w.shape[0], rows_per_block):
        out[:, start:start + rows_per_block].copy_(w[start:start + rows_per_block].t())
    return out


def decoding_cache_for(model, generation_config, kwargs):
    """generate() kwargs with a DecodingCache when decoding on CPU with no cache of the caller's choice."""
    gc = generation_config
    chosen = ("cache", "past_key_values", "cache_implementation")
    if (
        model.device.type != "cpu"
        or any(kwargs.get(k) is not None for k in chosen)
        or gc.cache_implementation is not None
        or kwargs.get("use_cache", gc.use_cache) is False
        or kwargs.get("assistant_model") is not None
        or torch.compiler.is_compiling()
    ):
        return kwargs
    return {**kwargs, CACHE: DecodingCache(config=model.config)}  # under the name this generate() reads
