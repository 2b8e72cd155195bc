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
