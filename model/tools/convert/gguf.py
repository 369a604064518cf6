"""gguf.py — a small GGUF v3 writer and reader for cxrvqa's Python tooling
(convert.py writes with it, the tests read with it). It owns the byte layout
of ggml docs/gguf.md and model/FORMAT.md and nothing else: it knows no tensor
names and no model. Never imported by the C build.

Layout written (all little-endian):
    "GGUF" u32 version=3 u64 n_tensors u64 n_kv
    n_kv x (string key, u32 value type, value)
    n_tensors x (string name, u32 n_dims, u64 dims[n_dims], u32 ggml type, u64 offset)
    zero padding to `alignment`, then the tensor data, each tensor starting at
    a multiple of `alignment` from the data start (zero padding between).
A string is u64 length + UTF-8 bytes (no NUL). dims are fastest-varying
first, i.e. the NumPy shape reversed; offsets are relative to the data start.

Writer:
    w = Writer()                       # alignment 32, written as general.alignment
    w.add_str("general.architecture", "clip")
    w.add_u32("clip.projection_dim", 512)
    w.add_arr("tokenizer.ggml.tokens", STRING, ["a", "b"])
    w.add_tensor("v.class_embd", np.zeros(768, np.float32))          # F32
    w.add_tensor("v.blk.0.attn_q.weight", w_q, F16)                  # stored as F16
    w.write("out.gguf")
Reader:
    g = read("out.gguf")    # g.kv[key] -> Value(type, value, elem_type); g.tensors[name] -> Tensor
    g.tensors["v.class_embd"].array()   # NumPy array in NumPy shape (dims reversed)
read() checks magic, version, every length and offset against the file size
and raises GGUFError naming what was wrong.
"""
import mmap
import struct

import numpy as np

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
DEFAULT_ALIGNMENT = 32

# metadata value types (docs/gguf.md gguf_metadata_value_type)
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
TYPE_NAMES = ["u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr", "u64", "i64", "f64"]
# fixed-size scalar types: struct format
_SCALAR = {UINT8: "<B", INT8: "<b", UINT16: "<H", INT16: "<h", UINT32: "<I", INT32: "<i",
           FLOAT32: "<f", BOOL: "<?", UINT64: "<Q", INT64: "<q", FLOAT64: "<d"}
_SCALAR_NP = {UINT8: "<u1", INT8: "<i1", UINT16: "<u2", INT16: "<i2", UINT32: "<u4", INT32: "<i4",
              FLOAT32: "<f4", BOOL: "<u1", UINT64: "<u8", INT64: "<i8", FLOAT64: "<f8"}

# tensor types (ggml_type): only the two cxrvqa uses
F32, F16 = 0, 1
_DTYPE = {F32: np.dtype("<f4"), F16: np.dtype("<f2")}

MAX_DIMS = 4


class GGUFError(Exception):
    pass


class Value:
    """A typed metadata value. For ARRAY, value is a list and elem_type its element type."""

    __slots__ = ("type", "value", "elem_type")

    def __init__(self, vtype, value, elem_type=None):
        self.type, self.value, self.elem_type = vtype, value, elem_type

    def __repr__(self):
        if self.type == ARRAY:
            return "Value(arr[%s] x %d)" % (TYPE_NAMES[self.elem_type], len(self.value))
        return "Value(%s %r)" % (TYPE_NAMES[self.type], self.value)


# ------------------------------------------------------------------ writer


def _pack_str(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _pack_scalar(vtype, v):
    if vtype == STRING:
        return _pack_str(v)
    if vtype == BOOL:
        if not isinstance(v, (bool, np.bool_)):
            raise GGUFError("bool value expected, got %r" % (v,))
        return struct.pack("<?", bool(v))
    if vtype in (FLOAT32, FLOAT64):
        return struct.pack(_SCALAR[vtype], float(v))
    if vtype in _SCALAR:
        try:
            return struct.pack(_SCALAR[vtype], int(v))
        except struct.error as e:
            raise GGUFError("value %r does not fit %s: %s" % (v, TYPE_NAMES[vtype], e))
    raise GGUFError("unknown scalar type %r" % (vtype,))


def _pack_value(val):
    if val.type == ARRAY:
        if val.elem_type == ARRAY:
            raise GGUFError("arrays of arrays are not written")
        out = [struct.pack("<IQ", val.elem_type, len(val.value))]
        if val.elem_type in (FLOAT32, UINT32, INT32, UINT64, INT64, FLOAT64, UINT16, INT16, UINT8, INT8):
            out.append(np.asarray(val.value, dtype=_SCALAR_NP[val.elem_type]).tobytes())
        else:
            out.extend(_pack_scalar(val.elem_type, x) for x in val.value)
        return b"".join(out)
    return _pack_scalar(val.type, val.value)


def copy_except(g, drop):
    """A Writer holding every key and tensor of the read file g (same alignment, same order, same
    types) except those for which drop(name) is true; add to it and write()."""
    w = Writer(g.alignment)
    for k, v in g.kv.items():
        if k != "general.alignment" and not drop(k):
            w.add(k, v.type, v.value, getattr(v, "elem_type", None))
    for name in g.tensor_order:
        if not drop(name):
            t = g.tensors[name]
            w.add_tensor(name, t.array(np.float32) if t.type == F32 else t.array(np.float16), t.type)
    return w


class Writer:
    """Collects metadata and tensors in insertion order; write() emits the file."""

    def __init__(self, alignment=DEFAULT_ALIGNMENT):
        if alignment <= 0 or alignment & (alignment - 1):
            raise GGUFError("alignment must be a power of two, got %d" % alignment)
        self.alignment = alignment
        self.kv = {}
        self.tensors = []  # (name, ndarray in NumPy shape, ggml type)
        self.add("general.alignment", UINT32, alignment)

    def add(self, key, vtype, value, elem_type=None):
        if key in self.kv:
            raise GGUFError("duplicate key %r" % key)
        if vtype == ARRAY and elem_type is None:
            raise GGUFError("array key %r needs an element type" % key)
        self.kv[key] = Value(vtype, list(value) if vtype == ARRAY else value, elem_type)

    def add_str(self, key, v): self.add(key, STRING, str(v))
    def add_u32(self, key, v): self.add(key, UINT32, int(v))
    def add_i32(self, key, v): self.add(key, INT32, int(v))
    def add_u64(self, key, v): self.add(key, UINT64, int(v))
    def add_f32(self, key, v): self.add(key, FLOAT32, float(v))
    def add_f64(self, key, v): self.add(key, FLOAT64, float(v))
    def add_bool(self, key, v): self.add(key, BOOL, bool(v))
    def add_arr(self, key, elem_type, values): self.add(key, ARRAY, values, elem_type)

    def add_tensor(self, name, array, ggml_type=F32):
        """array in NumPy shape (row-major); stored as F32 or F16."""
        if ggml_type not in _DTYPE:
            raise GGUFError("tensor %r: only F32 and F16 are written" % name)
        if any(n == name for n, _, _ in self.tensors):
            raise GGUFError("duplicate tensor %r" % name)
        a = np.asarray(array)
        if a.ndim < 1 or a.ndim > MAX_DIMS:
            raise GGUFError("tensor %r: %d dimensions (1..%d supported)" % (name, a.ndim, MAX_DIMS))
        if not np.issubdtype(a.dtype, np.floating):
            raise GGUFError("tensor %r: floating-point data expected, got %s" % (name, a.dtype))
        a64 = a.astype(np.float64, copy=False)
        if not np.all(np.isfinite(a64)):
            raise GGUFError("tensor %r holds NaN or infinity" % name)
        if ggml_type == F16 and np.abs(a64).max(initial=0.0) > 65504.0:
            raise GGUFError("tensor %r: values up to %g overflow F16 (max 65504)" % (name, np.abs(a64).max()))
        self.tensors.append((name, np.ascontiguousarray(a.astype(_DTYPE[ggml_type])), ggml_type))

    def _pad(self, n):
        return (-n) % self.alignment

    def write(self, path):
        head = [GGUF_MAGIC, struct.pack("<IQQ", GGUF_VERSION, len(self.tensors), len(self.kv))]
        for key, val in self.kv.items():
            head.append(_pack_str(key) + struct.pack("<I", val.type) + _pack_value(val))
        offset = 0
        for name, a, gt in self.tensors:
            dims = list(reversed(a.shape))  # GGUF: fastest-varying first
            head.append(_pack_str(name) + struct.pack("<I", len(dims)) +
                        struct.pack("<%dQ" % len(dims), *dims) + struct.pack("<IQ", gt, offset))
            offset += a.nbytes + self._pad(a.nbytes)
        head = b"".join(head)
        with open(path, "wb") as f:
            f.write(head)
            f.write(b"\0" * self._pad(len(head)))
            for _, a, _ in self.tensors:
                f.write(a.tobytes())
                f.write(b"\0" * self._pad(a.nbytes))


# ------------------------------------------------------------------ reader


class Tensor:
    __slots__ = ("name", "dims", "type", "offset", "data_start", "_buf")

    @property
    def shape(self):
        """NumPy shape: the GGUF dims reversed."""
        return tuple(reversed(self.dims))

    @property
    def nbytes(self):
        return int(np.prod(self.dims, dtype=np.int64)) * _DTYPE[self.type].itemsize

    def raw(self):
        """The stored bytes."""
        start = self.data_start + self.offset
        return bytes(self._buf[start:start + self.nbytes])

    def array(self, dtype=np.float32):
        """Values in NumPy shape, converted to dtype (a copy)."""
        a = np.frombuffer(self.raw(), dtype=_DTYPE[self.type]).reshape(self.shape)
        return a.astype(dtype)


class GGUFFile:
    def __init__(self):
        self.version = 0
        self.kv = {}
        self.tensors = {}
        self.tensor_order = []
        self.alignment = DEFAULT_ALIGNMENT
        self.data_start = 0
        self.size = 0

    def get(self, key, default=None):
        """Plain value of a key (list for arrays) or default."""
        v = self.kv.get(key)
        return default if v is None else v.value


class _Cursor:
    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def take(self, n, what):
        if n < 0 or self.pos + n > len(self.buf):
            raise GGUFError("truncated: %s needs %d bytes at offset %d (file has %d)" % (what, n, self.pos, len(self.buf)))
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def unpack(self, fmt, what):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what):
        n = self.unpack("<Q", what + " length")
        b = self.take(n, what)
        try:
            return bytes(b).decode("utf-8")
        except UnicodeDecodeError as e:
            raise GGUFError("%s at offset %d is not UTF-8: %s" % (what, self.pos - n, e))

    def scalar(self, vtype, what):
        if vtype == STRING:
            return self.string(what)
        if vtype not in _SCALAR:
            raise GGUFError("%s: unknown value type %d at offset %d" % (what, vtype, self.pos))
        v = self.unpack(_SCALAR[vtype], what)
        if vtype == BOOL:
            return bool(v)
        return v


def read(path):
    """Parse a GGUF v3 file; tensor data stays in a read-only mapping."""
    with open(path, "rb") as f:
        try:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # empty file
            buf = b""
    return parse(buf)


def parse(buf):
    g = GGUFFile()
    g.size = len(buf)
    c = _Cursor(buf)
    if bytes(c.take(4, "magic")) != GGUF_MAGIC:
        raise GGUFError("bad magic (not a GGUF file)")
    g.version = c.unpack("<I", "version")
    if g.version != GGUF_VERSION:
        raise GGUFError("GGUF version %d (only 3 is read)" % g.version)
    n_tensors = c.unpack("<Q", "tensor count")
    n_kv = c.unpack("<Q", "metadata count")
    if n_tensors > len(buf) // 24 or n_kv > len(buf) // 12:
        raise GGUFError("counts (%d tensors, %d keys) larger than the file allows" % (n_tensors, n_kv))
    for _ in range(n_kv):
        key = c.string("key")
        if key in g.kv:
            raise GGUFError("duplicate key %r" % key)
        vtype = c.unpack("<I", "value type of %r" % key)
        if vtype == ARRAY:
            et = c.unpack("<I", "array type of %r" % key)
            n = c.unpack("<Q", "array length of %r" % key)
            if et == ARRAY:
                raise GGUFError("key %r: arrays of arrays are not read" % key)
            if et in _SCALAR_NP:
                dt = np.dtype(_SCALAR_NP[et])
                raw = c.take(n * dt.itemsize, "array %r" % key)
                arr = np.frombuffer(raw, dtype=dt)
                vals = [bool(x) for x in arr] if et == BOOL else arr.tolist()
            elif et == STRING:
                if n > len(buf) // 8:
                    raise GGUFError("key %r: %d strings cannot fit in the file" % (key, n))
                vals = [c.string("element of %r" % key) for _ in range(n)]
            else:
                raise GGUFError("key %r: unknown array element type %d" % (key, et))
            g.kv[key] = Value(ARRAY, vals, et)
        else:
            g.kv[key] = Value(vtype, c.scalar(vtype, "value of %r" % key))
    al = g.kv.get("general.alignment")
    if al is not None:
        if al.type != UINT32 or al.value <= 0 or al.value & (al.value - 1):
            raise GGUFError("general.alignment must be a u32 power of two, got %r" % (al,))
        g.alignment = al.value
    for _ in range(n_tensors):
        t = Tensor()
        t.name = c.string("tensor name")
        if t.name in g.tensors:
            raise GGUFError("duplicate tensor %r" % t.name)
        nd = c.unpack("<I", "n_dims of %r" % t.name)
        if nd < 1 or nd > MAX_DIMS:
            raise GGUFError("tensor %r has %d dimensions" % (t.name, nd))
        t.dims = tuple(c.unpack("<Q", "dims of %r" % t.name) for _ in range(nd))
        t.type = c.unpack("<I", "type of %r" % t.name)
        if t.type not in _DTYPE:
            raise GGUFError("tensor %r has ggml type %d (only F32=0, F16=1)" % (t.name, t.type))
        t.offset = c.unpack("<Q", "offset of %r" % t.name)
        if t.offset % g.alignment:
            raise GGUFError("tensor %r offset %d not a multiple of the alignment %d" % (t.name, t.offset, g.alignment))
        t._buf = buf
        g.tensors[t.name] = t
        g.tensor_order.append(t.name)
    g.data_start = c.pos + (-c.pos) % g.alignment
    for t in g.tensors.values():
        t.data_start = g.data_start
        n = 1
        for d in t.dims:
            n *= d
        end = g.data_start + t.offset + n * _DTYPE[t.type].itemsize
        if end > len(buf):
            raise GGUFError("tensor %r data (ends at %d) beyond the end of the file (%d bytes)" % (t.name, end, len(buf)))
    return g


def dump(g, out):
    """Human-readable listing (python3 gguf.py FILE)."""
    out.write("GGUF v%d, %d keys, %d tensors, alignment %d, data at %d\n" %
              (g.version, len(g.kv), len(g.tensors), g.alignment, g.data_start))
    for k, v in g.kv.items():
        if v.type == ARRAY:
            head = v.value[:4]
            out.write("  %-44s arr[%s] x %d %r%s\n" % (k, TYPE_NAMES[v.elem_type], len(v.value), head,
                                                   " ..." if len(v.value) > 4 else ""))
        else:
            out.write("  %-44s %-4s %r\n" % (k, TYPE_NAMES[v.type], v.value))
    for name in g.tensor_order:
        t = g.tensors[name]
        out.write("  %-44s %s dims %s (NumPy shape %s)\n" % (name, "F32" if t.type == F32 else "F16",
                                                           list(t.dims), t.shape))


if __name__ == "__main__":
    import sys
    if len(sys.argv) != 2:
        sys.stderr.write("usage: python3 gguf.py FILE.gguf   (list keys and tensors)\n")
        sys.exit(2)
    try:
        dump(read(sys.argv[1]), sys.stdout)
    except (GGUFError, OSError) as e:
        sys.stderr.write("gguf.py: %s: %s\n" % (sys.argv[1], e))
        sys.exit(1)
