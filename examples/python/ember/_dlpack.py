"""ember._dlpack: DLPack capsules over libember's em_to_dlpack / em_from_dlpack, through ctypes.

A capsule named "dltensor" holds a DLManagedTensor that nobody has consumed yet: when Python
destroys it in that state, its destructor calls the tensor's deleter. A consumer renames it
"used_dltensor" and calls the deleter itself when done (the DLPack Python protocol).
"""

import ctypes

from ._lib import EmberError, check, lib

# The capsule keeps a pointer to its name: these bytes live as long as the module.
_NAME = b"dltensor"
_USED = b"used_dltensor"

# DLDeviceType codes (dlpack.h).
KDL_CPU, KDL_CUDA, KDL_CUDA_HOST = 1, 2, 3
_DEVICE_NAMES = {1: "cpu", 2: "cuda", 3: "cuda_host", 4: "opencl", 7: "vulkan", 8: "metal",
                 9: "vpi", 10: "rocm", 11: "rocm_host", 12: "ext_dev", 13: "cuda_managed"}


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int), ("device_id", ctypes.c_int)]


class _DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _DLDevice),
        ("ndim", ctypes.c_int),
        ("dtype_code", ctypes.c_uint8),
        ("dtype_bits", ctypes.c_uint8),
        ("dtype_lanes", ctypes.c_uint16),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class DLManagedTensor(ctypes.Structure):
    pass


_DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(DLManagedTensor))
DLManagedTensor._fields_ = [
    ("dl_tensor", _DLTensor),
    ("manager_ctx", ctypes.c_void_p),
    ("deleter", _DELETER),
]


def _pyapi(name, restype, *argtypes):
    return ctypes.PYFUNCTYPE(restype, *argtypes)((name, ctypes.pythonapi))


# Capsule calls on live objects (py_object), and two on a capsule being destroyed, whose
# reference count is already zero: those take the raw address, never a py_object.
_capsule_new = _pyapi("PyCapsule_New", ctypes.py_object, ctypes.c_void_p, ctypes.c_char_p,
                      ctypes.c_void_p)
_capsule_is_valid = _pyapi("PyCapsule_IsValid", ctypes.c_int, ctypes.py_object, ctypes.c_char_p)
_capsule_get_pointer = _pyapi("PyCapsule_GetPointer", ctypes.c_void_p, ctypes.py_object,
                              ctypes.c_char_p)
_capsule_set_name = _pyapi("PyCapsule_SetName", ctypes.c_int, ctypes.py_object, ctypes.c_char_p)
_raw_is_valid = _pyapi("PyCapsule_IsValid", ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p)
_raw_get_pointer = _pyapi("PyCapsule_GetPointer", ctypes.c_void_p, ctypes.c_void_p,
                          ctypes.c_char_p)


def delete_managed(address):
    """Calls the deleter of the DLManagedTensor at address (once; the caller owns it)."""
    m = ctypes.cast(address, ctypes.POINTER(DLManagedTensor))
    if m.contents.deleter:
        m.contents.deleter(m)


@ctypes.CFUNCTYPE(None, ctypes.c_void_p)
def _destructor(capsule):
    # Unconsumed: the tensor is still ours to delete. Consumed ("used_dltensor"): the consumer
    # deletes it. PyCapsule_IsValid with a wrong name sets no error.
    if _raw_is_valid(capsule, _NAME):
        delete_managed(_raw_get_pointer(capsule, _NAME))


_DESTRUCTOR_ADDRESS = ctypes.cast(_destructor, ctypes.c_void_p).value


def to_capsule(tensor_ptr, flags):
    """A new "dltensor" capsule viewing the Ember tensor at tensor_ptr."""
    managed = check(lib.em_to_dlpack_ex(tensor_ptr, flags), "em_to_dlpack")
    try:
        return _capsule_new(managed, _NAME, _DESTRUCTOR_ADDRESS)
    except BaseException:
        delete_managed(managed)
        raise


# NumPy's array-interface type strings for the DLPack dtypes Ember exports: (code, bits) -> typestr.
_TYPESTR = {(2, 32): "<f4", (2, 16): "<f2", (0, 64): "<i8", (0, 32): "<i4", (1, 8): "|u1",
            (1, 16): "<u2"}


class NumpyView:
    """Holds one export (a DLManagedTensor) and describes it through __array_interface__, so that
    numpy.asarray makes a writable array whose base is this object: the export's reference keeps
    Ember's memory alive until the array goes, and its deleter runs then."""

    __slots__ = ("_managed", "_interface")

    def __init__(self, tensor_ptr, flags):
        self._managed = check(lib.em_to_dlpack_ex(tensor_ptr, flags), "em_to_dlpack")
        d = ctypes.cast(self._managed, ctypes.POINTER(DLManagedTensor)).contents.dl_tensor
        typestr = _TYPESTR[(d.dtype_code, d.dtype_bits)]
        itemsize = d.dtype_bits // 8
        self._interface = {
            "version": 3,
            "shape": tuple(d.shape[i] for i in range(d.ndim)),
            "strides": tuple(d.strides[i] * itemsize for i in range(d.ndim)),
            "typestr": typestr,
            "data": (d.data or 0, False),
        }

    @property
    def __array_interface__(self):
        return self._interface

    def __del__(self):
        managed, self._managed = getattr(self, "_managed", None), None
        if managed:
            delete_managed(managed)


def device_name(device_type, device_id):
    name = _DEVICE_NAMES.get(device_type, "device type %d" % device_type)
    return "%s:%d" % (name, device_id)


def capsule_from(obj):
    """obj's DLPack capsule: obj.__dlpack__() (with a stream for CUDA producers, the default one),
    or obj itself when it is already a capsule."""
    if hasattr(obj, "__dlpack__"):
        dev_type, dev_id = obj.__dlpack_device__()
        if dev_type not in (KDL_CPU, KDL_CUDA, KDL_CUDA_HOST):
            raise EmberError(
                "ember.from_dlpack: the %s object lives on %s, which Ember does not support "
                "(cpu, cuda_host, cuda)" % (type(obj).__name__, device_name(dev_type, dev_id)),
                "EM_ERR_UNSUPPORTED")
        # CUDA: stream 1 is the legacy default stream, the one Ember's kernels are ordered on.
        return obj.__dlpack__(stream=1) if dev_type == KDL_CUDA else obj.__dlpack__()
    if type(obj).__name__ == "PyCapsule":
        return obj
    raise TypeError("ember.from_dlpack: %s has no __dlpack__ method and is not a DLPack capsule"
                    % type(obj).__name__)


def import_capsule(capsule):
    """The Ember tensor (a new owned pointer) viewing a "dltensor" capsule, which is marked used.
    On failure the capsule is left as it was, so that its own destructor frees it."""
    if not _capsule_is_valid(capsule, _NAME):
        raise ValueError("ember.from_dlpack: the capsule is not an unconsumed 'dltensor' "
                         "(a DLPack capsule can be consumed only once)")
    managed = _capsule_get_pointer(capsule, _NAME)
    ptr = check(lib.em_from_dlpack(managed), "em_from_dlpack")
    _capsule_set_name(capsule, _USED)
    return ptr
