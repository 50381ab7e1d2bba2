"""ember.load_checkpoint (examples/python/ember/checkpoint.py), run by ctest under pytest.

The end-to-end oracle is PyTorch: ember-train trains the MLP and reports its test accuracy; the
checkpoint it wrote, mapped by ember.load_checkpoint, goes into the equivalent torch.nn.Sequential
through load_state_dict, and PyTorch's accuracy on the same test set must be the same. The file
checks use safetensors files written here byte by byte."""

import ctypes
import gzip
import json
import mmap
import os
import re
import struct
import subprocess

import numpy as np
import pytest
import torch

import ember

FMNIST = os.environ.get("EMBER_FMNIST_DIR", "/usr/share/datasets/fashion-mnist")


def write_safetensors(path, entries, data, metadata=None):
    """entries: name -> (dtype, shape, [begin, end]); data: the bytes after the header."""
    header = {name: {"dtype": d, "shape": s, "data_offsets": o} for name, (d, s, o) in entries.items()}
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def test_maps_the_file_without_copying(tmp_path):
    path = tmp_path / "t.safetensors"
    w = np.arange(6, dtype="<f4").reshape(2, 3)
    ids = np.array([5, -1], dtype="<i8")
    write_safetensors(path, {"ids": ("I64", [2], [0, 16]), "model.w": ("F32", [2, 3], [16, 40]),
                             "bits": ("BF16", [1], [40, 42])},
                      ids.tobytes() + w.tobytes() + b"\x20\x40", {"step": "7"})
    ck = ember.load_checkpoint(path)
    assert ck.metadata == {"step": "7"} and sorted(ck) == ["bits", "ids", "model.w"]
    np.testing.assert_array_equal(ck["model.w"], w)
    np.testing.assert_array_equal(ck["ids"], ids)
    assert ck["bits"].dtype == np.uint16 and ck["bits"][0] == 0x4020  # bf16 2.5, as bits
    # The arrays view one mapping of the file, each at its own bytes: no copy was made.
    maps = []
    for name in ("ids", "model.w"):
        base = ck[name]
        while isinstance(base, np.ndarray):
            base = base.base
        maps.append(base.obj)  # the memoryview NumPy took of the mapping
    assert isinstance(maps[0], mmap.mmap) and maps[0] is maps[1]
    start = ctypes.addressof(ctypes.c_char.from_buffer(maps[0]))
    data = 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]
    assert ck["ids"].ctypes.data == start + data
    assert ck["model.w"].ctypes.data == start + data + 16
    # Copy-on-write: the arrays are writable, and the file does not change.
    before = path.read_bytes()
    ck["model.w"][0, 0] = 99.0
    assert path.read_bytes() == before
    only = ember.load_checkpoint(path, prefix="model.")
    assert list(only) == ["w"]


BAD = [  # entries, data bytes, message
    ({"a": ("F32", [2], [0, 4])}, b"\0" * 8, r"tensor 'a': 4 bytes for shape \[2\] of F32 \(8 expected\)"),
    ({"a": ("F32", [2], [0, 16])}, b"\0" * 8, r"data_offsets \[0, 16\] outside the 8 data bytes"),
    ({"a": ("F99", [1], [0, 4])}, b"\0" * 4, "unknown dtype 'F99'"),
    ({"a": ("F32", [1], [0, 4]), "b": ("F32", [1], [2, 6])}, b"\0" * 8, "'a' and 'b' overlap"),
    ({"a": ("F32", [-1], [0, 4])}, b"\0" * 4, "malformed shape"),
]


@pytest.mark.parametrize("entries,data,message", BAD)
def test_bad_entries_name_the_tensor(tmp_path, entries, data, message):
    path = tmp_path / "bad.safetensors"
    write_safetensors(path, entries, data)
    with pytest.raises(ValueError, match=message):
        ember.load_checkpoint(path)


def test_bad_files_name_the_path(tmp_path):
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"\x01\x02")
    with pytest.raises(ValueError, match=r"short.safetensors: 2 bytes: too short"):
        ember.load_checkpoint(short)
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(ValueError, match=r"header length 1000 at byte 0 does not fit the file"):
        ember.load_checkpoint(huge)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(struct.pack("<Q", 4) + b"{{{{")
    with pytest.raises(ValueError, match=r"header \(bytes 8..12\) is not JSON"):
        ember.load_checkpoint(junk)
    with pytest.raises(FileNotFoundError):
        ember.load_checkpoint(tmp_path / "absent.safetensors")


def idx(name):
    with gzip.open(os.path.join(FMNIST, name)) as f:
        raw = f.read()
    magic, n = struct.unpack(">II", raw[:8])
    dims = magic & 0xFF
    shape = struct.unpack(">" + "I" * dims, raw[4:4 + 4 * dims])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def test_ember_train_mlp_checkpoint_gives_the_same_accuracy_in_pytorch(tmp_path):
    train = os.environ["EMBER_TRAIN"]
    config = os.path.join(os.environ["EMBER_SOURCE_DIR"], "examples/configs/fmnist_mlp.yaml")
    run = subprocess.run(
        [train, config, "train.steps=300", "optim.warmup_steps=20", "train.threads=1",
         "train.log_every=100", "train.metrics=%s/m" % tmp_path, "checkpoint.dir=%s/ckpt" % tmp_path],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600, cwd=tmp_path)
    print(run.stdout)
    assert run.returncode == 0
    result = re.search(r"^RESULT test_acc=([0-9.]+) .*ranks=1$", run.stdout, re.M)
    assert result, "no RESULT line"
    ember_acc = float(result.group(1))

    latest = (tmp_path / "ckpt" / "latest").read_text().strip()
    ck = ember.load_checkpoint(tmp_path / "ckpt" / latest, prefix="model.")
    assert ck.metadata["writer"] == "ember-train"
    # The checksums Ember's writer stores: verified by default, never listed as metadata; a
    # flipped bit in the data is caught, and verify=False maps the file without reading it.
    assert not any(k.startswith("crc32.") for k in ck.metadata)
    raw = bytearray((tmp_path / "ckpt" / latest).read_bytes())
    raw[-3] ^= 0x10
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(raw)
    with pytest.raises(ValueError, match=r"bad\.safetensors: tensor '.+': checksum mismatch: "
                       r"expected crc32 [0-9a-f]{8}, found [0-9a-f]{8}"):
        ember.load_checkpoint(bad)
    assert len(ember.load_checkpoint(bad, verify=False)) == len(ember.load_checkpoint(
        tmp_path / "ckpt" / latest))
    raw[-3] ^= 0x10
    raw[raw.index(b'"writer":"ember-train"') + 11] ^= 0x01  # "ember-train" -> "elber-train"
    bad.write_bytes(raw)
    with pytest.raises(ValueError, match="header checksum mismatch"):
        ember.load_checkpoint(bad)
    model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(),
                                torch.nn.Linear(256, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    state = {k: torch.from_numpy(v) for k, v in ck.items()}
    model.load_state_dict(state, strict=True)  # every name and shape matches, nothing left over

    images, labels = idx("t10k-images-idx3-ubyte.gz"), idx("t10k-labels-idx1-ubyte.gz")
    x = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) * np.float32(1 / 255))
    with torch.no_grad():
        pred = model(x).argmax(1).numpy()
    torch_acc = float((pred == labels).mean())
    print("ember-train test_acc=%.4f pytorch test_acc=%.4f (%d of %d)"
          % (ember_acc, torch_acc, (pred == labels).sum(), len(labels)))
    # ember-train prints 4 decimals of a count out of 10,000: the same count gives the same line.
    assert round(torch_acc, 4) == ember_acc
    assert ember_acc > 0.7  # and the model did learn
