#!/usr/bin/python3
"""PyTorch peer for Ember's single-process training benchmark (cluster/bench/train_bench.c).

Same model, data, batch, optimizer and thread count as the C program: trains on Fashion-MNIST
for --steps steps after --warmup untimed steps and prints one BENCH line. Run it with
OPENBLAS_CORETYPE=SkylakeX so that PyTorch's BLAS uses AVX-512 on these machines (DESIGN.md).

usage: train_peer.py --model mlp|cnn [--steps N] [--warmup N] [--batch N] [--threads N]
"""
import argparse
import gzip
import os
import sys
import time

# Thread counts must be fixed before torch (and OpenBLAS, which ignores torch.set_num_threads)
# load: pass --threads N and nothing else decides.
_threads = sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv else "1"
os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = _threads
os.environ["MKL_NUM_THREADS"] = _threads

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402


def load(dirname, prefix):
    with gzip.open(os.path.join(dirname, f"{prefix}-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784).astype(np.float32) / 255.0
    with gzip.open(os.path.join(dirname, f"{prefix}-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


def model_for(name):
    if name == "mlp":  # em_mlp(784, {1024, 1024}, 2, 10)
        return nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                             nn.Linear(1024, 10))
    # em_small_cnn(1, 28, 28, 10)
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 1024), nn.ReLU(), nn.Linear(1024, 10))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=("mlp", "cnn"), required=True)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", default=os.environ.get("EMBER_FMNIST_DIR",
                                                     "/usr/share/datasets/fashion-mnist"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x, y = load(a.data, "train")
    if a.model == "cnn":
        x = x.view(-1, 1, 28, 28)
    model = model_for(a.model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    perm = torch.randperm(x.shape[0])
    n_batches = x.shape[0] // a.batch

    def step(i):
        idx = perm[(i % n_batches) * a.batch:((i % n_batches) + 1) * a.batch]
        xb, yb = x[idx], y[idx]
        opt.zero_grad(set_to_none=False)
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        return loss

    for i in range(a.warmup):
        step(i)
    t0 = time.perf_counter()
    for i in range(a.steps):
        loss = step(a.warmup + i)
    loss.item()
    dt = time.perf_counter() - t0
    sps = a.steps * a.batch / dt
    print(f"pytorch {a.model}: {a.steps} steps of batch {a.batch} in {dt:.3f} s, "
          f"final loss {loss.item():.4f}")
    print(f"BENCH suite=train case={a.model} impl=pytorch ranks=1 threads={a.threads} "
          f"batch={a.batch} samples_per_s={sps:.1f} step_ms={1000 * dt / a.steps:.3f}")


if __name__ == "__main__":
    main()
