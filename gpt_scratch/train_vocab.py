"""A training-time vocabulary: only the ids the training split uses (train_vocab: data).

Tiny Shakespeare uses ~11-12k of GPT-2's 50,257 ids, and the vocabulary projection is
most of a small model's FLOPs. With `train_vocab: data` the embedding rows of the ids
the training split never uses are set to zero and stay there (no input and no gradient
ever reaches them), so each of those ids has logit exactly 0 and the loss over the used
ids plus one logit for the rest (lm_head_loss.py, `vocab_ids`) is still the
full-vocabulary loss. The saved model is an ordinary full-vocabulary GPT-2, and its
validation loss is computed over all ids.
"""

import numpy as np
import torch


def used_token_ids(dataset, vocab_size, chunk=4096):
    """Sorted ids that occur in a dataset of blocks (rows with "input_ids"), one pass in chunks."""
    seen = np.zeros(vocab_size, dtype=bool)
    for start in range(0, len(dataset), chunk):
        rows = dataset[start:start + chunk]["input_ids"]
        ids = np.asarray(rows.numpy() if torch.is_tensor(rows) else rows).reshape(-1)
        seen[ids] = True
    return torch.from_numpy(np.flatnonzero(seen))


@torch.no_grad()
def zero_unused_rows(model, ids):
    """Set the token-embedding rows (tied to lm_head) outside `ids` to zero."""
    weight = model.get_input_embeddings().weight
    keep = torch.zeros(weight.shape[0], dtype=torch.bool, device=weight.device)
    keep[ids.to(weight.device)] = True
    weight[~keep] = 0
