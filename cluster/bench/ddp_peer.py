#!/usr/bin/python3
"""PyTorch DDP peer for Ember's data-parallel training benchmark (cluster/bench/ddp_bench.c).

Same model (--model mlp: MLP 784-1024-1024-10; --model cnn: em_small_cnn(1, 28, 28, 10), conv 5x5
32 pad 2, ReLU, max-pool 2, conv 5x5 64 pad 2, ReLU, max-pool 2, flatten, fc 3136-1024, ReLU, fc
1024-10, on images viewed as (N, 1, 28, 28)), data (Fashion-MNIST training set, one permutation
with seed 0 shared by all ranks, rank r takes batches r, r+W, ...), batch per rank, optimizer (SGD
lr 0.01, momentum 0.9) and one compute thread per rank as the C program, with torch.nn.parallel.
DistributedDataParallel over gloo, initialised via env:// on 127.0.0.1 and a free port. The
models come from train_peer.model_for: the same layers, parameter names and shapes as Ember's, and
the same initial distributions (PyTorch's reset_parameters, which Ember follows), but not the same
drawn values (two different generators); nor is the permutation the same one (torch.randperm
against em_rng_permutation). What differs is printed on the first output line for the CNN.

  OPENBLAS_CORETYPE=SkylakeX ddp_peer.py --nproc 2 [--model mlp|cnn] [--steps N] [--warmup N]
                                         [--batch N] [--threads N] [--bucket-mb X]

The script starts its ranks itself with torch.multiprocessing: Debian's torchrun (PyTorch 1.13
under Python 3.11) fails before starting any worker ("'NoneType' object has no attribute 'get'"
in torch/distributed/elastic/multiprocessing/api.py). Under a launcher that sets RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT (torchrun where it works) it runs as that one rank instead.
Time is measured between two barriers; rank 0 prints the global samples/s and one BENCH line.
"""
import argparse
import os
import socket
import sys
import time

# Thread counts must be fixed before torch (and OpenBLAS, which ignores torch.set_num_threads)
# load: pass --threads N and nothing else decides.
_threads = sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv else "1"
os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = _threads
os.environ["MKL_NUM_THREADS"] = _threads

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_peer import load, model_for  # noqa: E402  (the same data and models)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bucket-mb", type=float, default=25.0)  # PyTorch's default
    ap.add_argument("--nproc", type=int, default=1)
    ap.add_argument("--data", default=os.environ.get("EMBER_FMNIST_DIR",
                                                     "/usr/share/datasets/fashion-mnist"))
    a = ap.parse_args()
    if "RANK" in os.environ:  # started by a launcher
        worker(int(os.environ["RANK"]), a)
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(a.nproc))
    if a.nproc == 1:
        worker(0, a)
    else:
        torch.multiprocessing.spawn(worker, args=(a,), nprocs=a.nproc)


def worker(rank, a):
    os.environ["RANK"] = os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(a.threads)
    dist.init_process_group("gloo", init_method="env://")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    x, y = load(a.data, "train")
    if a.model == "cnn":
        x = x.view(-1, 1, 28, 28)  # (N, 784) -> (N, 1, 28, 28), as ddp_bench.c reshapes a batch
    model = model_for(a.model)
    if rank == 0 and a.model == "cnn":
        names = ", ".join(f"{k} {tuple(v.shape)}" for k, v in model.named_parameters())
        print(f"pytorch cnn: parameters {names} (as em_small_cnn); differs from Ember: initial "
              "values (same distributions, another generator), the batch permutation", flush=True)
    ddp = DDP(model, bucket_cap_mb=a.bucket_mb)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)  # the same permutation on every rank
    perm = torch.randperm(x.shape[0], generator=g)
    n_batches = x.shape[0] // a.batch

    span = min(10, a.warmup + a.steps)  # rank 0's mean loss over the first and last span steps
    losses = []

    def step(s):
        b = (s * world + rank) % n_batches
        idx = perm[b * a.batch:(b + 1) * a.batch]
        opt.zero_grad(set_to_none=False)
        loss = nn.functional.cross_entropy(ddp(x[idx]), y[idx])
        loss.backward()
        opt.step()
        if s < span or s >= a.warmup + a.steps - span:
            losses.append(loss.item())
        return loss

    for s in range(a.warmup):
        step(s)
    dist.barrier()
    t0 = time.perf_counter()
    for s in range(a.steps):
        loss = step(a.warmup + s)
    dist.barrier()
    dt = time.perf_counter() - t0
    if rank == 0:
        sps = a.steps * a.batch * world / dt
        print(f"pytorch {a.model}: {world} ranks, {a.steps} steps of batch {a.batch} per rank in "
              f"{dt:.3f} s, final loss {loss.item():.4f} (rank 0)", flush=True)
        print(f"  loss (rank 0, mean of {span} steps): first steps "
              f"{sum(losses[:span]) / span:.4f}, last steps {sum(losses[-span:]) / span:.4f}",
              flush=True)
        print(f"BENCH suite=train case={a.model} impl=pytorch ranks={world} threads={a.threads} "
              f"batch={a.batch} bucket_mb={a.bucket_mb:g} samples_per_s={sps:.1f} "
              f"step_ms={1000 * dt / a.steps:.3f}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
