"""ember: Ember's tensors from Python, without copies (ctypes over libember.so).

    import ember, numpy, torch
    t = ember.zeros((2, 3))
    a = numpy.from_dlpack(t)        # views t's memory: a[0, 0] = 1 is seen by t, and back
    w = torch.from_dlpack(t)        # the same memory again
    e = ember.from_dlpack(a)        # NumPy or PyTorch memory as an Ember tensor
    state = ember.load_checkpoint("ckpt.safetensors", prefix="model.")   # name -> mapped array

Reference: docs/python.md.
"""

from ._lib import EmberError
from .checkpoint import Checkpoint, load_checkpoint
from .tensor import Tensor, cuda_device_count, from_dlpack, full, live_tensors, tensor, zeros

__version__ = "0.1"
__all__ = ["Checkpoint", "EmberError", "Tensor", "cuda_device_count", "from_dlpack", "full",
           "live_tensors",
           "load_checkpoint", "tensor", "zeros"]
