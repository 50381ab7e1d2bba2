#!/usr/bin/python3
"""PyTorch peer for Ember's data-loader benchmark (dataloader/bench/loaderbench.c).

The same work as the C program: the Fashion-MNIST training set read once (gzip + numpy, u8),
outside any timing; a map-style Dataset whose __getitem__ decodes and normalizes one sample as
Ember's IDX dataset does (u8 -> f32 / 255, flat 784; label as an int); a DataLoader with batch 64,
shuffle, drop_last off, a generator seeded with the round number. Every batch is touched minimally
(its first label goes into a checksum) and the sample count is checked. For each workers value
and round:

  fmnist             t0; DataLoader(..., persistent_workers=False); one epoch; t1
                     (worker processes start and are joined inside the epoch: what PyTorch's
                     default costs per epoch)
  fmnist_persistent  DataLoader(..., persistent_workers=True); one untimed epoch; t0; one epoch;
                     t1 (workers already running; with 0 workers simply the second epoch)

and prints the median over the rounds as BENCH lines (DESIGN.md, "Performance rules").
Run with /usr/bin/python3 (Debian's python3-torch).

usage: loader_peer.py [--workers 0,1,2] [--rounds 5] [--epochs 1] [--batch 64] [--data DIR]
"""
import argparse
import gzip
import os
import statistics
import time

# One thread for torch's intra-op pool (and OpenBLAS, which ignores torch.set_num_threads), fixed
# before torch loads, as in cluster/bench/train_peer.py. DataLoader workers also set 1 themselves.
os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402


def read_idx(path, offset):
    with gzip.open(path) as f:  # bytearray: writable, so torch.from_numpy does not warn
        return np.frombuffer(bytearray(f.read()), np.uint8, offset=offset)


class FashionMNIST(Dataset):
    """images (N, 784) u8, labels (N) u8, decoded per sample like Ember's dl_idx dataset."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return torch.from_numpy(self.images[i]).float().div_(255).view(784), int(self.labels[i])


def make_loader(ds, a, workers, seed, persistent):
    return DataLoader(ds, batch_size=a.batch, shuffle=True, drop_last=False, num_workers=workers,
                      generator=torch.Generator().manual_seed(seed),
                      persistent_workers=persistent and workers > 0)


def run_epochs(loader, epochs):
    samples = checksum = 0
    for _ in range(epochs):
        for x, y in loader:
            samples += y.shape[0]
            checksum += int(y[0])
    return samples, checksum


def one_round(ds, a, workers, persistent, seed):
    """samples/s of one round, and the checksum."""
    if persistent:
        loader = make_loader(ds, a, workers, seed, True)
        _, checksum = run_epochs(loader, 1)
        t0 = time.perf_counter()
        samples, c = run_epochs(loader, a.epochs)
        t1 = time.perf_counter()
        del loader  # shuts the persistent workers down, outside the timing
    else:
        t0 = time.perf_counter()
        loader = make_loader(ds, a, workers, seed, False)
        samples, checksum = run_epochs(loader, a.epochs)
        t1 = time.perf_counter()
        c = 0
    if samples != a.epochs * len(ds):
        raise SystemExit(f"loader_peer: {samples} samples handed out, "
                         f"expected {a.epochs * len(ds)}")
    return samples / (t1 - t0), checksum + c


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--data", default=os.environ.get("EMBER_FMNIST_DIR",
                                                     "/usr/share/datasets/fashion-mnist"))
    a = ap.parse_args()
    workers_list = [int(w) for w in a.workers.split(",")]
    if a.rounds < 1 or a.epochs < 1 or a.batch < 1 or min(workers_list) < 0:
        ap.error("--rounds, --epochs and --batch must be positive, workers >= 0")
    torch.set_num_threads(1)

    images = read_idx(os.path.join(a.data, "train-images-idx3-ubyte.gz"), 16).reshape(-1, 784)
    labels = read_idx(os.path.join(a.data, "train-labels-idx1-ubyte.gz"), 8)
    if len(images) != len(labels):
        raise SystemExit(f"loader_peer: {len(images)} images but {len(labels)} labels")
    ds = FashionMNIST(images, labels)
    print(f"pytorch {torch.__version__} DataLoader: Fashion-MNIST train, {len(ds)} samples, "
          f"batch {a.batch}, shuffle, {a.epochs} epoch(s) per round, {a.rounds} rounds")

    cases = ("fmnist", "fmnist_persistent")
    med = {}
    checksum = 0
    for w in workers_list:
        for c in cases:
            rates = []
            for r in range(a.rounds):
                rate, cs = one_round(ds, a, w, c == "fmnist_persistent", r)
                rates.append(rate)
                checksum += cs
            med[c, w] = statistics.median(rates)
            print(f"{c:<18} workers={w} samples/s: " + " ".join(f"{x:.0f}" for x in rates) +
                  f"  median {med[c, w]:.0f}", flush=True)
    print(f"checksum {checksum}")
    for w in workers_list:
        for c in cases:
            print(f"BENCH suite=loader case={c} impl=pytorch ranks=1 workers={w} "
                  f"samples_per_s={med[c, w]:.1f} batch={a.batch} rounds={a.rounds}")


if __name__ == "__main__":
    main()
