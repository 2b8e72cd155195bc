"""Test models whose outputs depend on every detail of the computation."""

import torch


def widen(model):
    """Redraw every matrix with std 0.5 (from torch's current RNG) and return the model in eval mode.

    With GPT-2's 0.02 init every position predicts nearly the same token, so a wrong
    mask, cache or position would go unnoticed by an argmax comparison.
    """
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.5)
    return model.eval()


def argmax_loop(model, ids, n):
    """Greedy decoding at its plainest: the whole sequence through the model for every new token, no cache."""
    for _ in range(n):
        nxt = model(ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
    return ids
