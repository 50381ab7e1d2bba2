#!/usr/bin/python3
"""Reference values from PyTorch for tests/test_zoo_gpt.c.

A GPT written as nanoGPT's model.py (its manual attention path: masked_fill with -inf, softmax;
nn.GELU(); pre-norm blocks; the head tied to the token embedding with lm_head.weight =
wte.weight), in a tiny configuration. Writes (tests/torchref.h's format) its initial state_dict
(without the duplicate key lm_head.weight), the tokens and targets of STEPS batches, the logits,
loss and every parameter gradient of batch 0 (wte's includes the head's part), then the per-step
losses and final weights of STEPS AdamW steps from the same weights.

usage: gpt_ref.py OUT_PREFIX
"""
import math
import sys

import torch
import torch.nn as nn
from torch.nn import functional as F

from refdump import Dump

torch.set_num_threads(1)
torch.manual_seed(0)
STEPS = 10
N, T = 2, 16


class Config:  # em_gpt_config of the test
    vocab_size = 64
    block_size = 16
    n_layer = 2
    n_head = 2
    n_embd = 32
    dropout = 0.0
    bias = True


class LayerNorm(nn.Module):
    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.attn_dropout = nn.Dropout(cfg.dropout)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.n_head = cfg.n_head
        self.n_embd = cfg.n_embd
        # nanoGPT registers this mask as a buffer "bias"; not persistent here, so that the
        # state_dict holds parameters only, as Ember's model (which masks with em_causal_mask).
        mask = torch.tril(torch.ones(cfg.block_size, cfg.block_size))
        self.register_buffer("mask", mask.view(1, 1, cfg.block_size, cfg.block_size),
                             persistent=False)

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.mask[:, :, :T, :T] == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        att = self.attn_dropout(att)
        y = att @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1 = LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            drop=nn.Dropout(cfg.dropout),
            h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
            ln_f=LayerNorm(cfg.n_embd, bias=cfg.bias),
        ))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx):
        t = idx.size(1)
        pos = torch.arange(0, t, dtype=torch.long)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))


def loss_of(logits, targets):
    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


cfg = Config()
model = GPT(cfg)
dump = Dump()
put = dump.put
init = {k: v.clone() for k, v in model.state_dict().items() if k != "lm_head.weight"}
for k, v in init.items():
    put("param." + k, v)
put("n_state", torch.tensor([float(len(init))]))
put("n_params", torch.tensor([float(sum(p.numel() for p in model.parameters()))]))
xs = [torch.randint(0, cfg.vocab_size, (N, T)) for _ in range(STEPS)]
ys = [torch.randint(0, cfg.vocab_size, (N, T)) for _ in range(STEPS)]
for s in range(STEPS):
    put(f"x.{s}", xs[s].float())
    put(f"y.{s}", ys[s].float())

# One forward/backward on batch 0: logits, loss, every gradient.
logits = model(xs[0])
loss = loss_of(logits, ys[0])
loss.backward()
put("logits", logits)
put("loss", loss)
dump.put_grads("grad.", model)

# AdamW from the same weights, on every parameter (wte once).
model.load_state_dict(init, strict=False)  # lm_head.weight is wte
model.zero_grad(set_to_none=True)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
losses = []
for s in range(STEPS):
    opt.zero_grad()
    loss = loss_of(model(xs[s]), ys[s])
    loss.backward()
    opt.step()
    losses.append(loss.item())
put("adamw.losses", torch.tensor(losses))
for k, p in model.named_parameters():
    put("adamw.final." + k, p)

dump.write(sys.argv[1])
