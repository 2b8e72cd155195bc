"""The main job's recipe levers: learning-rate schedules, Muon + AdamW, the training-time vocabulary."""

import copy

import pytest
import torch

from gpt_scratch import GPTConfig, GPTForCausalLM
from gpt_scratch.train import TrainConfig
from gpt_scratch.train.data import TokenBlocks
from gpt_scratch.train.loop import restrict_vocabulary
from gpt_scratch.train.optim import MuonWithAdamW, lr_at, make_optimizer


def test_wsd_schedule_warms_up_holds_then_decays_linearly():
    cfg = TrainConfig(lr_schedule="wsd", learning_rate=1.0, min_lr=0.1, warmup_steps=10, max_steps=100,
                      cooldown_fraction=0.2)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(lr == 1.0 for lr in lrs[10:80])  # stable
    assert lrs[90] == pytest.approx(0.55) and lrs[99] == pytest.approx(1.0 - 0.9 * 19 / 20)
    assert lr_at(100, cfg) == 0.1
    cosine = TrainConfig(learning_rate=1.0, min_lr=0.1, warmup_steps=10, max_steps=100)
    assert lr_at(55, cosine) == pytest.approx(0.55)  # halfway down the cosine


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return GPTForCausalLM(GPTConfig(vocab_size=64, n_layer=2, n_head=2, n_embd=16, block_size=16)).train()


def steps(model, opt, batches):
    losses = []
    for x in batches:
        opt.zero_grad(set_to_none=True)
        loss = model(x, labels=x, skip_logits=True).loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_muon_takes_the_hidden_matrices_adamw_the_rest_and_resumes_exactly():
    cfg = TrainConfig(optimizer="muon", learning_rate=1e-2)
    model = tiny_model()
    opt = make_optimizer(model, cfg, "cpu")
    assert isinstance(opt, MuonWithAdamW)
    muon, adamw = opt.parts["muon"], opt.parts["adamw"]
    muon_ids = {id(p) for g in muon.param_groups for p in g["params"]}
    assert id(model.transformer.h[0].attn.c_attn.weight) in muon_ids
    assert id(model.transformer.wte.weight) not in muon_ids and id(model.transformer.wpe.weight) not in muon_ids
    all_ids = muon_ids | {id(p) for g in adamw.param_groups for p in g["params"]}
    assert all_ids == {id(p) for p in model.parameters()}
    pattern = (torch.arange(16) * 5) % 64  # a sequence a model can learn in a few steps
    batches = [pattern.repeat(4, 1).roll(i, dims=1) for i in range(6)]
    straight = steps(model, opt, batches)
    assert straight[-1] < straight[0]
    # stop after 3 steps, save, restore into a fresh model and optimizer, continue: same losses
    model2 = tiny_model()
    opt2 = make_optimizer(model2, cfg, "cpu")
    first = steps(model2, opt2, batches[:3])
    saved = (copy.deepcopy(model2.state_dict()), copy.deepcopy(opt2.state_dict()))
    model3 = tiny_model(seed=5)
    model3.load_state_dict(saved[0])
    opt3 = make_optimizer(model3, cfg, "cpu")
    opt3.load_state_dict(saved[1])
    assert first + steps(model3, opt3, batches[3:]) == straight


def test_training_vocabulary_is_the_ids_the_data_uses_and_the_rest_stays_zero(tmp_path):
    import numpy as np

    class Say:
        device = "cpu"

        def print(self, *a):
            pass

    np.array([3, 5, 7, 5, 9, 3, 3, 11, 60, 61, 62, 63], dtype=np.uint16).tofile(tmp_path / "t.u16")
    train = TokenBlocks(tmp_path / "t.u16", 0, 2, 4)  # the first 8 tokens; the last 4 are validation's
    kw = restrict_vocabulary(TrainConfig(train_vocab="data"), model := tiny_model(), train, Say())
    ids = kw["loss_vocab_ids"]
    assert ids.tolist() == [3, 5, 7, 9, 11]
    assert restrict_vocabulary(TrainConfig(train_vocab="full"), tiny_model(), train, Say()) == {}
    w = model.transformer.wte.weight
    assert torch.all(w[[0, 1, 2, 4, 63]] == 0) and torch.all(w[ids].abs().sum(1) > 0)
    opt = make_optimizer(model, TrainConfig(), "cpu")
    x = ids[torch.randint(0, len(ids), (4, 16))]
    for _ in range(3):
        opt.zero_grad()
        model(x, labels=x, skip_logits=True, **kw).loss.backward()
        opt.step()
    keep = torch.zeros(64, dtype=torch.bool)
    keep[ids] = True
    assert torch.all(w[~keep] == 0)  # no gradient and no decay moved them


def test_train_vocab_auto_is_what_the_run_can_use():
    assert TrainConfig().vocab_restricted  # a GPT from scratch: the data's ids
    assert not TrainConfig(model="bigram", n_embd=32).vocab_restricted
    assert not TrainConfig(init_from="some/gpt2").vocab_restricted  # pretrained rows are kept
    assert not TrainConfig(train_vocab="full").vocab_restricted


@pytest.mark.parametrize("kw, message", [
    (dict(optimizer="sgd"), "optimizer must be one of adamw, muon"),
    (dict(lr_schedule="linear"), "lr_schedule must be one of cosine, wsd"),
    (dict(train_vocab="data", init_from="openai-community/gpt2"), "train_vocab data zeroes the embeddings"),
    (dict(cooldown_fraction=0), "cooldown_fraction must be in"),
    (dict(mixed_precision="fp8"), "mixed_precision must be"),
    (dict(model="bigram", n_embd=32, optimizer="muon"), "the bigram has none"),
])
def test_bad_lever_settings_are_named(kw, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kw)


def test_weight_average_is_what_is_exported_and_resumes_exactly(tmp_path):
    import random

    from safetensors.torch import load_file

    from gpt_scratch.train import main as train_main
    from test_training import tiny_args

    rng = random.Random(0)
    (tmp_path / "t.txt").write_text(" ".join(rng.choice(["ka", "lo", "mi", "ren", "tor"]) for _ in range(6000)))
    common = dict(ema_decay=0.9, eval_interval=0, save_interval=4, lr_decay_steps=8, dropout=0.1)
    train_main(tiny_args(str(tmp_path / "t.txt"), tmp_path / "full", max_steps=8, **common))
    train_main(tiny_args(str(tmp_path / "t.txt"), tmp_path / "part", max_steps=4, **common))
    train_main(tiny_args(str(tmp_path / "t.txt"), tmp_path / "part", max_steps=8, resume="auto", **common))
    a, b = (load_file(tmp_path / run / "model" / "model.safetensors") for run in ("full", "part"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the average survived the checkpoint bit for bit
    last = load_file(tmp_path / "full" / "checkpoint-8" / "model.safetensors")  # the last weights themselves
    assert not torch.equal(a["transformer.h.0.mlp.c_fc.weight"], last["transformer.h.0.mlp.c_fc.weight"])
