"""ember.checkpoint: an Ember checkpoint as NumPy arrays that map the file (no copy).

Ember's checkpoints are safetensors files (docs/checkpoints.md):

    [8 bytes: N, little-endian u64] [N bytes: JSON header] [tensor data, little-endian]

The file is mapped copy-on-write (mmap.ACCESS_COPY): each array views its bytes in the file, pages
are read when touched, and writing into an array changes this process's copy only, never the
file. Every entry is checked against the file before it is mapped, and a bad file raises
ValueError naming the path, the entry and what is wrong.

Checksums (docs/checkpoints.md): Ember's writer stores a CRC-32 of each tensor's bytes
("crc32.<name>") and of the header ("crc32.__header__") in the metadata. load_checkpoint verifies
them by default, which reads every page of the file once (the arrays still map it);
verify=False skips that, for a quick look at part of a large file. Files without checksums
(older checkpoints, other writers) load unverified either way.
"""

import json
import mmap
import os
import struct
import zlib

_DTYPES = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "U8": "u1",
           "F64": "<f8", "I16": "<i2", "I8": "i1", "BOOL": "?"}
_MAX_HEADER = 100 << 20  # the safetensors reference reader's limit
_CRC = "crc32."
_CRC_HEADER = "crc32.__header__"


class Checkpoint(dict):
    """name -> numpy.ndarray, plus .metadata (the string metadata: step, optimizer, loader
    position) and .path."""

    def __init__(self, path, arrays, metadata):
        super().__init__(arrays)
        self.path = path
        self.metadata = metadata


def _fail(path, msg):
    raise ValueError("%s: %s" % (path, msg))


def _z(s):
    return s.encode("utf-8") + b"\0"


def _header_crc(metadata, header):
    """CRC-32 of the header's canonical text (runtime/checkpoint/crc.h): the metadata other than
    the checksums, then every tensor's name, dtype, shape and offsets, each sorted bytewise."""
    text = b"".join(b"m" + _z(k) + _z(metadata[k])
                    for k in sorted(metadata, key=lambda k: k.encode("utf-8"))
                    if not k.startswith(_CRC))
    for name in sorted(header, key=lambda k: k.encode("utf-8")):
        e = header[name]
        text += (b"t" + _z(name) + _z(e["dtype"]) + _z(",".join(str(d) for d in e["shape"]))
                 + _z("%d,%d" % tuple(e["data_offsets"])))
    return zlib.crc32(text)


def _stored_crc(path, metadata, key):
    v = metadata.get(key)
    if not isinstance(v, str) or len(v) != 8 or any(c not in "0123456789abcdef" for c in v):
        _fail(path, "the file has checksums, but %r is %r, not 8 hex digits" % (key, v))
    return int(v, 16)


def load_checkpoint(path, prefix=None, verify=True):
    """The tensors of the checkpoint at path, as read-write NumPy arrays mapping the file.

    prefix: keep only the names that start with it, without it: ember-train stores the model as
    "model.<name>", so load_checkpoint(path, "model.") gives a dict that torch's load_state_dict
    takes once its values go through torch.from_numpy. bf16 tensors come out as uint16 bits
    (NumPy has no bfloat16; torch.from_numpy(a).view(torch.bfloat16) reads them).

    verify: check the checksums Ember's writer stores, when the file has them (reads the whole
    file once); a mismatch raises ValueError naming the tensor and the expected and found CRC.
    .metadata never lists the checksum keys."""
    import numpy

    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            _fail(path, "%d bytes: too short for a safetensors header length" % size)
        (n,) = struct.unpack("<Q", f.read(8))
        if n > _MAX_HEADER or 8 + n > size:
            _fail(path, "header length %d at byte 0 does not fit the file (%d bytes)" % (n, size))
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            _fail(path, "header (bytes 8..%d) is not JSON: %s" % (8 + n, e))
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if size else None
    if not isinstance(header, dict):
        _fail(path, "header is not a JSON object")
    metadata = header.pop("__metadata__", {}) or {}
    base, data_len = 8 + n, size - 8 - n
    arrays, spans = {}, []
    for name, e in header.items():
        where = "tensor %r" % name
        if not isinstance(e, dict) or not {"dtype", "shape", "data_offsets"} <= e.keys():
            _fail(path, "%s: needs dtype, shape and data_offsets" % where)
        dtype = _DTYPES.get(e["dtype"])
        if dtype is None:
            _fail(path, "%s: unknown dtype %r" % (where, e["dtype"]))
        shape, offsets = e["shape"], e["data_offsets"]
        if (not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)
                or not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) for o in offsets)):
            _fail(path, "%s: malformed shape %r or data_offsets %r" % (where, shape, offsets))
        begin, end = offsets
        count = 1
        for d in shape:
            count *= d
        itemsize = numpy.dtype(dtype).itemsize
        if not 0 <= begin <= end <= data_len:
            _fail(path, "%s: data_offsets [%d, %d] outside the %d data bytes"
                  % (where, begin, end, data_len))
        if end - begin != count * itemsize:
            _fail(path, "%s: %d bytes for shape %s of %s (%d expected)"
                  % (where, end - begin, shape, e["dtype"], count * itemsize))
        spans.append((begin, end, name))
        if prefix is not None:
            if not name.startswith(prefix):
                continue
            name = name[len(prefix):]
        arrays[name] = numpy.frombuffer(mapped, dtype=dtype, count=count,
                                        offset=base + begin).reshape(shape) \
            if count else numpy.zeros(shape, dtype=dtype)
    if verify and any(k.startswith(_CRC) for k in metadata):
        want = _stored_crc(path, metadata, _CRC_HEADER)
        got = _header_crc(metadata, header)
        if want != got:
            _fail(path, "header checksum mismatch: expected crc32 %08x (%s), found %08x: the "
                  "tensor table or metadata is corrupt" % (want, _CRC_HEADER, got))
        names = set(header)
        for key in metadata:
            if key.startswith(_CRC) and key != _CRC_HEADER and key[len(_CRC):] not in names:
                _fail(path, "__metadata__ %r is the checksum of no tensor" % key)
        view = memoryview(mapped) if mapped is not None else b""
        for begin, end, name in spans:
            want = _stored_crc(path, metadata, _CRC + name)
            got = zlib.crc32(view[base + begin:base + end])
            if want != got:
                _fail(path, "tensor %r: checksum mismatch: expected crc32 %08x, found %08x "
                      "(data bytes %d to %d): the data is corrupt" % (name, want, got, begin, end))
    metadata = {k: v for k, v in metadata.items() if not k.startswith(_CRC)}
    spans.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            _fail(path, "tensors %r and %r overlap (bytes %d..%d and %d..%d)"
                  % (n0, n1, b0, e0, b1, e1))
    return Checkpoint(path, arrays, metadata)
