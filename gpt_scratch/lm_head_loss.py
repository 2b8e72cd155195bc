"""The causal-LM training loss straight from the hidden states: the logits are never kept.

`GPTForCausalLM(..., labels=y, skip_logits=True)` comes here; the training loop asks
for it. The usual way writes all (N, vocab) logits, then log-softmax, then in the
backward pass a zero-filled gradient of the same size and a log-softmax backward:
five passes over N x 50,257 floats (412 MB for 2,048 tokens). Here each slice of
logits becomes softmax - one_hot in place and goes straight into the two gradient
products, during the forward pass; the backward pass only scales them. Same value
as transformers' ForCausalLMLoss (shift, ignore -100, mean or sum / num_items_in_batch).

Copied next to saved weights with modeling_gpt.py (it imports only torch).
"""

import math

import torch
import torch.nn.functional as F

# Rows: up to 2^27 fp32 logits (512 MB) per chunk. Every chunk re-reads the whole lm_head
# weight and smaller matmuls run slower (2,048 rows in 6 chunks measured 14% slower than in
# one on a 2-core CPU), while peak memory on long GPU batches stays bounded.
CHUNK_LOGITS = 1 << 27
# Vocabulary: slices of 4,096 ids with a running log-sum-exp; on a 2-core CPU the lm_head
# product ran ~25% faster so than in one piece (2,048 and 8,192 no better, 16,384 slower).
CHUNK_VOCAB = 4096


def lm_head_cross_entropy(hidden, weight, labels, num_items_in_batch=None, shift_labels=None, vocab_ids=None,
                          **kwargs):
    """Mean (or sum / num_items_in_batch) cross-entropy of `hidden @ weight.T` against labels shifted by one.

    `vocab_ids` (sorted, unique) restricts the product to those rows, for a vocabulary
    whose other rows are all zero (ids a corpus never uses, kept at zero in training):
    each of those ids then has logit exactly 0, so one logit log(number of them) stands
    for all of them and the loss is still the full-vocabulary loss, at a fraction of
    the work. A target outside `vocab_ids` is refused.
    """
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=-100)[:, 1:]  # token t predicts t + 1
    targets = shift_labels.reshape(-1).to(hidden.device)
    n_items = num_items_in_batch if num_items_in_batch is not None else (targets != -100).sum()
    h, w = hidden.reshape(-1, hidden.shape[-1]), weight
    others_logit = float("-inf")
    if vocab_ids is not None:
        position = torch.full((weight.shape[0],), -1, dtype=torch.long, device=weight.device)
        position[vocab_ids] = torch.arange(vocab_ids.numel(), device=weight.device)
        valid = targets != -100
        targets = torch.where(valid, position[targets.clamp(min=0)], targets)
        if not torch.compiler.is_compiling() and bool((valid & (targets < 0)).any()):
            raise ValueError("a label is outside vocab_ids, the vocabulary this loss is restricted to")
        w = weight.index_select(0, vocab_ids)
        n_others = weight.shape[0] - vocab_ids.numel()
        others_logit = math.log(n_others) if n_others else float("-inf")
    device_type = h.device.type
    if torch.is_autocast_enabled(device_type):  # the matmuls in the autocast dtype, as nn.Linear would
        dtype = torch.get_autocast_dtype(device_type)
        h, w = h.to(dtype), w.to(dtype)
    chunk_rows = max(1, CHUNK_LOGITS // w.shape[0])
    grads = torch.is_grad_enabled() and (h.requires_grad or w.requires_grad)  # not in evaluation: the loss alone
    with torch.autocast(device_type, enabled=False):
        return LMHeadCrossEntropy.apply(h, w, targets, n_items, chunk_rows, CHUNK_VOCAB, others_logit, grads)


def _add_product(out, a, b):
    """out += a @ b; in place when the dtypes match (fp32), else through a temporary (bf16 into fp32)."""
    if a.dtype == out.dtype:
        out.addmm_(a, b)
    else:
        out += a @ b


class LMHeadCrossEntropy(torch.autograd.Function):
    """Cross-entropy of `hidden @ weight.T` whose gradients are taken in the forward pass.

    Cut two ways: `chunk_rows` tokens at a time, and slices of `chunk_vocab` ids with
    a running log-sum-exp (a new row maximum rescales the sum so far). With `grads` False
    (no gradient wanted) only the loss is computed: one product instead of three.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, n_items, chunk_rows, chunk_vocab, others_logit=float("-inf"),
                grads=True):
        # hidden (N, C), weight (V, C), targets (N,) with -100 for "no loss here"
        acc = torch.promote_types(hidden.dtype, torch.float32)  # softmax and sums: fp32 at least
        valid = targets != -100
        row_scale = (valid.to(acc) / n_items).unsqueeze(1)  # (N, 1): d loss / d row loss
        safe_targets = targets.masked_fill(~valid, 0).unsqueeze(1)  # (N, 1)
        grad_hidden = torch.empty_like(hidden) if grads else None
        grad_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device) if grads else None
        loss = torch.zeros((), dtype=acc, device=hidden.device)
        vocab_starts = range(0, weight.shape[0], chunk_vocab)
        for start in range(0, hidden.shape[0], chunk_rows):
            rows = slice(start, start + chunk_rows)
            h, t, scale = hidden[rows], safe_targets[rows], row_scale[rows]
            # pass 1, per vocabulary slice: exp(logits - row max so far), the running
            # sum of those, and each row's target logit from the slice that holds it
            # the running max and sum start from `others_logit`, one logit for ids outside `weight`
            top = torch.full_like(scale, others_logit)  # (n, 1)
            total = torch.full_like(scale, 0.0 if others_logit == float("-inf") else 1.0)
            target_logit = torch.zeros_like(scale)
            slices = []
            for v0 in vocab_starts:
                logits = (h @ weight[v0:v0 + chunk_vocab].t()).to(acc)  # (n, v)
                inside = (t >= v0) & (t < v0 + logits.shape[1])
                local_t = (t - v0).clamp(0, logits.shape[1] - 1)
                target_logit += torch.where(inside, logits.gather(1, local_t), 0.0)
                new_top = torch.maximum(top, logits.amax(dim=1, keepdim=True))
                total.mul_((top - new_top).exp()).add_(logits.sub_(new_top).exp_().sum(dim=1, keepdim=True))
                top = new_top
                if grads:
                    slices.append((v0, logits, new_top, inside, local_t))
            lse = top + total.log()
            loss += ((lse - target_logit) * scale).sum()
            if not grads:
                continue
            # pass 2: each slice becomes softmax - one_hot = d(row loss)/d logits, then
            # goes straight into the two gradient products
            gh = torch.zeros(h.shape, dtype=acc, device=h.device)
            hs = h * scale.to(h.dtype)
            for v0, probs, slice_top, inside, local_t in slices:
                probs.mul_((slice_top - top).exp() / total)
                probs.scatter_add_(1, local_t, -inside.to(acc))
                g = probs.to(hidden.dtype)
                _add_product(gh, g, weight[v0:v0 + chunk_vocab])
                _add_product(grad_weight[v0:v0 + chunk_vocab], g.t(), hs)
            grad_hidden[rows] = gh * scale
            del slices
        if grads:
            ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_loss, grad_weight * grad_loss, None, None, None, None, None, None
