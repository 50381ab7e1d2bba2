"""published.py: the hardware of the published scaling results, the single-GPU compute rates they
report, the results themselves, and the one set of assumptions the model uses for all of them.

Sources (also in docs/scaling.md):
  [pt-bench] PyTorch, benchmarks/distributed/ddp/README.md (github.com/pytorch/pytorch): DDP with
      NCCL, batch 32 per GPU, 8 DGX machines with V100 GPUs, "4x 100Gb InfiniBand per machine";
      per-GPU ex/sec (p50) at 1 GPU without DDP and at 8 and 16 GPUs.
  [horovod] Horovod README (github.com/uber/horovod, early 2018, the benchmarks behind Sergeev &
      Del Balso, arXiv:1802.05799): "128 servers with 4 Pascal GPUs each connected by
      RoCE-capable 25 Gbit/s network ... 90% scaling efficiency for both Inception V3 and
      ResNet-101, and 68% scaling efficiency for VGG-16"; tables for 4 such servers (16 GPUs,
      single-GPU baseline at batch 64: Inception V3 134.4, ResNet-101 119.4, VGG-16 130.9
      images/s) and 16 servers on a plain 40 Gbit/s network (64 GPUs, baseline 148.8, 136.0,
      149.6 images/s).
  [ddp-paper] Li et al., "PyTorch Distributed: Experiences on Accelerating Data Parallel
      Training", VLDB 2020 (arXiv:2006.15704): "near-linear scalability using 256 GPUs"
      (ResNet-50, NCCL). Its figure's values could not be retrieved here; the check reads
      near-linear as an efficiency of at least 0.90, and the cluster as V100 servers of 8 GPUs
      with one 100 Gbit/s InfiniBand link each (an assumption, stated in the doc).
"""
from alphabeta import Config, Hardware
import profiles

# ---- the assumptions: one set for every case, not tuned per case ------------------------------
ETA = 0.8            # achieved fraction of a link's nominal bandwidth (network, NVLink, PCIe, HBM)
ALPHA_INTRA = 3e-6   # s per hop inside a node (NVLink, PCIe, shared memory)
ALPHA_RDMA = 5e-6    # s per hop across nodes over InfiniBand / RoCE
ALPHA_TCP = 30e-6    # s per hop across nodes over kernel TCP
GBIT = 1e9 / 8       # bytes/s in one Gbit/s
GBYTE = 1e9


def hw(name, gpn, intra_nominal, inter_nominal, inter_alpha, mem_nominal, note):
    return Hardware(name, gpn, ETA * intra_nominal, ALPHA_INTRA, ETA * inter_nominal, inter_alpha,
                    ETA * mem_nominal if mem_nominal else None, note)


HARDWARE = {
    # DGX-1 (V100): 6 NVLink2 links of 25 GB/s per direction per GPU; 4 x 100 Gbit/s IB.
    "dgx1-v100-4x100ib": hw("dgx1-v100-4x100ib", 8, 150 * GBYTE, 4 * 100 * GBIT, ALPHA_RDMA,
                            900 * GBYTE, "8 V100 (NVLink), 4x100 Gbit/s InfiniBand [pt-bench]"),
    "v100x8-1x100ib": hw("v100x8-1x100ib", 8, 150 * GBYTE, 100 * GBIT, ALPHA_RDMA, 900 * GBYTE,
                         "8 V100 (NVLink), 1x100 Gbit/s InfiniBand (assumed for [ddp-paper])"),
    # 4 P100 on PCIe 3.0 x16 (15.75 GB/s per direction).
    "p100x4-25gbe-roce": hw("p100x4-25gbe-roce", 4, 15.75 * GBYTE, 25 * GBIT, ALPHA_RDMA,
                            732 * GBYTE, "4 P100 (PCIe), 25 Gbit/s RoCE [horovod]"),
    "p100x4-40gbe-tcp": hw("p100x4-40gbe-tcp", 4, 15.75 * GBYTE, 40 * GBIT, ALPHA_TCP,
                           732 * GBYTE, "4 P100 (PCIe), plain 40 Gbit/s (TCP) [horovod]"),
}

# Single-GPU step (forward + backward + optimizer, no communication): (batch, seconds) by
# (hardware family, model). From the sources above; nothing else sets compute time.
COMPUTE = {
    ("v100", "resnet50"): (32, 0.097),    # [pt-bench] 1 GPU, no ddp, p50 0.097 s/iter
    ("v100", "resnet101"): (32, 0.162),   # [pt-bench] 1 GPU, no ddp, p50 0.162 s/iter
    ("p100", "inception_v3_noaux"): (64, 64 / 134.4),  # [horovod] 16-GPU table baseline
    ("p100", "resnet101"): (64, 64 / 119.4),
    ("p100", "vgg16"): (64, 64 / 130.9),
    ("p100-40g", "inception_v3_noaux"): (64, 64 / 148.8),  # [horovod] 64-GPU table baseline
    ("p100-40g", "resnet101"): (64, 64 / 136.0),
    ("p100-40g", "vgg16"): (64, 64 / 149.6),
}


def arch_profile(model, family, hardware):
    """The profile of a built architecture with the published single-GPU step of `family`."""
    batch, step_s = COMPUTE[(family, model)]
    layers = profiles.build(model)
    n = sum(l.param_count() for l in layers)
    opt = n * 20 / hardware.mem_bw
    return profiles.profile_from_arch(model, layers, batch, step_s, opt)


# DDP (PyTorch): 25 MB buckets, first bucket 1 MB, NCCL ring. Horovod: Tensor Fusion fills a
# 64 MB buffer with the tensors that are ready; NCCL 2 ring over all ranks.
DDP = Config(bucket_mb=25, algorithm="ring", rule="pytorch")
HOROVOD = Config(bucket_mb=64, algorithm="ring", rule="ember")


class Case:
    def __init__(self, key, source, model, family, hardware, world, published, cfg, note,
                 at_least=False):
        self.key, self.source, self.model, self.family = key, source, model, family
        self.hardware, self.world, self.published = hardware, world, published
        self.cfg, self.note, self.at_least = cfg, note, at_least


CASES = [
    Case("ptbench-r50-8", "pt-bench", "resnet50", "v100", "dgx1-v100-4x100ib", 8, 307 / 329, DDP,
         "307 vs 329 ex/s per GPU (1 node)"),
    Case("ptbench-r50-16", "pt-bench", "resnet50", "v100", "dgx1-v100-4x100ib", 16, 306 / 329,
         DDP, "306 vs 329 ex/s per GPU (2 nodes): the issue's ~93%"),
    Case("ptbench-r101-16", "pt-bench", "resnet101", "v100", "dgx1-v100-4x100ib", 16, 178 / 197,
         DDP, "178 vs 197 ex/s per GPU (2 nodes)"),
    Case("ddp-paper-r50-256", "ddp-paper", "resnet50", "v100", "v100x8-1x100ib", 256, 0.90, DDP,
         "\"near-linear\", read as >= 0.90", at_least=True),
    Case("horovod-incv3-16", "horovod", "inception_v3_noaux", "p100", "p100x4-25gbe-roce", 16,
         15.0 / 16, HOROVOD, "RDMA Horovod (NCCL) 15.0x on 16"),
    Case("horovod-r101-16", "horovod", "resnet101", "p100", "p100x4-25gbe-roce", 16, 14.6 / 16,
         HOROVOD, "RDMA Horovod (NCCL) 14.6x on 16"),
    Case("horovod-vgg16-16", "horovod", "vgg16", "p100", "p100x4-25gbe-roce", 16, 13.7 / 16,
         HOROVOD, "RDMA Horovod (NCCL) 13.7x on 16"),
    Case("horovod-incv3-64", "horovod", "inception_v3_noaux", "p100-40g", "p100x4-40gbe-tcp", 64,
         53.3 / 64, HOROVOD, "TCP Horovod (NCCL) 53.3x on 64"),
    Case("horovod-r101-64", "horovod", "resnet101", "p100-40g", "p100x4-40gbe-tcp", 64, 56.9 / 64,
         HOROVOD, "TCP Horovod (NCCL) 56.9x on 64"),
    Case("horovod-vgg16-64", "horovod", "vgg16", "p100-40g", "p100x4-40gbe-tcp", 64, 40.7 / 64,
         HOROVOD, "TCP Horovod (NCCL) 40.7x on 64"),
    Case("horovod-incv3-512", "horovod", "inception_v3_noaux", "p100", "p100x4-25gbe-roce", 512,
         0.90, HOROVOD, "the issue's ~90% on 512"),
    Case("horovod-r101-512", "horovod", "resnet101", "p100", "p100x4-25gbe-roce", 512, 0.90,
         HOROVOD, "the issue's ~90% on 512"),
    Case("horovod-vgg16-512", "horovod", "vgg16", "p100", "p100x4-25gbe-roce", 512, 0.68, HOROVOD,
         "68% on 512"),
]

TARGET_POINTS = 0.10  # the target: within 10 points of each published efficiency
