#!/usr/bin/python3
"""Reference values from PyTorch for tests/test_torch_ref.c.

Builds the same models as Ember's zoo (em_mlp, em_small_cnn; see runtime/em_nn.h), runs a forward
and backward pass, then 20 SGD-momentum steps and 20 AdamW steps, and writes every tensor as raw
little-endian float32 into OUT.bin with an index OUT.txt of lines "name count offset_in_floats".

usage: torch_ref.py OUT_PREFIX
"""
import sys

import torch
import torch.nn as nn

from refdump import Dump

torch.set_num_threads(1)
torch.manual_seed(0)
STEPS = 20

dump = Dump()
put = dump.put


def mlp():  # em_mlp(32, {64, 32}, 2, 10)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def cnn():  # em_small_cnn(1, 12, 12, 10)
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 3 * 3, 1024), nn.ReLU(), nn.Linear(1024, 10))


def run(tag, make, xshape, batch):
    model = make()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    for k, v in init.items():
        put(f"{tag}.param.{k}", v)
    xs = [torch.randn(batch, *xshape) for _ in range(STEPS)]
    ys = [torch.randint(0, 10, (batch,)) for _ in range(STEPS)]
    for s in range(STEPS):
        put(f"{tag}.x.{s}", xs[s])
        put(f"{tag}.y.{s}", ys[s].float())
    # One forward/backward on batch 0: logits, loss, every gradient.
    logits = model(xs[0])
    loss = nn.functional.cross_entropy(logits, ys[0])
    loss.backward()
    put(f"{tag}.logits", logits)
    put(f"{tag}.loss", loss)
    for k, p in model.named_parameters():
        put(f"{tag}.grad.{k}", p.grad)
    # Training runs from the same initial weights.
    for opt_name, make_opt in (
        ("sgd", lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9)),
        ("adamw", lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01)),
    ):
        model.load_state_dict(init)
        opt = make_opt(model.parameters())
        losses = []
        for s in range(STEPS):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xs[s]), ys[s])
            loss.backward()
            opt.step()
            losses.append(loss.item())
        put(f"{tag}.{opt_name}.losses", torch.tensor(losses))
        for k, p in model.named_parameters():
            put(f"{tag}.{opt_name}.final.{k}", p)


run("mlp", mlp, (32,), 16)
run("cnn", cnn, (1, 12, 12), 4)

dump.write(sys.argv[1])
