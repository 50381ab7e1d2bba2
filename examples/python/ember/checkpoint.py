"""ember.checkpoint: an Ember checkpoint as NumPy arrays that map the file (no copy).

Ember's checkpoints are safetensors files (docs/checkpoints.md):

    [8 bytes: N, little-endian u64] [N bytes: JSON header] [tensor data, little-endian]

The file is mapped copy-on-write (mmap.ACCESS_COPY): each array views its bytes in the file, pages
are read when touched, and writing into an array changes this process's copy only, never the
file. Every entry is checked against the file before it is mapped, and a bad file raises
ValueError naming the path, the entry and what is wrong.
"""

import json
import mmap
import os
import struct

_DTYPES = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "U8": "u1",
           "F64": "<f8", "I16": "<i2", "I8": "i1", "BOOL": "?"}
_MAX_HEADER = 100 << 20  # the safetensors reference reader's limit


class Checkpoint(dict):
    """name -> numpy.ndarray, plus .metadata (the string metadata: step, optimizer, loader
    position) and .path."""

    def __init__(self, path, arrays, metadata):
        super().__init__(arrays)
        self.path = path
        self.metadata = metadata


def _fail(path, msg):
    raise ValueError("%s: %s" % (path, msg))


def load_checkpoint(path, prefix=None):
    """The tensors of the checkpoint at path, as read-write NumPy arrays mapping the file.

    prefix: keep only the names that start with it, without it: ember-train stores the model as
    "model.<name>", so load_checkpoint(path, "model.") gives a dict that torch's load_state_dict
    takes once its values go through torch.from_numpy. bf16 tensors come out as uint16 bits
    (NumPy has no bfloat16; torch.from_numpy(a).view(torch.bfloat16) reads them)."""
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
    spans.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            _fail(path, "tensors %r and %r overlap (bytes %d..%d and %d..%d)"
                  % (n0, n1, b0, e0, b1, e1))
    return Checkpoint(path, arrays, metadata)
