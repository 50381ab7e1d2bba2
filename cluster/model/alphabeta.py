"""alphabeta.py: an alpha-beta model of one data-parallel training step.

    step(p) = forward + max(backward, end of the last bucket's all-reduce) + optimizer

Backward runs through the layers last-first; a parameter's gradient is ready when its layer's
backward ends. Gradients go into buckets in that order (whole parameters, at most the cap, as
PyTorch DDP and Ember's ddp/plan.c form them); a bucket's all-reduce starts when its last
gradient is ready and the previous bucket's all-reduce has ended (one communication channel,
buckets in order), and runs beside the backward compute:

    compute  |--fwd--|-------------- backward ---------------|      |opt|
    comm                   [ b0 ]   [  b1  ][   b2   ]    [ b3 ]
                                                                 ^ step waits for the last

All-reduce of n bytes over p ranks, g ranks per node, N = ceil(p / g) nodes:
    ring:          2(p-1) a + 2(p-1)/p * n / B          B = slowest link of the ring, a its hop
    hierarchical:  reduce-scatter in the node  (g-1) a_i + (g-1)/g * n / B_i
                   all-reduce across nodes     2(N-1) a_x + 2(N-1)/N * (n/g) / (B_x/g)
                   all-gather in the node      (g-1) a_i + (g-1)/g * n / B_i
B_i: one rank's intra-node bandwidth; B_x: one node's network bandwidth, shared by its g ranks
(each node rank carries 1/g of the data across nodes at the same time, hence B_x/g each).
"""
import math

MB = 1048576.0


class Hardware:
    """A machine type and its network. Bandwidths in bytes/s as achieved (nominal * efficiency),
    latencies in seconds per hop."""

    def __init__(self, name, gpus_per_node, intra_bw, intra_alpha, inter_bw, inter_alpha,
                 mem_bw=None, note=""):
        self.name = name
        self.gpus_per_node = int(gpus_per_node)
        self.intra_bw = float(intra_bw)
        self.intra_alpha = float(intra_alpha)
        self.inter_bw = float(inter_bw)
        self.inter_alpha = float(inter_alpha)
        self.mem_bw = mem_bw
        self.note = note
        if self.gpus_per_node < 1 or self.intra_bw <= 0 or self.inter_bw <= 0:
            raise ValueError("hardware %s: need gpus_per_node >= 1 and positive bandwidths" % name)
        if self.intra_alpha < 0 or self.inter_alpha < 0:
            raise ValueError("hardware %s: latencies must be >= 0" % name)

    def layout(self, p):
        """(ranks per node, nodes) for a world of p: nodes fill up to gpus_per_node."""
        g = min(p, self.gpus_per_node)
        return g, int(math.ceil(p / g))


def allreduce_ring(nbytes, p, hw):
    """One flat ring over all p ranks. Across nodes every byte a rank sends crosses the node's
    link once per step, so the node's network bandwidth bounds the ring."""
    if p <= 1 or nbytes <= 0:
        return 0.0
    g, nodes = hw.layout(p)
    if nodes > 1:
        bw, alpha = min(hw.intra_bw, hw.inter_bw), max(hw.intra_alpha, hw.inter_alpha)
    else:
        bw, alpha = hw.intra_bw, hw.intra_alpha
    return 2 * (p - 1) * alpha + 2.0 * (p - 1) / p * nbytes / bw


def allreduce_hierarchical(nbytes, p, hw):
    """Reduce-scatter in the node, all-reduce of each rank's 1/g part across nodes (g such
    all-reduces share the node's link), all-gather in the node: Ember's path across nodes
    (docs/collectives.md) and NCCL's/Horovod's hierarchical mode."""
    if p <= 1 or nbytes <= 0:
        return 0.0
    g, nodes = hw.layout(p)
    t = 0.0
    if g > 1:
        t += 2 * ((g - 1) * hw.intra_alpha + (g - 1.0) / g * nbytes / hw.intra_bw)
    if nodes > 1:
        t += 2 * (nodes - 1) * hw.inter_alpha + \
            2.0 * (nodes - 1) / nodes * (nbytes / g) / (hw.inter_bw / g)
    return t


ALGORITHMS = {"ring": allreduce_ring, "hierarchical": allreduce_hierarchical}


def buckets(profile, cap_bytes, grad_bytes=4, rule="ember", align=1):
    """Buckets in backward order: a list of (bytes, ready_s), ready_s = when the bucket's last
    gradient is final, counted from the start of backward.
    rule "ember" (ddp/plan.c): open a new bucket when the next parameter would take a non-empty
    one past the cap. rule "pytorch" (reducer's compute_bucket_assignment_by_size): add the
    parameter, close the bucket once it reaches the cap; the first bucket's cap is 1 MB
    (torch.distributed's _DEFAULT_FIRST_BUCKET_BYTES). align: Ember pads every parameter to a
    multiple of 16 floats (em_arena_align)."""
    if rule not in ("ember", "pytorch"):
        raise ValueError("bucket rule must be ember or pytorch, got %r" % rule)
    out = []
    cur, ready, t = 0, 0.0, 0.0
    cap = min(cap_bytes, MB) if rule == "pytorch" else cap_bytes
    for layer in reversed(profile.layers):
        t += layer.backward_s
        for n in reversed(layer.params):
            size = (n + align - 1) // align * align * grad_bytes
            if rule == "ember" and cur > 0 and cur + size > cap:
                out.append((cur, ready))
                cur = 0
            cur += size
            ready = t
            if rule == "pytorch" and cur >= cap:
                out.append((cur, ready))
                cur, cap = 0, cap_bytes
    if cur > 0:
        out.append((cur, ready))
    return out


class Config:
    """How a step runs: bucket cap, algorithm, overlap, gradient element size, bucket rule."""

    def __init__(self, bucket_mb=25.0, algorithm="ring", overlap=True, grad_bytes=4,
                 rule="ember", align=1):
        if bucket_mb <= 0:
            raise ValueError("bucket size must be > 0 MB, got %g" % bucket_mb)
        if algorithm not in ALGORITHMS:
            raise ValueError("algorithm must be one of %s, got %r" % (", ".join(ALGORITHMS),
                                                                       algorithm))
        self.bucket_mb = float(bucket_mb)
        self.algorithm = algorithm
        self.overlap = overlap
        self.grad_bytes = grad_bytes
        self.rule = rule
        self.align = align

    def but(self, **kw):
        d = dict(self.__dict__)
        d.update(kw)
        return Config(**d)


def optimizer_s(profile, hw, bytes_per_param=20):
    """The optimizer step when the profile has none: memory-bound, SGD with momentum reads
    parameter, gradient and momentum and writes parameter and momentum (5 x 4 bytes)."""
    if profile.optimizer_s is not None:
        return profile.optimizer_s
    if not hw.mem_bw:
        return 0.0
    return profile.param_count() * bytes_per_param / hw.mem_bw


def step(profile, hw, p, cfg):
    """One step at world size p (every rank holds the profile's batch: weak scaling).
    Returns a dict of times in seconds and the bucket count."""
    fwd, bwd, opt = profile.forward_s, profile.backward_s(), optimizer_s(profile, hw)
    bl = buckets(profile, cfg.bucket_mb * MB, cfg.grad_bytes, cfg.rule, cfg.align)
    ar = ALGORITHMS[cfg.algorithm]
    end, comm = 0.0, 0.0
    for nbytes, ready in bl:
        c = ar(nbytes, p, hw)
        start = max(ready if cfg.overlap else bwd, end)
        end = start + c
        comm += c
    tail = max(bwd, end)
    g, nodes = hw.layout(p)
    return {"world": p, "ranks_per_node": g, "nodes": nodes, "forward_s": fwd, "backward_s": bwd,
            "optimizer_s": opt, "comm_s": comm, "exposed_s": tail - bwd,
            "step_s": fwd + tail + opt, "buckets": len(bl)}


def efficiency(profile, hw, p, cfg):
    """Weak-scaling efficiency: the step of one rank (no communication) over the step at p."""
    one = step(profile, hw, 1, cfg)["step_s"]
    return one / step(profile, hw, p, cfg)["step_s"]


BUCKET_CANDIDATES_MB = [0.5, 1, 2, 4, 8, 16, 25, 32, 64, 128, 256, 1024]


def best_bucket(profile, hw, p, cfg, candidates=BUCKET_CANDIDATES_MB):
    """The bucket cap (MB) with the shortest step at p, and that step; ties go to the smaller."""
    best = None
    for mb in candidates:
        t = step(profile, hw, p, cfg.but(bucket_mb=mb))["step_s"]
        if best is None or t < best[1] * (1 - 1e-12):
            best = (mb, t)
    return best


def comm_bound_at(profile, hw, cfg, worlds):
    """The smallest world size whose all-reduce time per step (the sum over buckets) reaches the
    backward compute it could hide behind: from there on the step grows with communication.
    None when no world size in `worlds` gets there."""
    bwd = profile.backward_s()
    for p in worlds:
        if p > 1 and step(profile, hw, p, cfg)["comm_s"] >= bwd:
            return p
    return None


def powers_of_two(limit=1024):
    out, p = [], 1
    while p <= limit:
        out.append(p)
        p *= 2
    return out


def sweep(profile, hw, cfg, worlds=None, with_best=True):
    """Rows for every world size: the step, its parts, efficiency, and the best bucket cap."""
    worlds = worlds or powers_of_two()
    one = step(profile, hw, 1, cfg)["step_s"]
    rows = []
    for p in worlds:
        r = step(profile, hw, p, cfg)
        r["efficiency"] = one / r["step_s"]
        r["samples_per_s"] = p * profile.batch / r["step_s"]
        if with_best:
            r["best_bucket_mb"], best_t = best_bucket(profile, hw, p, cfg)
            r["best_efficiency"] = one / best_t
        rows.append(r)
    return rows
