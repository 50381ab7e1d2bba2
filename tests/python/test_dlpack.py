"""Ember <-> NumPy / PyTorch through DLPack (examples/python/ember), run by ctest under pytest.

Oracles: NumPy's own indexing of the same values (strides and offsets), the addresses each side
reports, the dtype bits written by hand, and reference counts read from both runtimes
(ember.live_tensors, sys.getrefcount)."""

import ctypes
import gc
import sys

import numpy as np
import pytest
import torch

import ember


@pytest.fixture(autouse=True)
def no_leaks():
    """Every test leaves as many Ember tensors alive as it found."""
    gc.collect()
    before = ember.live_tensors()
    yield
    gc.collect()
    assert ember.live_tensors() == before


def ramp(shape):
    """An Ember f32 tensor holding 0, 1, 2, ... in row-major order, and the same as NumPy."""
    ref = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    return ember.tensor(ref), ref


# ---- Ember memory seen by NumPy and PyTorch ---------------------------------------------------
def test_numpy_view_writes_both_ways_at_the_same_address():
    t, ref = ramp((3, 4))
    a = t.numpy()
    assert a.ctypes.data == t.data_ptr()
    assert a.flags.writeable and not a.flags.owndata
    np.testing.assert_array_equal(a, ref)
    a[1, 2] = -5.0  # NumPy writes, Ember reads
    assert t.item(6) == -5.0
    t.set(11, 42.0)  # Ember writes, NumPy reads
    assert a[2, 3] == 42.0
    r = np.from_dlpack(t)  # the protocol's view: read-only in NumPy 1.x, same memory
    assert r.ctypes.data == t.data_ptr() and r[1, 2] == -5.0 and r[2, 3] == 42.0


def test_torch_view_writes_both_ways_at_the_same_address():
    t, ref = ramp((2, 5))
    w = torch.from_dlpack(t)
    assert w.data_ptr() == t.data_ptr() and w.dtype == torch.float32
    assert torch.equal(w, torch.from_numpy(ref))
    w[1, 4] = 9.5
    assert t.item(9) == 9.5
    t.set(0, -1.0)
    assert w[0, 0].item() == -1.0


@pytest.mark.parametrize("view", ["transposed", "sliced", "transposed_sliced"])
def test_strides_and_offsets_of_ember_views(view):
    t, ref = ramp((4, 6))
    if view == "transposed":
        v, want = t.T, ref.T
    elif view == "sliced":
        v, want = t.narrow(0, 1, 2).narrow(1, 2, 3), ref[1:3, 2:5]
    else:
        v, want = t.T.narrow(0, 3, 2), ref.T[3:5]
    assert not v.is_contiguous() and v.shares_memory_with(t)
    a, w = v.numpy(), torch.from_dlpack(v)
    np.testing.assert_array_equal(a, want)
    assert a.strides == want.strides  # bytes, as NumPy's own view has them
    assert w.stride() == tuple(s // 4 for s in want.strides)
    assert a.ctypes.data == v.data_ptr() == w.data_ptr()
    # The offset: the view starts at the base's element where NumPy's view of ref starts.
    first = (want.ctypes.data - ref.ctypes.data) // 4
    assert v.data_ptr() == t.data_ptr() + 4 * first
    # A write at the view's last element lands where NumPy's view has it.
    last = (want[-1:, -1:].ctypes.data - ref.ctypes.data) // 4
    a[-1, -1] = 1000.0
    assert t.item(last) == 1000.0 and t.numpy().reshape(-1).tolist().count(1000.0) == 1


# ---- NumPy and PyTorch memory seen by Ember ---------------------------------------------------
@pytest.mark.parametrize("view", ["transposed", "sliced", "step"])
def test_numpy_memory_into_ember(view):
    base = np.arange(30, dtype=np.float32).reshape(5, 6)
    a = {"transposed": base.T, "sliced": base[1:4, 2:5], "step": base[::2, 1::2]}[view]
    e = ember.from_dlpack(a)
    assert e.shape == a.shape
    assert e.strides == tuple(s // 4 for s in a.strides)
    assert e.data_ptr() == a.ctypes.data
    assert e.tolist() == a.reshape(-1).tolist()
    e.set(e.numel() - 1, -3.0)  # Ember writes into NumPy's memory
    assert a[-1, -1] == -3.0
    a[0, 0] = 77.0
    assert e.item(0) == 77.0


def test_torch_memory_into_ember_outlives_the_torch_tensor():
    w = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()[1:]
    e = ember.from_dlpack(w)
    assert e.data_ptr() == w.data_ptr() and e.strides == w.stride() and e.shape == (3, 3)
    want = w.reshape(-1).tolist()
    del w
    gc.collect()
    assert e.tolist() == want  # torch's deleter has not run: the memory is still there


# ---- dtypes -------------------------------------------------------------------------------------
DTYPES = [  # Ember name, NumPy dtype of numpy(), torch dtype, value, its bits for bf16
    ("f32", np.float32, torch.float32, 2.5),
    ("f16", np.float16, torch.float16, 2.5),
    ("bf16", np.uint16, torch.bfloat16, 2.5),
    ("i64", np.int64, torch.int64, -7),
    ("i32", np.int32, torch.int32, -7),
    ("u8", np.uint8, torch.uint8, 200),
]


@pytest.mark.parametrize("name,np_dtype,torch_dtype,value", DTYPES)
def test_dtypes_both_ways(name, np_dtype, torch_dtype, value):
    t = ember.full((2, 3), value, name)
    assert t.dtype == name
    a = t.numpy()
    assert a.dtype == np_dtype and a.ctypes.data == t.data_ptr()
    if name == "bf16":  # NumPy sees the bits: 2.5 is 0x4020 in bfloat16
        assert (a == 0x4020).all()
    else:
        assert (a == value).all()
    w = torch.from_dlpack(t)
    assert w.dtype == torch_dtype and (w == value).all()
    # Back into Ember, from each side.
    src = torch.full((4,), value, dtype=torch_dtype)
    e = ember.from_dlpack(src)
    assert e.dtype == name and e.data_ptr() == src.data_ptr() and e.tolist() == [value] * 4
    if name != "bf16":
        n = np.full((3,), value, dtype=np_dtype)
        en = ember.from_dlpack(n)
        assert en.dtype == name and en.tolist() == [value] * 3


# ---- reference counts ---------------------------------------------------------------------------
def test_ember_memory_lives_until_both_sides_drop_it():
    base = ember.live_tensors()
    t = ember.full((1000,), 3.0)
    assert ember.live_tensors() == base + 1
    a, w = t.numpy(), torch.from_dlpack(t)
    assert ember.live_tensors() == base + 3  # one alias per export holds the memory
    del t
    gc.collect()
    assert ember.live_tensors() == base + 2
    assert a[999] == 3.0 and w[999].item() == 3.0  # still valid
    a[0] = 4.0
    assert w[0].item() == 4.0
    del a
    gc.collect()
    assert ember.live_tensors() == base + 1
    del w
    gc.collect()
    assert ember.live_tensors() == base


def test_numpy_array_is_held_by_ember_until_released():
    a = np.zeros((8, 8), dtype=np.float32)
    refs = sys.getrefcount(a)
    e = ember.from_dlpack(a)
    view = e.T  # a view shares the storage: the array stays held
    assert sys.getrefcount(a) == refs + 1
    del e
    gc.collect()
    assert sys.getrefcount(a) == refs + 1
    del view
    gc.collect()
    assert sys.getrefcount(a) == refs


def test_unconsumed_capsule_releases_its_export():
    base = ember.live_tensors()
    t = ember.zeros((4,))
    cap = t.__dlpack__()
    assert ember.live_tensors() == base + 2
    del cap  # never consumed: its destructor calls the deleter
    gc.collect()
    assert ember.live_tensors() == base + 1


# ---- errors -------------------------------------------------------------------------------------
def test_unsupported_dtypes_are_clear_errors():
    with pytest.raises(ember.EmberError, match=r"dtype float64 \(code 2\) is not supported") as e:
        ember.from_dlpack(np.zeros(3))
    assert e.value.status == "EM_ERR_UNSUPPORTED"
    with pytest.raises(ember.EmberError, match="dtype complex64"):
        ember.from_dlpack(torch.zeros(2, dtype=torch.complex64))
    with pytest.raises(ember.EmberError, match="dtype int16"):
        ember.from_dlpack(np.zeros(2, dtype=np.int16))
    with pytest.raises(ValueError, match="unknown dtype 'f64'"):
        ember.zeros((2,), "f64")


class OnDevice:
    """A producer that says its memory is on another device: a real NumPy capsule whose DLPack
    device is rewritten, so that Ember's C check sees it."""

    def __init__(self, device_type, device_id):
        self.dev = (device_type, device_id)
        self.array = np.zeros(4, dtype=np.float32)

    def __dlpack_device__(self):
        return self.dev

    def __dlpack__(self, stream=None):
        cap = self.array.__dlpack__()
        get = ctypes.pythonapi.PyCapsule_GetPointer
        get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
        device = ctypes.cast(get(cap, b"dltensor") + 8, ctypes.POINTER(ctypes.c_int * 2))
        device.contents[0], device.contents[1] = self.dev
        return cap


def test_unsupported_devices_are_clear_errors():
    with pytest.raises(ember.EmberError, match=r"lives on rocm:0, which Ember does not support"):
        ember.from_dlpack(OnDevice(10, 0))
    if ember.tensor([0.0]).__dlpack_device__() == (1, 0) and torch.cuda.device_count() == 0:
        with pytest.raises(ember.EmberError, match=r"tensor on cuda:0, but this process has 0"):
            ember.from_dlpack(OnDevice(2, 0))
    t = ember.zeros((2,))
    with pytest.raises(BufferError, match="cannot be exported to cuda:0"):
        t.__dlpack__(dl_device=(2, 0))
    with pytest.raises(BufferError, match="copy=True"):
        t.__dlpack__(copy=True)


def test_a_capsule_is_consumed_once_and_other_objects_are_refused():
    cap = np.zeros(2, dtype=np.float32).__dlpack__()
    ember.from_dlpack(cap)
    with pytest.raises(ValueError, match="consumed only once"):
        ember.from_dlpack(cap)
    with pytest.raises(TypeError, match="list has no __dlpack__"):
        ember.from_dlpack([1.0, 2.0])
    with pytest.raises(TypeError, match="made by ember.zeros"):
        ember.Tensor()


# ---- CUDA (skipped without a device) ------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_memory_both_ways():
    if ember.cuda_device_count() == 0:
        pytest.skip("this libember was built without CUDA")
    w = torch.arange(12, dtype=torch.float32, device="cuda").reshape(3, 4).t()
    e = ember.from_dlpack(w)
    assert e.device == "cuda:0" and e.data_ptr() == w.data_ptr() and e.strides == (1, 4)
    back = torch.from_dlpack(e)
    assert back.device.type == "cuda" and back.data_ptr() == w.data_ptr()
    back[0, 1] = 7.0
    torch.cuda.synchronize()
    assert w[0, 1].item() == 7.0
    with pytest.raises(BufferError, match="needs a CPU tensor"):
        e.numpy()
