"""profiles.py: what the scale-out model knows about a network: its parameters in registration
order (the order model.parameters() / em_parameters list them) and the backward compute time of
each layer, for one GPU at one batch size.

Two sources:
  * architectures built here from their layer shapes (ResNet-50/101, Inception V3, VGG-16 as
    torchvision defines them; Ember's em_mlp and em_small_cnn as runtime/nn/zoo.c does), with
    forward FLOPs per layer; profile_from_arch() spreads a measured single-GPU step time over the
    layers in proportion to their FLOPs;
  * a profile JSON (load_profile), e.g. Ember's own measured per-layer times.

Profile JSON (version 1):
  {"format": "ember-scale-profile", "version": 1, "name": "mlp", "batch": 64,
   "forward_s": 0.002, "optimizer_s": 0.0003,          (optimizer_s optional: else estimated)
   "order": "registration",                           (or "backward": layers listed last-first)
   "layers": [{"name": "0", "params": [802816, 1024], "backward_s": 0.0021}, ...]}
  "params" lists the element counts of the layer's parameter tensors (or "param_count": one
  number); backward_s is the layer's backward time per step (0 for a layer with no compute).
"""
import json
import math

PROFILE_FORMAT = "ember-scale-profile"
PROFILE_VERSION = 1


class Layer:
    """One layer: its parameter tensors (element counts, registration order), forward FLOPs per
    sample (0 when unknown) and backward seconds per step (set by a profile)."""

    def __init__(self, name, params, flops=0.0, backward_s=0.0):
        self.name = name
        self.params = list(params)
        self.flops = float(flops)
        self.backward_s = float(backward_s)

    def param_count(self):
        return sum(self.params)


class Profile:
    """A network at one batch size on one GPU: layers in registration order; forward_s and
    optimizer_s per step; backward time is the sum of the layers' backward_s."""

    def __init__(self, name, batch, layers, forward_s, optimizer_s=None):
        self.name = name
        self.batch = batch
        self.layers = layers
        self.forward_s = float(forward_s)
        self.optimizer_s = optimizer_s

    def param_count(self):
        return sum(l.param_count() for l in self.layers)

    def backward_s(self):
        return sum(l.backward_s for l in self.layers)

    def to_json(self):
        d = {"format": PROFILE_FORMAT, "version": PROFILE_VERSION, "name": self.name,
             "batch": self.batch, "forward_s": self.forward_s, "order": "registration",
             "layers": [{"name": l.name, "params": l.params, "backward_s": l.backward_s}
                        for l in self.layers]}
        if self.optimizer_s is not None:
            d["optimizer_s"] = self.optimizer_s
        return d


class ProfileError(ValueError):
    pass


def _num(d, key, where, minimum=0.0, required=True, default=None):
    if key not in d:
        if required:
            raise ProfileError("%s: missing \"%s\"" % (where, key))
        return default
    v = d[key]
    bad = isinstance(v, bool) or not isinstance(v, (int, float))
    if bad or not math.isfinite(v) or v < minimum:
        raise ProfileError("%s: \"%s\" must be a number >= %g, got %r" % (where, key, minimum, v))
    return v


def profile_from_dict(d, where="profile"):
    """Checks a parsed profile JSON and returns its Profile; ProfileError names the field."""
    if not isinstance(d, dict):
        raise ProfileError("%s: expected a JSON object" % where)
    if d.get("format", PROFILE_FORMAT) != PROFILE_FORMAT:
        raise ProfileError("%s: format is %r, expected %r" % (where, d.get("format"),
                                                              PROFILE_FORMAT))
    if d.get("version", PROFILE_VERSION) != PROFILE_VERSION:
        raise ProfileError("%s: version %r, this reader knows %d" % (where, d.get("version"),
                                                                     PROFILE_VERSION))
    order = d.get("order", "registration")
    if order not in ("registration", "backward"):
        raise ProfileError("%s: order must be \"registration\" or \"backward\", got %r" %
                           (where, order))
    raw = d.get("layers")
    if not isinstance(raw, list) or not raw:
        raise ProfileError("%s: \"layers\" must be a non-empty list" % where)
    layers = []
    for i, l in enumerate(raw):
        lw = "%s: layers[%d]" % (where, i)
        if not isinstance(l, dict):
            raise ProfileError("%s: expected an object" % lw)
        if "params" in l:
            ps = l["params"]
            if not isinstance(ps, list) or any(isinstance(p, bool) or not isinstance(p, int) or
                                               p < 0 for p in ps):
                raise ProfileError("%s: \"params\" must be a list of element counts >= 0" % lw)
        else:
            ps = [int(_num(l, "param_count", lw))]
        layers.append(Layer(str(l.get("name", i)), ps, backward_s=_num(l, "backward_s", lw)))
    if order == "backward":
        layers.reverse()
    opt = _num(d, "optimizer_s", where, required=False)
    return Profile(str(d.get("name", "profile")), int(_num(d, "batch", where, 1)), layers,
                   _num(d, "forward_s", where), opt)


def load_profile(path):
    try:
        with open(path) as f:
            d = json.load(f)
    except OSError as e:
        raise ProfileError("profile %s: %s" % (path, e.strerror))
    except json.JSONDecodeError as e:
        raise ProfileError("profile %s: not JSON (line %d: %s)" % (path, e.lineno, e.msg))
    return profile_from_dict(d, "profile " + path)


def profile_from_arch(name, layers, batch, step_s, optimizer_s, fwd_share=1.0 / 3.0):
    """A Profile from an architecture and one measured single-GPU step time (forward + backward
    + optimizer, no communication) at `batch`. The compute (step_s - optimizer_s) splits into
    forward and backward as 1 : 2 (the backward of a convolution or matmul is two products of
    the forward's size); backward spreads over the layers in proportion to their FLOPs."""
    compute = step_s - optimizer_s
    if compute <= 0:
        raise ProfileError("%s: step time %.3g s leaves no compute after the optimizer's %.3g s" %
                           (name, step_s, optimizer_s))
    total = sum(l.flops for l in layers)
    bwd = compute * (1.0 - fwd_share)
    out = [Layer(l.name, l.params, l.flops, bwd * l.flops / total) for l in layers]
    return Profile(name, batch, out, compute * fwd_share, optimizer_s)


# ---- architectures --------------------------------------------------------------------------
# Each builder returns layers in registration order with forward FLOPs per sample
# (2 * multiply-adds; convolutions and linear layers only: batch norm, activations and pooling
# are counted as free, a simplification stated in docs/scaling.md).

class _Net:
    def __init__(self, h, w, c):
        self.layers = []
        self.h, self.w, self.c = h, w, c

    def conv(self, name, out, kh, kw=None, stride=1, ph=0, pw=None, bias=False, bn=True,
             cin=None, h=None, w=None, move=True):
        """A convolution (plus its batch norm) on input (cin, h, w), default the current shape;
        move=False keeps the current shape (a branch that does not continue the trunk)."""
        kw = kh if kw is None else kw
        pw = ph if pw is None else pw
        cin = self.c if cin is None else cin
        h = self.h if h is None else h
        w = self.w if w is None else w
        ho = (h + 2 * ph - kh) // stride + 1
        wo = (w + 2 * pw - kw) // stride + 1
        macs = cin * kh * kw * out * ho * wo
        self.layers.append(Layer(name, [out * cin * kh * kw] + ([out] if bias else []),
                                 2.0 * macs))
        if bn:
            self.layers.append(Layer(name + ".bn", [out, out], 0.0))
        if move:
            self.h, self.w, self.c = ho, wo, out
        return ho, wo

    def pool(self, k, stride, pad=0):
        self.h = (self.h + 2 * pad - k) // stride + 1
        self.w = (self.w + 2 * pad - k) // stride + 1

    def linear(self, name, cin, out, bias=True):
        self.layers.append(Layer(name, [out * cin] + ([out] if bias else []), 2.0 * cin * out))


def resnet(depth, classes=1000, image=224):
    """torchvision ResNet-50/101/152 (v1.5: the stride sits on the 3x3 convolution)."""
    blocks = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}[depth]
    n = _Net(image, image, 3)
    n.conv("conv1", 64, 7, stride=2, ph=3)
    n.pool(3, 2, 1)
    inplanes = 64
    for li, (planes, count) in enumerate(zip([64, 128, 256, 512], blocks)):
        for b in range(count):
            stride = 2 if (b == 0 and li > 0) else 1
            p = "layer%d.%d." % (li + 1, b)
            h, w = n.h, n.w
            n.conv(p + "conv1", planes, 1)
            n.conv(p + "conv2", planes, 3, stride=stride, ph=1)
            n.conv(p + "conv3", planes * 4, 1)
            if b == 0:  # registered after bn3: the shortcut's 1x1 convolution
                n.conv(p + "downsample", planes * 4, 1, stride=stride, cin=inplanes, h=h, w=w,
                       move=False)
            inplanes = planes * 4
    n.linear("fc", 2048, classes)
    return n.layers


def vgg16(classes=1000, image=224):
    """torchvision vgg16 (no batch norm), classifier on the 7x7x512 map."""
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    n = _Net(image, image, 3)
    i = 0
    for v in cfg:
        if v == "M":
            n.pool(2, 2)
        else:
            n.conv("features.%d" % i, v, 3, ph=1, bias=True, bn=False)
        i += 1 if v == "M" else 2
    n.linear("classifier.0", 512 * 7 * 7, 4096)
    n.linear("classifier.3", 4096, 4096)
    n.linear("classifier.6", 4096, classes)
    return n.layers


def inception_v3(classes=1000, aux=True, image=299):
    """torchvision Inception3 (BasicConv2d = convolution without bias + batch norm). aux: the
    auxiliary classifier on Mixed_6e (torchvision's default for training)."""
    n = _Net(image, image, 3)
    n.conv("Conv2d_1a_3x3", 32, 3, stride=2)
    n.conv("Conv2d_2a_3x3", 32, 3)
    n.conv("Conv2d_2b_3x3", 64, 3, ph=1)
    n.pool(3, 2)
    n.conv("Conv2d_3b_1x1", 80, 1)
    n.conv("Conv2d_4a_3x3", 192, 3)
    n.pool(3, 2)

    def branch(p, specs, cin):
        """A chain of convolutions from the block input; returns its output channels and size."""
        h, w, c = n.h, n.w, cin
        for name, out, kh, kw, stride, ph, pw in specs:
            h2, w2 = n.conv(p + name, out, kh, kw, stride, ph, pw, cin=c, h=h, w=w, move=False)
            h, w, c = h2, w2, out
        return c, h, w

    def block_a(p, pool_features):
        cin = n.c
        c = branch(p, [("branch1x1", 64, 1, 1, 1, 0, 0)], cin)[0]
        c += branch(p, [("branch5x5_1", 48, 1, 1, 1, 0, 0), ("branch5x5_2", 64, 5, 5, 1, 2, 2)],
                    cin)[0]
        c += branch(p, [("branch3x3dbl_1", 64, 1, 1, 1, 0, 0),
                        ("branch3x3dbl_2", 96, 3, 3, 1, 1, 1),
                        ("branch3x3dbl_3", 96, 3, 3, 1, 1, 1)], cin)[0]
        c += branch(p, [("branch_pool", pool_features, 1, 1, 1, 0, 0)], cin)[0]
        n.c = c

    def block_b(p):
        cin = n.c
        c, h, w = branch(p, [("branch3x3", 384, 3, 3, 2, 0, 0)], cin)
        c += branch(p, [("branch3x3dbl_1", 64, 1, 1, 1, 0, 0),
                        ("branch3x3dbl_2", 96, 3, 3, 1, 1, 1),
                        ("branch3x3dbl_3", 96, 3, 3, 2, 0, 0)], cin)[0]
        n.c, n.h, n.w = c + cin, h, w  # + the max-pooled input

    def block_c(p, c7):
        cin = n.c
        c = branch(p, [("branch1x1", 192, 1, 1, 1, 0, 0)], cin)[0]
        c += branch(p, [("branch7x7_1", c7, 1, 1, 1, 0, 0), ("branch7x7_2", c7, 1, 7, 1, 0, 3),
                        ("branch7x7_3", 192, 7, 1, 1, 3, 0)], cin)[0]
        c += branch(p, [("branch7x7dbl_1", c7, 1, 1, 1, 0, 0),
                        ("branch7x7dbl_2", c7, 7, 1, 1, 3, 0),
                        ("branch7x7dbl_3", c7, 1, 7, 1, 0, 3),
                        ("branch7x7dbl_4", c7, 7, 1, 1, 3, 0),
                        ("branch7x7dbl_5", 192, 1, 7, 1, 0, 3)], cin)[0]
        c += branch(p, [("branch_pool", 192, 1, 1, 1, 0, 0)], cin)[0]
        n.c = c

    def block_d(p):
        cin = n.c
        c, h, w = branch(p, [("branch3x3_1", 192, 1, 1, 1, 0, 0),
                             ("branch3x3_2", 320, 3, 3, 2, 0, 0)], cin)
        c += branch(p, [("branch7x7x3_1", 192, 1, 1, 1, 0, 0),
                        ("branch7x7x3_2", 192, 1, 7, 1, 0, 3),
                        ("branch7x7x3_3", 192, 7, 1, 1, 3, 0),
                        ("branch7x7x3_4", 192, 3, 3, 2, 0, 0)], cin)[0]
        n.c, n.h, n.w = c + cin, h, w

    def block_e(p):
        cin = n.c
        c = branch(p, [("branch1x1", 320, 1, 1, 1, 0, 0)], cin)[0]
        branch(p, [("branch3x3_1", 384, 1, 1, 1, 0, 0)], cin)
        c += branch(p, [("branch3x3_2a", 384, 1, 3, 1, 0, 1)], 384)[0]
        c += branch(p, [("branch3x3_2b", 384, 3, 1, 1, 1, 0)], 384)[0]
        branch(p, [("branch3x3dbl_1", 448, 1, 1, 1, 0, 0), ("branch3x3dbl_2", 384, 3, 3, 1, 1, 1)],
               cin)
        c += branch(p, [("branch3x3dbl_3a", 384, 1, 3, 1, 0, 1)], 384)[0]
        c += branch(p, [("branch3x3dbl_3b", 384, 3, 1, 1, 1, 0)], 384)[0]
        c += branch(p, [("branch_pool", 192, 1, 1, 1, 0, 0)], cin)[0]
        n.c = c

    block_a("Mixed_5b.", 32)
    block_a("Mixed_5c.", 64)
    block_a("Mixed_5d.", 64)
    block_b("Mixed_6a.")
    for name, c7 in (("Mixed_6b.", 128), ("Mixed_6c.", 160), ("Mixed_6d.", 160),
                     ("Mixed_6e.", 192)):
        block_c(name, c7)
    if aux:  # 5x5 average pool, stride 3, on the 17x17x768 map: 5x5
        ah = (n.h - 5) // 3 + 1
        n.conv("AuxLogits.conv0", 128, 1, cin=768, h=ah, w=ah, move=False)
        n.conv("AuxLogits.conv1", 768, 5, cin=128, h=ah, w=ah, move=False)
        n.linear("AuxLogits.fc", 768, classes)
    block_d("Mixed_7a.")
    block_e("Mixed_7b.")
    block_e("Mixed_7c.")
    n.linear("fc", 2048, classes)
    return n.layers


def ember_mlp(inputs=784, hidden=(1024, 1024), out=10):
    """em_mlp (runtime/nn/zoo.c): Linear(+bias) and ReLU, named by their Sequential index."""
    layers, prev, i = [], inputs, 0
    for h in list(hidden) + [out]:
        layers.append(Layer(str(i), [h * prev, h], 2.0 * prev * h))
        prev, i = h, i + 2
    return layers


def ember_small_cnn(in_ch=1, h=28, w=28, classes=10):
    """em_small_cnn (runtime/nn/zoo.c): conv5x5(32, pad 2) relu pool2, conv5x5(64) relu pool2,
    linear(64*(h/4)*(w/4), 1024) relu, linear(1024, classes); every layer with a bias."""
    n = _Net(h, w, in_ch)
    n.conv("0", 32, 5, ph=2, bias=True, bn=False)
    n.pool(2, 2)
    n.conv("3", 64, 5, ph=2, bias=True, bn=False)
    n.pool(2, 2)
    flat = 64 * (h // 4) * (w // 4)
    n.linear("7", flat, 1024)
    n.linear("9", 1024, classes)
    return n.layers


# name -> (builder, published parameter total or None)
ARCHITECTURES = {
    "resnet50": (lambda: resnet(50), 25557032),
    "resnet101": (lambda: resnet(101), 44549160),
    "inception_v3": (lambda: inception_v3(aux=True), 27161264),
    "inception_v3_noaux": (lambda: inception_v3(aux=False), None),
    "vgg16": (vgg16, 138357544),
    "ember_mlp": (ember_mlp, None),
    "ember_small_cnn": (ember_small_cnn, None),
}


def build(name):
    if name not in ARCHITECTURES:
        raise ProfileError("unknown model %r (known: %s)" %
                           (name, ", ".join(sorted(ARCHITECTURES))))
    return ARCHITECTURES[name][0]()
