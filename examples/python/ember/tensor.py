"""ember.tensor: ember.Tensor, a Python handle on an Ember tensor (one reference, released when
the handle goes), and the functions that make one."""

import ctypes

from . import _dlpack
from ._lib import DTYPES, EM_DLPACK_BF16_AS_U16, EmTensor, check, lib, shape_array

_ALIASES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16", "int64": "i64",
            "int32": "i32", "uint8": "u8"}


def _dtype_code(dtype):
    name = _ALIASES.get(str(dtype), str(dtype))
    if name not in DTYPES:
        raise ValueError("ember: unknown dtype %r (one of %s)" % (dtype, ", ".join(DTYPES)))
    return DTYPES.index(name)


class Tensor:
    """An Ember tensor seen from Python. It shares memory with every DLPack consumer it is given to
    (numpy.from_dlpack(t), torch.from_dlpack(t)) and with every object ember.from_dlpack took it
    from: writes on either side are seen on the other, and the memory lives until both let go."""

    __slots__ = ("_ptr", "__weakref__")

    def __init__(self, *args, **kwargs):
        raise TypeError("ember.Tensor is made by ember.zeros, ember.full, ember.tensor or "
                        "ember.from_dlpack")

    @classmethod
    def _own(cls, ptr):
        """Wraps ptr, taking over the caller's reference."""
        t = object.__new__(cls)
        t._ptr = ptr
        return t

    def __del__(self):
        ptr, self._ptr = getattr(self, "_ptr", None), None
        if ptr and lib is not None:
            lib.em_release(ptr)

    @property
    def _head(self):
        return EmTensor.from_address(self._ptr)

    # ---- description ------------------------------------------------------------------------
    @property
    def dtype(self):
        """Ember's dtype name: "f32", "f16", "bf16", "i64", "i32" or "u8"."""
        return DTYPES[self._head.dtype]

    @property
    def ndim(self):
        return self._head.ndim

    @property
    def shape(self):
        h = self._head
        return tuple(h.shape[: h.ndim])

    @property
    def strides(self):
        """In elements, as Ember and DLPack count them (NumPy's are in bytes)."""
        h = self._head
        return tuple(h.strides[: h.ndim])

    @property
    def device(self):
        h = self._head
        return "cpu" if h.device_kind == 0 else "cuda:%d" % h.device_index

    def numel(self):
        return lib.em_numel(self._ptr)

    def data_ptr(self):
        """Address of the first element."""
        return lib.em_data(self._ptr) or 0

    def is_contiguous(self):
        return bool(lib.em_is_contiguous(self._ptr))

    def shares_memory_with(self, other):
        return bool(lib.em_shares_storage(self._ptr, other._ptr))

    def __len__(self):
        if not self.ndim:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self):
        return "ember.Tensor(shape=%s, dtype=%s, device=%s)" % (self.shape, self.dtype, self.device)

    # ---- elements (CPU), in logical row-major order ----------------------------------------
    def _index(self, i):
        n = self.numel()
        if not -n <= i < n:
            raise IndexError("ember: flat index %d out of range for %d elements" % (i, n))
        if self.device != "cpu":
            raise ValueError("ember: element access needs a CPU tensor, this one is on %s"
                             % self.device)
        return i + n if i < 0 else i

    def item(self, i=0):
        """Element i (flat, logical order) as a Python float."""
        return lib.em_get(self._ptr, self._index(i))

    def set(self, i, value):
        lib.em_set(self._ptr, self._index(i), float(value))

    def tolist(self):
        """The elements in logical order, as a flat list of floats."""
        if self.device != "cpu":
            raise ValueError("ember: element access needs a CPU tensor, this one is on %s"
                             % self.device)
        return [lib.em_get(self._ptr, i) for i in range(self.numel())]

    # ---- views ------------------------------------------------------------------------------
    def transpose(self, d0, d1):
        return Tensor._own(check(lib.em_transpose(self._ptr, d0, d1), "em_transpose"))

    @property
    def T(self):
        if self.ndim != 2:
            raise ValueError("ember: .T needs 2 dimensions, this tensor has %d" % self.ndim)
        return self.transpose(0, 1)

    def narrow(self, dim, start, length):
        return Tensor._own(check(lib.em_narrow(self._ptr, dim, start, length), "em_narrow"))

    def contiguous(self):
        return Tensor._own(check(lib.em_contiguous(self._ptr), "em_contiguous"))

    # ---- DLPack -----------------------------------------------------------------------------
    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        """A "dltensor" capsule viewing this tensor (DLPack 0.6's DLManagedTensor, which the
        protocol lets a producer return whatever max_version asks for)."""
        if copy:
            raise BufferError("ember: __dlpack__(copy=True) is not supported: Ember shares memory")
        if dl_device is not None and tuple(dl_device) != self.__dlpack_device__():
            raise BufferError("ember: the tensor is on %s; it cannot be exported to %s"
                              % (self.device, _dlpack.device_name(*dl_device)))
        return _dlpack.to_capsule(self._ptr, 0)

    def __dlpack_device__(self):
        h = self._head
        return (_dlpack.KDL_CPU, 0) if h.device_kind == 0 else (_dlpack.KDL_CUDA, h.device_index)

    def numpy(self):
        """A writable NumPy array viewing this tensor's memory (no copy; same address, strides in
        bytes). numpy.from_dlpack(t) gives the same view read-only: NumPy 1.x marks every DLPack
        import read-only. NumPy has no bfloat16: a bf16 tensor comes out as uint16 bits."""
        import numpy

        if self.device != "cpu":
            raise BufferError("ember: numpy() needs a CPU tensor, this one is on %s" % self.device)
        return numpy.asarray(_dlpack.NumpyView(self._ptr, EM_DLPACK_BF16_AS_U16))


# ---- making tensors -----------------------------------------------------------------------------
def zeros(shape, dtype="f32"):
    n, arr = shape_array(shape)
    return Tensor._own(check(lib.em_zeros(_dtype_code(dtype), n, arr), "em_zeros"))


def full(shape, value, dtype="f32"):
    n, arr = shape_array(shape)
    return Tensor._own(check(lib.em_full(_dtype_code(dtype), n, arr, float(value)), "em_full"))


def tensor(values, dtype="f32"):
    """A new Ember tensor holding a copy of values (nested lists, or anything numpy.asarray takes;
    for bf16, values are converted through float32 by Ember)."""
    import numpy

    code = _dtype_code(dtype)
    if DTYPES[code] == "bf16":
        src = numpy.asarray(values, dtype=numpy.float32)
        t = zeros(src.shape, "bf16")
        for i, v in enumerate(src.reshape(-1)):
            t.set(i, float(v))
        return t
    np_dtype = {"f32": "float32", "f16": "float16", "i64": "int64", "i32": "int32",
                "u8": "uint8"}[DTYPES[code]]
    src = numpy.ascontiguousarray(values, dtype=np_dtype)
    n, arr = shape_array(src.shape)
    ptr = lib.em_from_data(code, n, arr, src.ctypes.data_as(ctypes.c_void_p))
    return Tensor._own(check(ptr, "em_from_data"))


def from_dlpack(obj):
    """An Ember tensor viewing obj's memory (no copy): any object with __dlpack__ (NumPy arrays,
    PyTorch tensors, ember.Tensor) or a DLPack capsule. obj stays alive until Ember drops the last
    tensor viewing it. Raises EmberError naming an unsupported dtype or device."""
    return Tensor._own(_dlpack.import_capsule(_dlpack.capsule_from(obj)))


def live_tensors():
    """Ember tensors alive in this process (views, exports' aliases and parameters included)."""
    return lib.em_live_tensors()


def cuda_device_count():
    """CUDA devices this libember can use (0 in a build without CUDA or without a device)."""
    return lib.em_cuda_device_count()
