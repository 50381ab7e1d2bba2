"""ember._lib: loads libember.so and declares the C functions the package calls (ctypes).

The library is found, in this order, at $EMBER_LIBRARY, next to an installed package
(<prefix>/lib/libember.so.0 for <prefix>/lib/python3/dist-packages/ember), and through the
dynamic linker's search path. It is loaded with ctypes.PyDLL, so that every call keeps the GIL:
a DLPack deleter that Ember runs when it drops imported memory (NumPy's decrements its array's
reference count) must hold it.
"""

import ctypes
import ctypes.util
import os

EM_MAX_DIMS = 8
DTYPES = ("f32", "i64", "i32", "u8", "bf16", "f16")  # em_dtype order (em_core.h)
EM_DLPACK_BF16_AS_U16 = 1


class EmberError(RuntimeError):
    """An Ember call failed: the message is em_last_error(), status the em_status name."""

    def __init__(self, message, status="EM_ERR_INVALID"):
        super().__init__(message)
        self.status = status


class EmTensor(ctypes.Structure):
    """The public, read-only head of struct em_tensor (em_core.h); the rest is private."""

    _fields_ = [
        ("dtype", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("shape", ctypes.c_int64 * EM_MAX_DIMS),
        ("strides", ctypes.c_int64 * EM_MAX_DIMS),
        ("offset", ctypes.c_int64),
        ("device_kind", ctypes.c_int),
        ("device_index", ctypes.c_int),
        ("requires_grad", ctypes.c_bool),
    ]


def _candidates():
    env = os.environ.get("EMBER_LIBRARY")
    if env:
        return [env]
    here = os.path.dirname(os.path.abspath(__file__))
    found = [os.path.normpath(os.path.join(here, "..", "..", "..", "libember.so.0"))]
    linker = ctypes.util.find_library("ember")
    if linker:
        found.append(linker)
    found.append("libember.so.0")
    return found


def _load():
    tried = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append(path + " (absent)")
            continue
        try:
            return ctypes.PyDLL(path)
        except OSError as e:
            tried.append("%s (%s)" % (path, e))
    raise ImportError(
        "ember: cannot load libember.so; set EMBER_LIBRARY to its path (tried: %s)" % "; ".join(tried)
    )


lib = _load()

_P = ctypes.c_void_p
_I64P = ctypes.POINTER(ctypes.c_int64)
_SIGNATURES = {
    "em_last_error": (ctypes.c_char_p, []),
    "em_last_status": (ctypes.c_int, []),
    "em_status_str": (ctypes.c_char_p, [ctypes.c_int]),
    "em_clear_error": (None, []),
    "em_release": (None, [_P]),
    "em_retain": (_P, [_P]),
    "em_live_tensors": (ctypes.c_int64, []),
    "em_cuda_device_count": (ctypes.c_int, []),
    "em_numel": (ctypes.c_int64, [_P]),
    "em_data": (_P, [_P]),
    "em_get": (ctypes.c_double, [_P, ctypes.c_int64]),
    "em_set": (None, [_P, ctypes.c_int64, ctypes.c_double]),
    "em_is_contiguous": (ctypes.c_bool, [_P]),
    "em_shares_storage": (ctypes.c_bool, [_P, _P]),
    "em_zeros": (_P, [ctypes.c_int, ctypes.c_int, _I64P]),
    "em_full": (_P, [ctypes.c_int, ctypes.c_int, _I64P, ctypes.c_double]),
    "em_from_data": (_P, [ctypes.c_int, ctypes.c_int, _I64P, _P]),
    "em_transpose": (_P, [_P, ctypes.c_int, ctypes.c_int]),
    "em_narrow": (_P, [_P, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]),
    "em_contiguous": (_P, [_P]),
    "em_to_dlpack_ex": (_P, [_P, ctypes.c_uint]),
    "em_from_dlpack": (_P, [_P]),
}
for _name, (_res, _args) in _SIGNATURES.items():
    _f = getattr(lib, _name)
    _f.restype = _res
    _f.argtypes = _args


def check(ptr, what):
    """ptr, or EmberError carrying Ember's message when the call returned NULL."""
    if ptr:
        return ptr
    msg = lib.em_last_error().decode(errors="replace") or what + " failed"
    status = lib.em_status_str(lib.em_last_status()).decode()
    lib.em_clear_error()
    raise EmberError(msg, status)


def shape_array(shape):
    shape = tuple(int(s) for s in shape)
    if len(shape) > EM_MAX_DIMS:
        raise ValueError("ember: %d dimensions (at most %d)" % (len(shape), EM_MAX_DIMS))
    return len(shape), (ctypes.c_int64 * max(1, len(shape)))(*shape)
