#!/usr/bin/python3
"""Reference values from PyTorch for tests/test_zoo_rnn.c (Ember's em_lstm_cell, em_gru_cell and
em_char_rnn; see runtime/em_nn.h).

usage: rnn_ref.py OUT_PREFIX cells|char_rnn

cells:    torch.nn.LSTMCell(5, 7) and GRUCell(5, 7) run over 16 steps on a batch of 3 from a
          random initial state; loss = sum_t sum(h_t * wh_t) (+ sum(c_t * wc_t) for the LSTM) with
          fixed random weights. Dumps the weights, inputs, initial state, every h (and c), the loss,
          and the gradients of every parameter and of the initial state; also one step from a zero
          state (cell(x) without hx).
char_rnn: the peer of em_char_rnn(20, 16, 2) below, tokens (2, 16): logits, the cross-entropy over
          all positions and every gradient; then 5 Adam steps (lr 1e-2) on 5 batches, with their
          losses and the final weights.
"""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from refdump import Dump

torch.set_num_threads(1)
torch.manual_seed(0)
dump = Dump()
put = dump.put

STEPS, N, I, H = 16, 3, 5, 7


def cells():
    for tag, cell, lstm in (("lstm", nn.LSTMCell(I, H), True), ("gru", nn.GRUCell(I, H), False)):
        dump.put_module(f"{tag}.param.", cell)
        put(f"{tag}.n_keys", torch.tensor([float(len(cell.state_dict()))]))
        xs = torch.randn(STEPS, N, I)
        h0 = torch.randn(N, H, requires_grad=True)
        c0 = torch.randn(N, H, requires_grad=True)
        wh, wc = torch.randn(STEPS, N, H), torch.randn(STEPS, N, H)
        put(f"{tag}.x", xs)
        put(f"{tag}.h0", h0)
        put(f"{tag}.c0", c0)
        put(f"{tag}.wh", wh)
        put(f"{tag}.wc", wc)
        h, c, loss = h0, c0, 0
        for t in range(STEPS):  # an RNN is a for loop
            if lstm:
                h, c = cell(xs[t], (h, c))
                loss = loss + (c * wc[t]).sum()
                put(f"{tag}.c.{t}", c)
            else:
                h = cell(xs[t], h)
            loss = loss + (h * wh[t]).sum()
            put(f"{tag}.h.{t}", h)
        loss.backward()
        put(f"{tag}.loss", loss)
        dump.put_grads(f"{tag}.grad.", cell)
        put(f"{tag}.grad_h0", h0.grad)
        if lstm:
            put(f"{tag}.grad_c0", c0.grad)
        with torch.no_grad():  # one step from a zero state
            out = cell(xs[0])
            put(f"{tag}.zero_state_h", out[0] if lstm else out)


class CharRNN(nn.Module):
    """em_char_rnn(vocab, hidden, layers): an RNN is a for loop over time steps."""

    def __init__(self, vocab, hidden, layers):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.cells = nn.ModuleList(nn.LSTMCell(hidden, hidden) for _ in range(layers))
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens):  # (N, T) -> (N, T, vocab)
        x = self.embed(tokens)
        n = tokens.shape[0]
        h = [x.new_zeros(n, cell.hidden_size) for cell in self.cells]
        c = [x.new_zeros(n, cell.hidden_size) for cell in self.cells]
        outs = []
        for t in range(tokens.shape[1]):
            inp = x[:, t]
            for l, cell in enumerate(self.cells):
                h[l], c[l] = cell(inp, (h[l], c[l]))
                inp = h[l]
            outs.append(inp)
        return self.head(torch.stack(outs, 1))


def char_rnn():
    V, HID, L, B, T, ADAM_STEPS = 20, 16, 2, 2, 16, 5
    model = CharRNN(V, HID, L)
    dump.put_module("rnn.param.", model)
    put("rnn.n_keys", torch.tensor([float(len(model.state_dict()))]))
    tokens = [torch.randint(0, V, (B, T)) for _ in range(ADAM_STEPS)]
    targets = [torch.randint(0, V, (B, T)) for _ in range(ADAM_STEPS)]
    for s in range(ADAM_STEPS):
        put(f"rnn.tokens.{s}", tokens[s].float())
        put(f"rnn.targets.{s}", targets[s].float())
    logits = model(tokens[0])
    loss = F.cross_entropy(logits.reshape(-1, V), targets[0].reshape(-1))
    loss.backward()
    put("rnn.logits", logits)
    put("rnn.loss", loss)
    dump.put_grads("rnn.grad.", model)
    model.zero_grad()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for s in range(ADAM_STEPS):
        opt.zero_grad()
        loss = F.cross_entropy(model(tokens[s]).reshape(-1, V), targets[s].reshape(-1))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    put("rnn.adam.losses", torch.tensor(losses))
    dump.put_module("rnn.adam.final.", model)


{"cells": cells, "char_rnn": char_rnn}[sys.argv[2]]()
dump.write(sys.argv[1])
