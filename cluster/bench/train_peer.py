#!/usr/bin/python3
"""PyTorch peer for Ember's single-process training benchmark (cluster/bench/train_bench.c).

Same model, data, batch, optimizer and thread count as the C program: trains on Fashion-MNIST
for --steps steps after --warmup untimed steps and prints one BENCH line. Run it with
OPENBLAS_CORETYPE=SkylakeX so that PyTorch's BLAS uses AVX-512 on these machines (DESIGN.md).
With --device cuda the model lives on cuda:0, each batch is gathered on the CPU and copied there
(as the C program does), TF32 is off (Ember computes in f32), and the clock is read after
torch.cuda.synchronize().

usage: train_peer.py --model mlp|cnn|resnet [--steps N] [--warmup N] [--batch N] [--threads N]
                     [--device cpu|cuda]
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

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402


def load(dirname, prefix):
    """The IDX files as tensors, with torch alone (the GPU machine's Python may lack NumPy)."""
    with gzip.open(os.path.join(dirname, f"{prefix}-images-idx3-ubyte.gz")) as f:
        x = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8, offset=16)
    with gzip.open(os.path.join(dirname, f"{prefix}-labels-idx1-ubyte.gz")) as f:
        y = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8, offset=8)
    return x.reshape(-1, 784).float() / 255.0, y.long()


class BasicBlock(nn.Module):
    """torchvision's BasicBlock (conv3x3-bn-relu-conv3x3-bn, plus the shortcut, relu), written out
    so that the peer needs no torchvision."""

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class CifarResNet(nn.Module):
    """em_resnet_cifar(depth, in_channels, num_classes): He et al. 2016 section 4.2 with 1x1
    convolution + batch norm shortcuts (as tests/ref/resnet_ref.py)."""

    def __init__(self, depth, in_channels, num_classes):
        super().__init__()
        n = (depth - 2) // 6
        self.inplanes = 16
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(16, n, 1)
        self.layer2 = self._make_layer(32, n, 2)
        self.layer3 = self._make_layer(64, n, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, planes, blocks, stride):
        down = None
        if stride != 1 or self.inplanes != planes:
            down = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False),
                                 nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, down)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def model_for(name):
    if name == "resnet":  # em_resnet_cifar(20, 1, 10)
        return CifarResNet(20, 1, 10)
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
    ap.add_argument("--model", choices=("mlp", "cnn", "resnet"), required=True)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--data", default=os.environ.get("EMBER_FMNIST_DIR",
                                                     "/usr/share/datasets/fashion-mnist"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x, y = load(a.data, "train")
    if a.model != "mlp":
        x = x.view(-1, 1, 28, 28)
    dev = torch.device("cuda:0" if a.device == "cuda" else "cpu")
    if a.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    model = model_for(a.model).to(dev)

    def sync():
        if a.device == "cuda":
            torch.cuda.synchronize()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    perm = torch.randperm(x.shape[0])
    n_batches = x.shape[0] // a.batch

    def step(i):
        idx = perm[(i % n_batches) * a.batch:((i % n_batches) + 1) * a.batch]
        xb, yb = x[idx].to(dev), y[idx].to(dev)
        opt.zero_grad(set_to_none=False)
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        return loss

    for i in range(a.warmup):
        step(i)
    sync()
    t0 = time.perf_counter()
    for i in range(a.steps):
        loss = step(a.warmup + i)
    loss.item()
    sync()
    dt = time.perf_counter() - t0
    sps = a.steps * a.batch / dt
    print(f"pytorch {a.model}: {a.steps} steps of batch {a.batch} in {dt:.3f} s, "
          f"final loss {loss.item():.4f}")
    print(f"BENCH suite=train case={a.model} impl=pytorch ranks=1 device={a.device} "
          f"threads={a.threads} "
          f"batch={a.batch} samples_per_s={sps:.1f} step_ms={1000 * dt / a.steps:.3f}")


if __name__ == "__main__":
    main()
