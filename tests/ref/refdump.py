"""Writes reference tensors for tests/torchref.h: raw little-endian float32 in PREFIX.bin and an
index PREFIX.txt of lines "name count offset_in_floats". Integers (labels, tokens) are written as
floats, exact below 2**24."""
import numpy as np


class Dump:
    def __init__(self):
        self.records = []  # (name, float32 ndarray)

    def put(self, name, t):
        # A copy: .numpy() shares memory with the tensor, which later steps modify in place.
        self.records.append((name, t.detach().cpu().double().numpy().astype(np.float32).ravel().copy()))

    def put_module(self, prefix, module):
        """Every entry of module's state_dict (parameters and buffers) as PREFIX + key."""
        for k, v in module.state_dict().items():
            self.put(prefix + k, v)

    def put_grads(self, prefix, module):
        for k, p in module.named_parameters():
            self.put(prefix + k, p.grad)

    def write(self, prefix):
        offset = 0
        with open(prefix + ".bin", "wb") as fb, open(prefix + ".txt", "w") as ft:
            for name, arr in self.records:
                fb.write(arr.astype("<f4").tobytes())
                ft.write(f"{name} {arr.size} {offset}\n")
                offset += arr.size
