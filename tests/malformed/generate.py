#!/usr/bin/python3
"""generate.py — hostile and malformed inputs for the hardening suite.

Writes into OUT_DIR (given on the command line; nothing is ever written into
the source tree) one file per case plus manifest.json, a list of

  {"file": NAME, "category": CAT, "expect": "error" | "refusal" | "answer",
   "code": CODE, "what": ONE LINE}

where CODE is the cxr_strerror name `cxrvqa ask --json` must report
("truncated", "not-dicom", "bad-dimensions", "corrupt", …) for an error, the
reason_code of a refusal, or, for "answer" (a valid image whose identifiers
are hostile), null: it must be answered, and nothing it carries may reach a
file name. Expected codes were written from what each file is and from the
contracts (common/cxr_common.h, dicom/cxr_dicom.h, the shim's comments), not
from the program's output.

Everything is made here: a chest phantom (sample_data/generate.py's, seeded)
encoded by a small hand-written DICOM encoder (so that lengths, VRs and
delimiters can be wrong on purpose), compressed with Debian's DCMTK tools
(dcmcjpeg, dcmcjpls, dcmcrle) and OpenJPEG's opj_compress, then corrupted.
A missing tool skips only the cases that need it (reported on stderr).

Usage: /usr/bin/python3 tests/malformed/generate.py OUT_DIR
Needs pydicom and numpy.
"""
import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))

UID_ROOT = "1.2.826.0.1.3680043.10.1450.9"
CR = "1.2.840.10008.5.1.4.1.1.1"
TS_IMPLICIT = "1.2.840.10008.1.2"
TS_EXPLICIT = "1.2.840.10008.1.2.1"
TS_DEFLATE = "1.2.840.10008.1.2.1.99"
TS_BIG = "1.2.840.10008.1.2.2"
TS_JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
TS_JPEG_SV1 = "1.2.840.10008.1.2.4.70"
TS_JLS = "1.2.840.10008.1.2.4.80"
TS_J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
TS_RLE = "1.2.840.10008.1.2.5"
ROWS, COLS = 288, 256  # above the 256-pixel "small image" refusal

# ---------------------------------------------------------------- encoder

LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"}
UNDEF = 0xFFFFFFFF


class Raw:
    """Pre-encoded bytes placed at a tag's position (for broken elements)."""

    def __init__(self, data):
        self.data = data


def _value_bytes(vr, v, le):
    e = "<" if le else ">"
    if isinstance(v, Raw):
        return v.data
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    if isinstance(v, np.ndarray):
        a = v.astype(v.dtype.newbyteorder(e)) if v.dtype.itemsize > 1 else v
        return a.tobytes()
    if vr in ("US", "SS", "UL", "SL", "FL", "FD", "AT"):
        fmt = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "AT": "I"}[vr]
        vals = v if isinstance(v, (list, tuple)) else [v]
        return struct.pack(e + fmt * len(vals), *vals)
    b = v.encode("latin-1") if isinstance(v, str) else bytes(v)
    if len(b) % 2:
        b += b"\0" if vr in ("UI", "OB", "UN") else b" "
    return b


def element(tag, vr, value, *, le=True, implicit=False, length=None):
    """One data element. length overrides the encoded value length."""
    g, e = tag >> 16, tag & 0xFFFF
    val = _value_bytes(vr, value, le)
    n = len(val) if length is None else length
    o = "<" if le else ">"
    head = struct.pack(o + "HH", g, e)
    if implicit:
        head += struct.pack(o + "I", n)
    elif vr in LONG_VRS:
        head += vr.encode() + b"\0\0" + struct.pack(o + "I", n)
    else:
        head += vr.encode() + struct.pack(o + "H", n)
    return head + val


def item(data=b"", length=None, le=True):
    return struct.pack("<HHI" if le else ">HHI", 0xFFFE, 0xE000, len(data) if length is None else length) + data


ITEM_DELIM = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
SEQ_DELIM = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def encode(ds, *, le=True, implicit=False):
    """ds: {tag: (vr, value)} or {tag: Raw}; encoded in tag order."""
    out = []
    for tag in sorted(ds):
        v = ds[tag]
        if isinstance(v, Raw):
            out.append(v.data)
        else:
            out.append(element(tag, v[0], v[1], le=le, implicit=implicit))
    return b"".join(out)


def meta(ts, sop_class=CR, sop_uid=UID_ROOT + ".1.1"):
    body = (element(0x00020001, "OB", b"\0\1") + element(0x00020002, "UI", sop_class) +
            element(0x00020003, "UI", sop_uid) + element(0x00020010, "UI", ts) +
            element(0x00020012, "UI", UID_ROOT + ".0") + element(0x00020013, "SH", "CXRVQA_MALFORMED"))
    return b"\0" * 128 + b"DICM" + element(0x00020000, "UL", len(body)) + body


def part10(ds_bytes, ts=TS_EXPLICIT, sop_class=CR, sop_uid=UID_ROOT + ".1.1"):
    return meta(ts, sop_class, sop_uid) + ds_bytes


# ---------------------------------------------------------------- images

def _phantom_module():
    spec = importlib.util.spec_from_file_location("cxr_sample_generate", os.path.join(ROOT, "sample_data", "generate.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_PH = None


def phantom(rows=ROWS, cols=COLS, seed=4242):
    """Display brightness 0..1 of sample_data's chest phantom."""
    global _PH
    if _PH is None:
        _PH = _phantom_module()
    return _PH.chest_phantom(rows, cols, seed)


def stored12(rows=ROWS, cols=COLS):
    return np.rint(200 + 3600 * phantom(rows, cols)).astype(np.uint16)


def stored8(rows=ROWS, cols=COLS):
    return np.rint(10 + 230 * phantom(rows, cols)).astype(np.uint8)


def base_ds(r=ROWS, c=COLS, bits=12, with_pixels=True, n=1, **over):
    """A CR chest PA image data set, 12 bits in 16 (or 8 in 8), MONOCHROME2."""
    ba = 8 if bits == 8 else 16
    ds = {
        0x00080016: ("UI", CR),
        0x00080018: ("UI", f"{UID_ROOT}.1.{n}"),
        0x00080020: ("DA", "20240301"),
        0x00080050: ("SH", f"MAL{n:04d}"),
        0x00080060: ("CS", "CR"),
        0x00100010: ("PN", "MALFORMED^INPUT"),
        0x00100020: ("LO", f"MAL-{n:04d}"),
        0x00180015: ("CS", "CHEST"),
        0x00185101: ("CS", "PA"),
        0x0020000D: ("UI", f"{UID_ROOT}.2.{n}"),
        0x0020000E: ("UI", f"{UID_ROOT}.3.{n}"),
        0x00280002: ("US", 1),
        0x00280004: ("CS", "MONOCHROME2"),
        0x00280010: ("US", r),
        0x00280011: ("US", c),
        0x00280100: ("US", ba),
        0x00280101: ("US", bits),
        0x00280102: ("US", bits - 1),
        0x00280103: ("US", 0),
    }
    if bits != 8:
        ds[0x00281050] = ("DS", "2000")
        ds[0x00281051] = ("DS", "3800")
    if with_pixels:
        px = stored8(r, c) if bits == 8 else stored12(r, c)
        ds[0x7FE00010] = ("OB" if ba == 8 else "OW", px)
    for k, v in over.items():
        tag = TAGS[k]
        if v is None:
            ds.pop(tag, None)
        else:
            ds[tag] = v
    return ds


TAGS = dict(sop_class=0x00080016, sop_uid=0x00080018, accession=0x00080050, modality=0x00080060,
            patient_name=0x00100010, patient_id=0x00100020, body_part=0x00180015, view=0x00185101,
            study_uid=0x0020000D, series_uid=0x0020000E, spp=0x00280002, photometric=0x00280004,
            frames=0x00280008, rows=0x00280010, cols=0x00280011, ba=0x00280100, bs=0x00280101,
            hb=0x00280102, pr=0x00280103, wc=0x00281050, ww=0x00281051, slope=0x00281053,
            intercept=0x00281052, pixels=0x7FE00010, float_pixels=0x7FE00008, double_pixels=0x7FE00009)


def good_file(ts=TS_EXPLICIT, **over):
    return part10(encode(base_ds(**over)), ts)


# ------------------------------------------------------------ compression

class Tools:
    def __init__(self, tmp):
        self.tmp = tmp
        self.missing = set()

    def have(self, name):
        if shutil.which(name):
            return True
        if name not in self.missing:
            print(f"generate: {name} not installed: cases that need it are skipped", file=sys.stderr)
        self.missing.add(name)
        return False

    def dcmtk(self, tool, args, src_bytes):
        """Run a DCMTK compressor on a Part 10 file; return its fragments
        (the Basic Offset Table excluded)."""
        if not self.have(tool):
            return None
        src = os.path.join(self.tmp, "in.dcm")
        dst = os.path.join(self.tmp, "out.dcm")
        with open(src, "wb") as f:
            f.write(src_bytes)
        subprocess.run([tool, *args, src, dst], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import pydicom
        from pydicom.encaps import generate_pixel_data_fragment
        from pydicom.filebase import DicomBytesIO
        ds = pydicom.dcmread(dst)
        fp = DicomBytesIO(ds.PixelData)
        fp.is_little_endian = True
        # skip the Basic Offset Table item
        tag = struct.unpack("<HH", fp.read(4))
        assert tag == (0xFFFE, 0xE000), tag
        fp.read(struct.unpack("<I", fp.read(4))[0])
        return list(generate_pixel_data_fragment(fp))

    def j2k(self, px):
        if not self.have("opj_compress"):
            return None
        pgm = os.path.join(self.tmp, "in.pgm")
        out = os.path.join(self.tmp, "out.j2k")
        with open(pgm, "wb") as f:
            f.write(b"P5\n%d %d\n4095\n" % (px.shape[1], px.shape[0]))
            f.write(px.astype(">u2").tobytes())
        subprocess.run(["opj_compress", "-i", pgm, "-o", out], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        with open(out, "rb") as f:
            return f.read()


def encapsulated(ds, frags, ts, *, bot=b"", item_lengths=None, seq_delim=True, extra=b""):
    """ds with Pixel Data replaced by a pixel sequence of frags."""
    ds = dict(ds)
    parts = [item(bot)]
    for i, fr in enumerate(frags):
        n = item_lengths[i] if item_lengths and i < len(item_lengths) and item_lengths[i] is not None else None
        parts.append(item(fr, length=n))
    body = b"".join(parts) + extra + (SEQ_DELIM if seq_delim else b"")
    ds[0x7FE00010] = Raw(element(0x7FE00010, "OB", body, length=UNDEF))
    return part10(encode(ds), ts)


def find_marker(buf, marker, start=0):
    i = buf.find(marker, start)
    if i < 0:
        raise RuntimeError(f"marker {marker.hex()} not found")
    return i


def patch(buf, at, data):
    b = bytearray(buf)
    b[at:at + len(data)] = data
    return bytes(b)


def jpeg_sof(frag, sof_markers=(b"\xff\xc0", b"\xff\xc1", b"\xff\xc3", b"\xff\xf7")):
    for m in sof_markers:
        i = frag.find(m)
        if i >= 0:
            return i
    raise RuntimeError("no SOF marker")


# ------------------------------------------------------------------ cases

CASES = []


def case(category, expect, code, what, warning=None):
    """warning: for an "answer", a text one of the answer's warnings (and the
    audit row's) must contain: the damage a corrupt-but-readable file names."""
    def reg(fn):
        CASES.append(dict(name=fn.__name__, category=category, expect=expect, code=code, what=what, fn=fn,
                          warning=warning))
        return fn
    return reg


# --- empty and not DICOM

@case("empty", "error", "not-dicom", "a file of 0 bytes")
def empty(t):
    return b""


@case("not-dicom", "error", "not-dicom", "plain text")
def text(t):
    return b"This is not a radiograph.\nPatient: nobody\n" * 20


@case("not-dicom", "error", "not-dicom", "4 KiB of random bytes (first bytes not a DICOM tag)")
def random_bytes(t):
    rng = np.random.default_rng(7)
    b = bytearray(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    b[0:4] = b"\x99\x88\x77\x66"
    return bytes(b)


@case("not-dicom", "error", "not-dicom", "a PDF document")
def pdf(t):
    return b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


@case("not-dicom", "error", "not-dicom", "an ELF executable header")
def elf(t):
    return b"\x7fELF\x02\x01\x01" + b"\0" * 249


@case("not-dicom", "error", "not-dicom", "a 128-byte preamble followed by 'DICX' and garbage")
def wrong_magic(t):
    return b"\0" * 128 + b"DICX" + b"\x13\x37" * 200


# --- truncation

def _good_explicit():
    return good_file()


def _meta_len():
    return len(meta(TS_EXPLICIT))


@case("truncated-header", "error", "truncated", "Part 10 file cut right after 'DICM'")
def cut_after_dicm(t):
    return _good_explicit()[:132]


@case("truncated-header", "error", "truncated", "cut inside the file meta group length element")
def cut_in_group_length(t):
    return _good_explicit()[:138]


@case("truncated-header", "error", "truncated", "cut inside the file meta information (Transfer Syntax UID)")
def cut_in_meta(t):
    m = meta(TS_EXPLICIT)
    return _good_explicit()[:m.find(TS_EXPLICIT.encode()) + 6]


@case("truncated-header", "error", "truncated", "meta header complete, data set absent")
def cut_after_meta(t):
    return _good_explicit()[:_meta_len()]


def _offset_of(data, tag):
    return data.find(struct.pack("<HH", tag >> 16, tag & 0xFFFF), _meta_len())


@case("truncated-element", "error", "truncated", "cut in the middle of an element tag (Patient Name)")
def cut_in_tag(t):
    d = _good_explicit()
    return d[:_offset_of(d, 0x00100010) + 2]


@case("truncated-element", "error", "truncated", "cut inside an element's length field (Rows)")
def cut_in_length(t):
    d = _good_explicit()
    return d[:_offset_of(d, 0x00280010) + 7]


@case("truncated-element", "error", "truncated", "cut inside an element's value (Study Instance UID)")
def cut_in_value(t):
    d = _good_explicit()
    return d[:_offset_of(d, 0x0020000D) + 8 + 10]


@case("truncated-pixels", "error", "truncated", "explicit VR LE, cut half way through Pixel Data")
def cut_pixels_explicit(t):
    d = _good_explicit()
    return d[:len(d) - ROWS * COLS]


@case("truncated-pixels", "error", "truncated", "implicit VR LE, cut half way through Pixel Data")
def cut_pixels_implicit(t):
    d = part10(encode(base_ds(), implicit=True), TS_IMPLICIT)
    return d[:len(d) - ROWS * COLS]


@case("truncated-pixels", "error", "truncated", "explicit VR big endian, cut half way through Pixel Data")
def cut_pixels_big(t):
    d = part10(encode(base_ds(), le=False), TS_BIG)
    return d[:len(d) - ROWS * COLS]


@case("truncated-pixels", "error", "truncated", "cut right after the Pixel Data element header")
def cut_pixels_header(t):
    d = _good_explicit()
    return d[:_offset_of(d, 0x7FE00010) + 12]


@case("truncated-pixels", "error", "truncated", "no meta header (bare implicit data set), cut in Pixel Data")
def cut_pixels_nometa(t):
    d = encode(base_ds(), implicit=True)
    return d[:len(d) - 1000]


@case("short-pixel-data", "error", "truncated", "Pixel Data element complete but holds half the declared rows")
def short_half(t):
    return good_file(pixels=("OW", stored12()[:ROWS // 2]))


@case("short-pixel-data", "error", "truncated", "Pixel Data two bytes (one sample) short")
def short_one_sample(t):
    return good_file(pixels=("OW", stored12().ravel()[:-1]))


@case("short-pixel-data", "answer", None, "Number of Frames 3, data for one frame (frame 1 whole: read, with a warning)",
      warning="1 of 3 frames complete")
def short_frames(t):
    return good_file(frames=("IS", "3"))


@case("short-pixel-data", "error", "truncated", "Pixel Data of length 0")
def short_empty(t):
    return good_file(pixels=("OW", b""))


# --- wrong lengths and VRs

@case("wrong-vr-length", "error", "truncated", "Patient Name declares 65520 bytes, the file ends first")
def vl_overrun(t):
    ds = base_ds()
    ds[0x00100010] = Raw(element(0x00100010, "PN", "MALFORMED^INPUT", length=0xFFF0))
    return part10(encode(ds))


@case("wrong-vr-length", "error", "truncated", "a private OB element declares 2 GiB inside a 150 kB file")
def vl_ob_overrun(t):
    ds = base_ds()
    ds[0x00090010] = ("LO", "CXRVQA TEST")
    ds[0x00091000] = Raw(element(0x00091000, "OB", b"\0" * 16, length=0x7FFFFFFE))
    return part10(encode(ds))


@case("wrong-vr-length", "error", "bad-dimensions", "Rows (US) with a value length of 0")
def vl_rows_empty(t):
    return good_file(rows=("US", b""))


@case("wrong-vr-length", "error", "bad-pixel-format", "Bits Allocated (US) with a value length of 0")
def vl_bits_empty(t):
    return good_file(ba=("US", b""))


@case("wrong-vr-length", "error", "bad-dimensions", "Columns encoded with VR UL = 65792")
def vr_columns_ul(t):
    return good_file(cols=("UL", 65792))


# --- undefined lengths without delimiters

@case("undefined-length", "error", "truncated", "sequence and item of undefined length, no delimiters, file ends")
def undef_seq_eof(t):
    ds = base_ds(with_pixels=False)
    ds[0x00081140] = Raw(element(0x00081140, "SQ", item(element(0x00081150, "UI", CR) + element(0x00081155, "UI", "1.2.3"), length=UNDEF), length=UNDEF))
    return part10(encode(ds))


@case("undefined-length", "error", "truncated", "undefined-length sequence never closed, Pixel Data swallowed as its content")
def undef_seq_unclosed(t):
    ds = base_ds()
    ds[0x00081140] = Raw(element(0x00081140, "SQ", item(element(0x00081150, "UI", CR)), length=UNDEF))
    return part10(encode(ds))


@case("undefined-length", "answer", None,
      "native Pixel Data with undefined length and raw samples, no delimiter (read, with a warning)",
      warning="undefined length (FFFFFFFF) on native pixels")
def undef_native_pixels(t):
    ds = base_ds()
    ds[0x7FE00010] = Raw(element(0x7FE00010, "OW", stored12(), length=UNDEF))
    return part10(encode(ds))


@case("undefined-length", "error", "truncated", "implicit VR: Patient Name with undefined length")
def undef_implicit_text(t):
    ds = base_ds()
    ds[0x00100010] = Raw(element(0x00100010, "PN", "MALFORMED^INPUT", implicit=True, length=UNDEF))
    return part10(encode(ds, implicit=True), TS_IMPLICIT)


# --- nesting

def _nested(depth):
    inner = element(0x00081150, "UI", CR)
    head = (element(0x00081140, "SQ", b"", length=UNDEF) + item(b"", length=UNDEF))
    tail = ITEM_DELIM + SEQ_DELIM
    return head * depth + inner + tail * depth


@case("deep-nesting", "error", "corrupt", "sequences nested 100,000 deep (undefined lengths), then the image")
def nested_100k(t):
    ds = base_ds()
    ds[0x00081140] = Raw(_nested(100000))
    return part10(encode(ds))


@case("deep-nesting", "error", "corrupt", "sequences nested 20,000 deep (defined lengths), then the image")
def nested_20k_defined(t):
    body = element(0x00081150, "UI", CR)
    for _ in range(20000):
        body = element(0x00081140, "SQ", item(body))
    ds = base_ds()
    ds[0x00081140] = Raw(body)
    return part10(encode(ds))


@case("deep-nesting", "error", "corrupt", "sequences nested 100,000 deep inside the file meta group")
def nested_in_meta(t):
    m = meta(TS_EXPLICIT)
    body = m[132 + 12:] + _nested(100000).replace(struct.pack("<HH", 0x0008, 0x1140), struct.pack("<HH", 0x0002, 0x9999))
    return b"\0" * 128 + b"DICM" + element(0x00020000, "UL", len(body)) + body + encode(base_ds())


@case("deep-nesting", "error", "corrupt", "20,000-deep sequences in a garbled meta group (a shifted Transfer "
      "Syntax value, 19 stray bytes, a 3.6 MB group length) that DCMTK reads on through (found by fuzzing)")
def nested_in_garbled_meta(t):
    body = (element(0x00020001, "OB", b"\0\1") + element(0x00020002, "UI", CR) +
            element(0x00020003, "UI", UID_ROOT + ".1.1") + element(0x00020010, "UI", "1.1.2.840.10008.1.2.") +
            b"52.840.10008.1.2.1\0" + element(0x00020012, "UI", UID_ROOT + ".0") +
            element(0x00020013, "SH", "CXRVQA_MALFORMED") +
            _nested(20000).replace(struct.pack("<HH", 0x0008, 0x1140), struct.pack("<HH", 0x0002, 0x9999)))
    return b"\0" * 128 + b"DICM" + element(0x00020000, "UL", 0x36EF58) + body + encode(base_ds())


@case("deep-nesting", "error", "corrupt", "meta header in implicit VR (tolerated by DCMTK), then 100,000-deep sequences")
def nested_implicit_meta(t):
    body = b"".join(element(tag, vr, v, implicit=True) for tag, vr, v in (
        (0x00020001, "OB", b"\0\1"), (0x00020002, "UI", CR), (0x00020003, "UI", UID_ROOT + ".1.1"),
        (0x00020010, "UI", TS_EXPLICIT)))
    ds = base_ds()
    ds[0x00081140] = Raw(_nested(100000))
    return b"\0" * 128 + b"DICM" + element(0x00020000, "UL", len(body), implicit=True) + body + encode(ds)


# --- dimensions

@case("dimensions", "error", "bad-dimensions", "65535 x 65535 (US maximum)")
def dims_max_us(t):
    return good_file(rows=("US", 65535), cols=("US", 65535))


@case("dimensions", "error", "bad-dimensions", "16384 x 16384 16-bit: each side at the cap, 2^28 pixels")
def dims_pixels_cap(t):
    return good_file(rows=("US", 16384), cols=("US", 16384))


@case("dimensions", "error", "bad-dimensions", "8192 x 8192 RGB 16-bit x 4096 frames: 3*2^39 bytes, overflows 32 bits")
def dims_overflow_32(t):
    return good_file(rows=("US", 8192), cols=("US", 8192), spp=("US", 3), photometric=("CS", "RGB"),
                     frames=("IS", "4096"))


@case("dimensions", "error", "bad-dimensions", "4096 x 4096 x 65536 frames (2^41 bytes)")
def dims_frames_many(t):
    return good_file(rows=("US", 4096), cols=("US", 4096), frames=("IS", "65536"))


@case("dimensions", "error", "bad-dimensions", "Number of Frames 2147483647")
def dims_frames_intmax(t):
    return good_file(frames=("IS", "2147483647"))


@case("dimensions", "error", "bad-dimensions", "Number of Frames -1")
def dims_frames_negative(t):
    return good_file(frames=("IS", "-1"))


@case("dimensions", "error", "bad-dimensions", "Number of Frames 99999999999 (overflows int32)")
def dims_frames_overflow(t):
    return good_file(frames=("IS", "99999999999"))


@case("dimensions", "error", "bad-dimensions", "Rows 0")
def dims_rows_zero(t):
    return good_file(rows=("US", 0))


@case("dimensions", "error", "bad-dimensions", "Columns absent")
def dims_cols_absent(t):
    return good_file(cols=None)


# --- bits

@case("bits", "error", "bad-pixel-format", "Bits Stored 12 > Bits Allocated 8")
def bits_stored_gt_alloc8(t):
    return good_file(ba=("US", 8), bs=("US", 12), hb=("US", 11), pixels=("OB", stored8()))


@case("bits", "error", "bad-pixel-format", "Bits Stored 17 > Bits Allocated 16")
def bits_stored_gt_alloc16(t):
    return good_file(bs=("US", 17), hb=("US", 16))


@case("bits", "error", "bad-pixel-format", "High Bit 16 with Bits Allocated 16")
def bits_high_bit(t):
    return good_file(hb=("US", 16))


@case("bits", "error", "bad-pixel-format", "Bits Allocated 12")
def bits_alloc12(t):
    return good_file(ba=("US", 12))


@case("bits", "error", "bad-pixel-format", "Bits Allocated 32, Bits Stored 32")
def bits_alloc32(t):
    return good_file(ba=("US", 32), bs=("US", 32), hb=("US", 31), pixels=("OW", np.zeros(ROWS * COLS * 2, np.uint16)))


@case("bits", "error", "bad-pixel-format", "Pixel Representation 2")
def bits_pixel_rep(t):
    return good_file(pr=("US", 2))


@case("bits", "error", "bad-pixel-format", "Samples per Pixel 2")
def bits_spp2(t):
    return good_file(spp=("US", 2))


@case("bits", "error", "bad-pixel-format", "Bits Stored 0")
def bits_stored_zero(t):
    return good_file(bs=("US", 0), hb=("US", 0))


# --- photometric and LUTs

@case("photometric", "error", "unsupported-photometric", "PALETTE COLOR without palette")
def photo_palette(t):
    return good_file(photometric=("CS", "PALETTE COLOR"))


@case("photometric", "error", "unsupported-photometric", "Photometric Interpretation absent")
def photo_absent(t):
    return good_file(photometric=None)


@case("photometric", "error", "unsupported-photometric", "Photometric Interpretation 'HSV' (retired)")
def photo_hsv(t):
    return good_file(photometric=("CS", "HSV"))


@case("photometric", "error", "bad-pixel-format", "YBR_FULL with Samples per Pixel 1")
def photo_ybr_spp1(t):
    return good_file(photometric=("CS", "YBR_FULL"))


def _lut_item(desc, data, desc_vr="US"):
    return item(element(0x00283002, desc_vr, desc) + element(0x00283006, "OW", data))


@case("lut", "error", "corrupt", "Modality LUT Descriptor declares 4 bits per entry")
def lut_bits(t):
    ds = base_ds()
    ds[0x00283000] = Raw(element(0x00283000, "SQ", _lut_item([4096, 0, 4], np.arange(4096, dtype=np.uint16))))
    return part10(encode(ds))


@case("lut", "error", "corrupt", "Modality LUT declares 4096 entries, holds 16")
def lut_short(t):
    ds = base_ds()
    ds[0x00283000] = Raw(element(0x00283000, "SQ", _lut_item([4096, 0, 16], np.arange(16, dtype=np.uint16))))
    return part10(encode(ds))


@case("lut", "error", "corrupt", "VOI LUT Sequence item without LUT Data")
def lut_voi_nodata(t):
    ds = base_ds()
    ds[0x00283010] = Raw(element(0x00283010, "SQ", item(element(0x00283002, "US", [4096, 0, 12]))))
    return part10(encode(ds))


# --- non-image objects

@case("non-image", "error", "not-an-image", "Basic Text SR, no pixel data")
def sr_text(t):
    ds = base_ds(with_pixels=False, sop_class=("UI", "1.2.840.10008.5.1.4.1.1.88.11"), modality=("CS", "SR"))
    for k in ("rows", "cols", "ba", "bs", "hb", "pr", "spp", "photometric", "wc", "ww"):
        ds.pop(TAGS[k], None)
    return part10(encode(ds), sop_class="1.2.840.10008.5.1.4.1.1.88.11")


@case("non-image", "error", "not-an-image", "Comprehensive SR SOP class carrying a chest image's pixel data")
def sr_with_pixels(t):
    sc = "1.2.840.10008.5.1.4.1.1.88.33"
    return part10(encode(base_ds(sop_class=("UI", sc))), sop_class=sc)


@case("non-image", "error", "not-an-image", "Encapsulated PDF")
def encapsulated_pdf(t):
    sc = "1.2.840.10008.5.1.4.1.1.104.1"
    ds = base_ds(with_pixels=False, sop_class=("UI", sc), modality=("CS", "DOC"))
    for k in ("rows", "cols", "ba", "bs", "hb", "pr", "spp", "photometric", "wc", "ww"):
        ds.pop(TAGS[k], None)
    ds[0x00420011] = ("OB", pdf(t))
    ds[0x00420012] = ("LO", "application/pdf")
    return part10(encode(ds), sop_class=sc)


@case("non-image", "error", "not-an-image", "Grayscale Softcopy Presentation State with pixel attributes")
def presentation_state(t):
    sc = "1.2.840.10008.5.1.4.1.1.11.1"
    return part10(encode(base_ds(sop_class=("UI", sc), modality=("CS", "PR"))), sop_class=sc)


@case("non-image", "error", "not-an-image", "RT Plan")
def rt_plan(t):
    sc = "1.2.840.10008.5.1.4.1.1.481.5"
    return part10(encode(base_ds(with_pixels=False, sop_class=("UI", sc), modality=("CS", "RTPLAN"))), sop_class=sc)


@case("non-image", "error", "not-an-image", "CR image SOP class without Pixel Data")
def cr_no_pixels(t):
    return part10(encode(base_ds(with_pixels=False)))


@case("non-image", "error", "not-an-image", "Pixel Data tag with VR US")
def pixels_wrong_vr(t):
    ds = base_ds()
    ds[0x7FE00010] = Raw(element(0x7FE00010, "US", [1, 2, 3, 4]))
    return part10(encode(ds))


# --- frames

@case("zero-frames", "error", "bad-dimensions", "Number of Frames 0")
def frames_zero(t):
    return good_file(frames=("IS", "0"))


@case("zero-frames", "error", "bad-dimensions", "Number of Frames present but empty")
def frames_empty(t):
    return good_file(frames=("IS", ""))


@case("zero-frames", "error", "bad-dimensions", "Number of Frames 'abc'")
def frames_text(t):
    return good_file(frames=("IS", "abc"))


@case("zero-frames", "error", "bad-dimensions", "JPEG-LS multi-frame object with Number of Frames 0")
def frames_zero_jls(t):
    fr = t.dcmtk("dcmcjpls", [], good_file())
    if fr is None:
        return None
    return encapsulated(base_ds(frames=("IS", "0")), fr, TS_JLS)


# --- float pixels and non-finite values

@case("float-pixels", "error", "bad-pixel-format", "Float Pixel Data full of NaN")
def float_nan(t):
    ds = base_ds(with_pixels=False, ba=("US", 32), bs=None, hb=None, pr=None)
    ds[0x7FE00008] = ("OF", np.full(ROWS * COLS, np.nan, np.float32))
    return part10(encode(ds))


@case("float-pixels", "error", "bad-pixel-format", "Double Float Pixel Data with +Inf / -Inf / NaN")
def double_inf(t):
    ds = base_ds(with_pixels=False, ba=("US", 64), bs=None, hb=None, pr=None)
    a = np.zeros(ROWS * COLS, np.float64)
    a[::3] = np.inf
    a[1::3] = -np.inf
    a[2::3] = np.nan
    ds[0x7FE00009] = ("OD", a)
    return part10(encode(ds))


@case("float-pixels", "error", "bad-pixel-format", "Float Pixel Data (NaN) next to a valid integer Pixel Data")
def float_and_int(t):
    ds = base_ds()
    ds[0x7FE00008] = ("OF", np.full(ROWS * COLS, np.nan, np.float32))
    return part10(encode(ds))


@case("float-pixels", "error", "corrupt", "Rescale Slope 'NaN'")
def rescale_nan(t):
    return good_file(slope=("DS", "NaN"), intercept=("DS", "0"))


@case("float-pixels", "error", "corrupt", "Rescale Intercept '-inf'")
def rescale_inf(t):
    return good_file(slope=("DS", "1"), intercept=("DS", "-inf"))


# --- transfer syntaxes

@case("transfer-syntax", "error", "unsupported-transfer-syntax", "MPEG2 Main Profile transfer syntax")
def ts_mpeg2(t):
    return encapsulated(base_ds(), [b"\x00\x00\x01\xb3" + b"\0" * 60], "1.2.840.10008.1.2.4.100")


@case("transfer-syntax", "error", "unsupported-transfer-syntax", "HEVC transfer syntax")
def ts_hevc(t):
    return encapsulated(base_ds(), [b"\x00\x00\x00\x01\x40\x01" + b"\0" * 58], "1.2.840.10008.1.2.4.107")


@case("transfer-syntax", "error", "unsupported-transfer-syntax", "JPIP Referenced (pixel data elsewhere)")
def ts_jpip(t):
    ds = base_ds(with_pixels=False)
    ds[0x00289415] = ("UR", "http://example.invalid/jpip")
    ds[0x7FE00010] = Raw(element(0x7FE00010, "OB", b""))
    return part10(encode(ds), "1.2.840.10008.1.2.4.94")


@case("transfer-syntax", "error", "unsupported-transfer-syntax", "unknown transfer syntax UID 1.2.3.4.5.6.7")
def ts_unknown(t):
    return good_file(ts="1.2.3.4.5.6.7")


# --- encapsulated pixel data: fragments

def _jls_frags(t):
    return t.dcmtk("dcmcjpls", [], good_file())


@case("fragments", "error", "truncated", "first fragment's item length 0x7FFFFFF0, beyond the end of the file")
def frag_len_overflow(t):
    fr = _jls_frags(t)
    return None if fr is None else encapsulated(base_ds(), fr, TS_JLS, item_lengths=[0x7FFFFFF0])


@case("fragments", "error", "truncated", "pixel sequence without its sequence delimiter, file ends")
def frag_no_delim(t):
    fr = _jls_frags(t)
    return None if fr is None else encapsulated(base_ds(), fr, TS_JLS, seq_delim=False)


@case("fragments", "error", "truncated", "a non-item tag (0008,0016) inside the pixel sequence")
def frag_bad_tag(t):
    fr = _jls_frags(t)
    return None if fr is None else encapsulated(base_ds(), fr, TS_JLS, extra=element(0x00080016, "UI", CR))


@case("fragments", "error", "truncated", "JPEG-LS pixel sequence with an offset table and no fragment")
def frag_none_jls(t):
    return encapsulated(base_ds(), [], TS_JLS)


@case("fragments", "error", "truncated", "JPEG 2000 pixel sequence with an offset table and no fragment")
def frag_none_j2k(t):
    return encapsulated(base_ds(), [], TS_J2K_LOSSLESS)


@case("fragments", "error", "truncated", "RLE pixel sequence with an offset table and no fragment")
def frag_none_rle(t):
    return encapsulated(base_ds(), [], TS_RLE)


@case("fragments", "error", "corrupt", "RLE: Basic Offset Table and segment offsets point past the fragment")
def frag_bad_offsets_rle(t):
    fr = t.dcmtk("dcmcrle", [], good_file())
    if fr is None:
        return None
    f = bytearray(fr[0])
    struct.pack_into("<II", f, 4, 0x00100000, 0x00200000)
    return encapsulated(base_ds(), [bytes(f)], TS_RLE, bot=struct.pack("<I", 0x7FFFFF00))


# --- corrupted JPEG / JPEG-LS / JPEG 2000 / RLE streams

def _jpeg8(t):
    return t.dcmtk("dcmcjpeg", ["+eb"], part10(encode(base_ds(bits=8))))


def _jpeg12(t):
    return t.dcmtk("dcmcjpeg", ["+e1"], good_file())


@case("jpeg", "error", "corrupt", "baseline JPEG whose SOF declares 65535 x 65535")
def jpeg_sof_huge(t):
    fr = _jpeg8(t)
    if fr is None:
        return None
    i = jpeg_sof(fr[0])
    return encapsulated(base_ds(bits=8), [patch(fr[0], i + 5, b"\xff\xff\xff\xff")], TS_JPEG_BASELINE)


@case("jpeg", "error", "corrupt", "baseline JPEG whose SOF declares 64 x 64 (header: 256 x 288)")
def jpeg_sof_small(t):
    fr = _jpeg8(t)
    if fr is None:
        return None
    i = jpeg_sof(fr[0])
    return encapsulated(base_ds(bits=8), [patch(fr[0], i + 5, b"\x00\x40\x00\x40")], TS_JPEG_BASELINE)


@case("jpeg", "error", "corrupt", "lossless JPEG stream cut to its first half (item lengths consistent)")
def jpeg_truncated(t):
    fr = _jpeg12(t)
    if fr is None:
        return None
    half = fr[0][:len(fr[0]) // 2]
    return encapsulated(base_ds(), [half + b"\0" * (len(half) & 1)], TS_JPEG_SV1)


@case("jpeg", "error", "corrupt", "lossless JPEG whose SOI and first segment are overwritten")
def jpeg_no_soi(t):
    fr = _jpeg12(t)
    if fr is None:
        return None
    return encapsulated(base_ds(), [b"\x12\x34" * 16 + fr[0][32:]], TS_JPEG_SV1)


@case("jpeg", "error", "corrupt", "lossless JPEG whose SOF declares 65535 x 65535")
def jpeg12_sof_huge(t):
    fr = _jpeg12(t)
    if fr is None:
        return None
    i = jpeg_sof(fr[0])
    return encapsulated(base_ds(), [patch(fr[0], i + 5, b"\xff\xff\xff\xff")], TS_JPEG_SV1)


@case("jpeg-ls", "error", "corrupt", "JPEG-LS whose SOF55 declares 65535 x 65535")
def jls_sof_huge(t):
    fr = _jls_frags(t)
    if fr is None:
        return None
    i = jpeg_sof(fr[0], (b"\xff\xf7",))
    return encapsulated(base_ds(), [patch(fr[0], i + 5, b"\xff\xff\xff\xff")], TS_JLS)


@case("jpeg-ls", "error", "corrupt", "JPEG-LS whose SOF55 declares 64 x 64 (header: 256 x 288)")
def jls_sof_small(t):
    fr = _jls_frags(t)
    if fr is None:
        return None
    i = jpeg_sof(fr[0], (b"\xff\xf7",))
    return encapsulated(base_ds(), [patch(fr[0], i + 5, b"\x00\x40\x00\x40")], TS_JLS)


@case("jpeg-ls", "error", "corrupt", "JPEG-LS stream cut to its first half")
def jls_truncated(t):
    fr = _jls_frags(t)
    if fr is None:
        return None
    half = fr[0][:len(fr[0]) // 2]
    return encapsulated(base_ds(), [half + b"\0" * (len(half) & 1)], TS_JLS)


@case("jpeg-ls", "error", "corrupt", "JPEG-LS: SOI followed by random bytes")
def jls_garbage(t):
    rng = np.random.default_rng(11)
    return encapsulated(base_ds(), [b"\xff\xd8" + rng.integers(0, 256, 4094, dtype=np.uint8).tobytes()], TS_JLS)


def _j2k(t):
    return t.j2k(stored12())


def _siz(cs):
    return find_marker(cs, b"\xff\x4f\xff\x51") + 4  # Lsiz


@case("jpeg2000", "error", "bad-dimensions", "JPEG 2000 SIZ declares 2^31-1 x 2^31-1")
def j2k_siz_huge(t):
    cs = _j2k(t)
    if cs is None:
        return None
    s = _siz(cs)
    return encapsulated(base_ds(), [patch(cs, s + 4, struct.pack(">II", 0x7FFFFFFF, 0x7FFFFFFF))], TS_J2K_LOSSLESS)


@case("jpeg2000", "error", "bad-dimensions", "JPEG 2000 SIZ with 1 x 1 tiles (73,728 tiles)")
def j2k_tiles(t):
    cs = _j2k(t)
    if cs is None:
        return None
    s = _siz(cs)
    return encapsulated(base_ds(), [patch(cs, s + 20, struct.pack(">II", 1, 1))], TS_J2K_LOSSLESS)


@case("jpeg2000", "error", "bad-dimensions", "JPEG 2000 SIZ declares 300 components")
def j2k_components(t):
    cs = _j2k(t)
    if cs is None:
        return None
    s = _siz(cs)
    return encapsulated(base_ds(), [patch(cs, s + 36, struct.pack(">H", 300))], TS_J2K_LOSSLESS)


@case("jpeg2000", "error", "corrupt", "JPEG 2000 SIZ declares 64 x 64 (header: 256 x 288)")
def j2k_siz_small(t):
    cs = _j2k(t)
    if cs is None:
        return None
    s = _siz(cs)
    return encapsulated(base_ds(), [patch(cs, s + 4, struct.pack(">II", 64, 64))], TS_J2K_LOSSLESS)


@case("jpeg2000", "error", "corrupt", "JPEG 2000 code stream cut to its first quarter")
def j2k_truncated(t):
    cs = _j2k(t)
    if cs is None:
        return None
    q = cs[:len(cs) // 4]
    return encapsulated(base_ds(), [q + b"\0" * (len(q) & 1)], TS_J2K_LOSSLESS)


@case("jpeg2000", "error", "corrupt", "JPEG 2000: SOC followed by random bytes")
def j2k_garbage(t):
    rng = np.random.default_rng(13)
    return encapsulated(base_ds(), [b"\xff\x4f" + rng.integers(0, 256, 2046, dtype=np.uint8).tobytes()], TS_J2K_LOSSLESS)


def _rle(t):
    return t.dcmtk("dcmcrle", [], good_file())


@case("rle", "error", "corrupt", "RLE header declares 3 segments for a 16-bit monochrome image (2 needed)")
def rle_nseg(t):
    fr = _rle(t)
    if fr is None:
        return None
    f = bytearray(fr[0])
    struct.pack_into("<I", f, 0, 3)
    struct.pack_into("<I", f, 12, len(f) - 2)
    return encapsulated(base_ds(), [bytes(f)], TS_RLE)


@case("rle", "error", "corrupt", "RLE header declares 15 segments at offset 0xFFFFFFF0")
def rle_huge(t):
    fr = _rle(t)
    if fr is None:
        return None
    f = bytearray(fr[0])
    struct.pack_into("<I", f, 0, 15)
    for k in range(15):
        struct.pack_into("<I", f, 4 + 4 * k, 0xFFFFFFF0)
    return encapsulated(base_ds(), [bytes(f)], TS_RLE)


@case("rle", "error", "corrupt", "RLE segments shorter than the frame (fragment cut, lengths consistent)")
def rle_short(t):
    fr = _rle(t)
    if fr is None:
        return None
    f = fr[0][:64 + (len(fr[0]) - 64) // 3]
    return encapsulated(base_ds(), [f + b"\0" * (len(f) & 1)], TS_RLE)


@case("rle", "error", "corrupt", "RLE fragment of 16 bytes (no complete header)")
def rle_header_short(t):
    return encapsulated(base_ds(), [struct.pack("<IIII", 2, 64, 128, 0)], TS_RLE)


@case("rle", "error", "corrupt", "RLE second segment offset before the first")
def rle_offsets_reversed(t):
    fr = _rle(t)
    if fr is None:
        return None
    f = bytearray(fr[0])
    a, b = struct.unpack_from("<II", f, 4)
    struct.pack_into("<II", f, 4, b, a)
    return encapsulated(base_ds(), [bytes(f)], TS_RLE)


# --- corrupt but readable: frame 1 is all there, the damage is named in a
# warning (cxr_ingest_params.damaged; refused under strict mode)

@case("damaged-readable", "answer", None, "Pixel Data length field 0xFFFFFFF0, every pixel present, file ends there",
      warning="declares 4294967280 bytes (0xFFFFFFF0)")
def pixel_len_fffffff0(t):
    ds = base_ds()
    ds[0x7FE00010] = Raw(element(0x7FE00010, "OW", stored12(), length=0xFFFFFFF0))
    return part10(encode(ds))


@case("damaged-readable", "answer", None, "implicit VR: Pixel Data length 0xFFFFFFF0, every pixel present",
      warning="declares 4294967280 bytes")
def pixel_len_fffffff0_implicit(t):
    ds = base_ds()
    ds[0x7FE00010] = Raw(element(0x7FE00010, "OW", stored12(), implicit=True, length=0xFFFFFFF0))
    return part10(encode(ds, implicit=True), TS_IMPLICIT)


@case("damaged-readable", "answer", None, "3 frames declared, file cut inside frame 3",
      warning="2 of 3 frames complete")
def pixel_cut_frame3(t):
    px = np.concatenate([stored12()] * 3)
    d = good_file(frames=("IS", "3"), pixels=("OW", px))
    return d[:len(d) - ROWS * COLS]


# --- hangs, bombs and corrupt lengths in each codec (issue 20): refused by
# the structural check (dicom/codec_check.c) before any decoder runs

def _frag_insert(frag, at, data):
    return frag[:at] + data + frag[at:]


def _jpeg_case(t, fn, bits=8):
    fr = _jpeg8(t) if bits == 8 else _jpeg12(t)
    if fr is None:
        return None
    f = fn(fr[0])
    f = f + b"\0" * (len(f) & 1)
    return encapsulated(base_ds(bits=bits), [f], TS_JPEG_BASELINE if bits == 8 else TS_JPEG_SV1)


@case("hang", "error", "corrupt",
      "baseline JPEG with a TEM marker (FF01) right after SOI: DCMTK 3.6.7's bit-depth scan never returns")
def jpeg_tem_hang(t):
    return _jpeg_case(t, lambda f: _frag_insert(f, 2, b"\xff\x01"))


@case("hang", "error", "corrupt",
      "baseline JPEG whose DQT marker became TEM (FF01 0000), as in the fuzzer's 2 KB find, with a CR/CHEST header")
def jpeg_tem_for_dqt(t):
    return _jpeg_case(t, lambda f: patch(f, find_marker(f, b"\xff\xdb"), b"\xff\x01\x00\x00"))


@case("hang", "error", "corrupt", "lossless JPEG with a TEM marker (FF01) right after SOI")
def jpegll_tem_hang(t):
    return _jpeg_case(t, lambda f: _frag_insert(f, 2, b"\xff\x01"), bits=12)


@case("jpeg", "error", "corrupt", "baseline JPEG: DQT segment length 0xFFFF, past the end of the fragment")
def jpeg_dqt_len_overrun(t):
    return _jpeg_case(t, lambda f: patch(f, find_marker(f, b"\xff\xdb") + 2, b"\xff\xff"))


@case("jpeg", "error", "corrupt", "baseline JPEG: APP0 segment length 1 (below the 2 of the length field)")
def jpeg_app_len_one(t):
    return _jpeg_case(t, lambda f: patch(f, find_marker(f, b"\xff\xe0") + 2, b"\x00\x01"))


@case("jpeg", "error", "corrupt", "baseline JPEG with no scan: SOS to the end cut, EOI kept")
def jpeg_no_sos(t):
    return _jpeg_case(t, lambda f: f[:find_marker(f, b"\xff\xda")] + b"\xff\xd9")


@case("jpeg", "error", "corrupt", "baseline JPEG whose scan names component 9, absent from the frame")
def jpeg_sos_foreign_component(t):
    return _jpeg_case(t, lambda f: patch(f, find_marker(f, b"\xff\xda") + 5, b"\x09"))


@case("jpeg", "error", "corrupt", "baseline JPEG with 300 scans (each one more pass over the image)")
def jpeg_scan_bomb(t):
    extra = (b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" + b"\x12\x34") * 300
    return _jpeg_case(t, lambda f: f[:f.rfind(b"\xff\xd9")] + extra + b"\xff\xd9")


@case("jpeg", "error", "corrupt", "baseline JPEG whose SOF0 became SOF9 (arithmetic coding)")
def jpeg_arithmetic(t):
    return _jpeg_case(t, lambda f: patch(f, jpeg_sof(f), b"\xff\xc9"))


@case("jpeg", "error", "corrupt", "baseline JPEG whose SOF0 declares 16-bit samples")
def jpeg_precision16(t):
    return _jpeg_case(t, lambda f: patch(f, jpeg_sof(f) + 4, b"\x10"))


@case("jpeg", "error", "corrupt", "baseline JPEG whose first Huffman table declares 4080 codes")
def jpeg_dht_overflow(t):
    return _jpeg_case(t, lambda f: patch(f, find_marker(f, b"\xff\xc4") + 5, b"\xff" * 16))


@case("jpeg", "error", "corrupt", "baseline JPEG whose SOF declares 0 lines (height from a DNL)")
def jpeg_height_zero(t):
    return _jpeg_case(t, lambda f: patch(f, jpeg_sof(f) + 5, b"\x00\x00"))


@case("jpeg-lossless", "error", "corrupt", "lossless JPEG with predictor 9 (1..7)")
def jpegll_predictor9(t):
    return _jpeg_case(t, lambda f: patch(f, find_marker(f, b"\xff\xda") + 7, b"\x09"), bits=12)


@case("jpeg-lossless", "error", "corrupt", "lossless JPEG scan with successive approximation Ah 3 (0)")
def jpegll_successive_approx(t):
    return _jpeg_case(t, lambda f: patch(f, find_marker(f, b"\xff\xda") + 9, b"\x30"), bits=12)


@case("jpeg-lossless", "error", "corrupt", "lossless JPEG: SOF3 segment length 0xFFFF")
def jpegll_sof_len_overrun(t):
    return _jpeg_case(t, lambda f: patch(f, jpeg_sof(f) + 2, b"\xff\xff"), bits=12)


def _jls_case(t, fn):
    fr = _jls_frags(t)
    if fr is None:
        return None
    f = fn(fr[0])
    f = f + b"\0" * (len(f) & 1)
    return encapsulated(base_ds(), [f], TS_JLS)


def _after_sof55(f):
    i = jpeg_sof(f, (b"\xff\xf7",))
    return i + 2 + struct.unpack(">H", f[i + 2:i + 4])[0]


@case("jpeg-ls", "error", "corrupt", "JPEG-LS with a TEM marker (FF01) right after SOI")
def jls_tem(t):
    return _jls_case(t, lambda f: _frag_insert(f, 2, b"\xff\x01"))


@case("jpeg-ls", "error", "corrupt", "JPEG-LS with an LSE mapping table (palette, id 2)")
def jls_lse_mapping(t):
    return _jls_case(t, lambda f: _frag_insert(f, _after_sof55(f), b"\xff\xf8\x00\x06\x02\x01\x01\x00"))


@case("jpeg-ls", "error", "corrupt", "JPEG-LS preset parameters (LSE id 1) with RESET 2 (3 at least)")
def jls_lse_reset(t):
    return _jls_case(t, lambda f: patch(f, find_marker(f, b"\xff\xf8") + 13, struct.pack(">H", 2)))


@case("jpeg-ls", "error", "corrupt", "JPEG-LS preset thresholds T1 300 > T2 200 > T3 100 (T.87 wants them rising)")
def jls_lse_thresholds(t):
    return _jls_case(t, lambda f: patch(f, find_marker(f, b"\xff\xf8") + 7, struct.pack(">3H", 300, 200, 100)))


@case("jpeg-ls", "error", "corrupt", "JPEG-LS scan with interleave mode 7 (0..2)")
def jls_ilv_bad(t):
    return _jls_case(t, lambda f: patch(f, find_marker(f, b"\xff\xda") + 8, b"\x07"))


@case("jpeg-ls", "error", "corrupt", "JPEG-LS: SOF55 segment length 0xFFFF")
def jls_sof_len_overrun(t):
    return _jls_case(t, lambda f: patch(f, jpeg_sof(f, (b"\xff\xf7",)) + 2, b"\xff\xff"))


@case("rle", "error", "corrupt", "RLE header declaring 0 segments")
def rle_zero_segments(t):
    fr = _rle(t)
    if fr is None:
        return None
    f = bytearray(fr[0])
    struct.pack_into("<I", f, 0, 0)
    return encapsulated(base_ds(), [bytes(f)], TS_RLE)


@case("rle", "error", "corrupt", "RLE first segment offset 8, inside the 64-byte header")
def rle_offset_in_header(t):
    fr = _rle(t)
    if fr is None:
        return None
    f = bytearray(fr[0])
    struct.pack_into("<I", f, 4, 8)
    return encapsulated(base_ds(), [bytes(f)], TS_RLE)


def _j2k_case(t, fn):
    cs = _j2k(t)
    if cs is None:
        return None
    f = fn(cs)
    return encapsulated(base_ds(), [f + b"\0" * (len(f) & 1)], TS_J2K_LOSSLESS)


@case("jpeg2000", "error", "corrupt", "JPEG 2000: SOC not followed by SIZ (its marker became COD)")
def j2k_no_siz(t):
    return _j2k_case(t, lambda cs: patch(cs, _siz(cs) - 1, b"\x52"))


@case("jpeg2000", "error", "corrupt", "JPEG 2000: component sub-sampling XRsiz 0")
def j2k_xrsiz_zero(t):
    return _j2k_case(t, lambda cs: patch(cs, _siz(cs) + 39, b"\x00"))


@case("jpeg2000", "error", "corrupt", "JPEG 2000: component precision 38 bits")
def j2k_precision38(t):
    return _j2k_case(t, lambda cs: patch(cs, _siz(cs) + 38, b"\x25"))


@case("jpeg2000", "error", "corrupt", "JPEG 2000: COD with 40 decomposition levels")
def j2k_levels40(t):
    return _j2k_case(t, lambda cs: patch(cs, find_marker(cs, b"\xff\x52", _siz(cs)) + 9, b"\x28"))


@case("jpeg2000", "error", "corrupt", "JPEG 2000: COD segment length 0xFFFF (runs into the tile data)")
def j2k_cod_len_overrun(t):
    return _j2k_case(t, lambda cs: patch(cs, find_marker(cs, b"\xff\x52", _siz(cs)) + 2, b"\xff\xff"))


# --- deflate

def _deflate(ds_bytes_parts):
    """Raw-deflate a data set given as parts; an int part is that many MiB
    of zeros (emitted by repeating one fully flushed block, so that a
    gigabyte costs milliseconds here)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = []
    zero_block = None
    for p in ds_bytes_parts:
        if isinstance(p, int):
            if zero_block is None:
                zero_block = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
                out.append(zero_block)
                p -= 1
            out.append(zero_block * p)
        else:
            out.append(c.compress(p) + c.flush(zlib.Z_FULL_FLUSH))
    out.append(c.flush())
    return b"".join(out)


def _bomb(mib, tail_ds):
    """Deflated file: the header elements, a private OB of mib MiB of zeros,
    then the rest."""
    ds = base_ds()
    head = {k: v for k, v in ds.items() if k < 0x00090000}
    rest = {k: v for k, v in ds.items() if k > 0x00091000}
    rest.update(tail_ds)
    h = encode(head) + element(0x00090010, "LO", "CXRVQA TEST")
    ob = struct.pack("<HH", 0x0009, 0x1000) + b"OB\0\0" + struct.pack("<I", mib << 20)
    return part10(_deflate([h + ob, mib, encode(rest)]), TS_DEFLATE)


@case("deflate", "error", "bad-dimensions", "deflated data set inflating to 4 GiB (a private OB of zeros), 4 MB on disk")
def deflate_bomb(t):
    return _bomb(4095, {})


@case("deflate", "error", "bad-dimensions", "deflated data set inflating to 512 MiB before the image, 0.5 MB on disk")
def deflate_bomb_512m(t):
    return _bomb(512, {})


@case("deflate", "error", "truncated", "deflated transfer syntax, but the data set is random bytes")
def deflate_garbage(t):
    rng = np.random.default_rng(17)
    return part10(rng.integers(0, 256, 8192, dtype=np.uint8).tobytes(), TS_DEFLATE)


@case("deflate", "error", "truncated", "deflated data set cut half way")
def deflate_cut(t):
    d = part10(_deflate([encode(base_ds())]), TS_DEFLATE)
    return d[:_meta_len() + (len(d) - _meta_len()) // 2]


# --- refusals: the image is readable but not one the model may read

@case("refusal", "refusal", "not-chest", "CT modality")
def refuse_ct(t):
    return good_file(modality=("CS", "CT"))


@case("refusal", "refusal", "not-chest", "CR of the knee")
def refuse_knee(t):
    return good_file(body_part=("CS", "KNEE"))


@case("refusal", "refusal", "lateral-view", "lateral view")
def refuse_lateral(t):
    return good_file(view=("CS", "LL"))


@case("refusal", "refusal", "too-small", "100 x 100 image")
def refuse_small(t):
    return part10(encode(base_ds(r=100, c=100)))


@case("refusal", "refusal", "too-small", "1 x 1 image")
def refuse_tiny(t):
    return good_file(rows=("US", 1), cols=("US", 1), pixels=("OW", np.array([1000], np.uint16)))


# --- PNG

def _png(w, h, bit_depth=8, color=0, idat=None):
    def chunk(typ, data):
        return struct.pack(">I", len(data)) + typ + data + struct.pack(">I", zlib.crc32(typ + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color, 0, 0, 0)
    if idat is None:
        raw = b"".join(b"\0" + bytes(w) for _ in range(h))
        idat = zlib.compress(raw)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@case("png", "error", "bad-dimensions", "PNG whose IHDR declares 2^31-1 x 2^31-1")
def png_huge(t):
    return _png(0x7FFFFFFF, 0x7FFFFFFF, idat=zlib.compress(b"\0" * 64))


@case("png", "error", "truncated", "PNG cut inside IDAT")
def png_cut(t):
    d = _png(300, 300)
    return d[:len(d) // 2]


@case("png", "error", "corrupt", "PNG with a bad IDAT CRC")
def png_crc(t):
    d = bytearray(_png(300, 300))
    i = d.find(b"IEND") - 8  # last byte of the IDAT CRC
    d[i + 3] ^= 0xFF
    return bytes(d)


# --- hostile identifiers: a valid image whose UIDs and names try to become
# paths. Invalid UIDs must stop the structured report (the SR writer refuses
# to copy them: sr-failed) and must never name a file.

@case("hostile-ids", "error", "sr-failed", "Study Instance UID '../../../../tmp/cxrvqa-escape'")
def uid_dotdot(t):
    return good_file(study_uid=("UI", "../../../../tmp/cxrvqa-escape"))


@case("hostile-ids", "error", "sr-failed", "SOP Instance UID '/tmp/cxrvqa-abs' (absolute path)")
def uid_absolute(t):
    return part10(encode(base_ds(sop_uid=("UI", "/tmp/cxrvqa-abs"))), sop_uid="/tmp/cxrvqa-abs")


@case("hostile-ids", "error", "sr-failed", "Series Instance UID with an embedded NUL then '/../x'")
def uid_nul(t):
    return good_file(series_uid=("UI", "1.2.3\0/../../x"))


@case("hostile-ids", "error", "sr-failed", "Study Instance UID of 300 characters")
def uid_long(t):
    return good_file(study_uid=("UI", ("1.2." + "9" * 300)[:300]))


@case("hostile-ids", "answer", None, "Patient Name '../../etc/passwd/' repeated to 300 characters")
def name_dotdot(t):
    return good_file(patient_name=("PN", ("../../etc/passwd/" * 20)[:300]))


@case("hostile-ids", "answer", None, "Patient ID and Accession Number are absolute paths")
def id_absolute(t):
    return good_file(patient_id=("LO", "/etc/shadow"), accession=("SH", "/tmp/x"))


@case("hostile-ids", "error", "sr-failed", "Patient ID with an embedded NUL and a newline")
def id_nul(t):
    return good_file(patient_id=("LO", "AB\0../\ncd"))


def main():
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        print("usage: generate.py OUT_DIR", file=sys.stderr)
        return 2
    out = sys.argv[1]
    if os.path.abspath(out).startswith(ROOT + os.sep) and not os.path.abspath(out).startswith(
            tuple(os.path.join(ROOT, d) + os.sep for d in os.listdir(ROOT) if d.startswith("build"))):
        print("generate: refusing to write into the source tree (give a temporary or build directory)", file=sys.stderr)
        return 2
    os.makedirs(out, exist_ok=True)
    manifest = []
    with tempfile.TemporaryDirectory(prefix="cxr-malformed-") as tmp:
        t = Tools(tmp)
        for c in CASES:
            data = c["fn"](t)
            if data is None:
                continue
            name = c["name"] + ".dcm"
            with open(os.path.join(out, name), "wb") as f:
                f.write(data)
            manifest.append({"file": name, "category": c["category"], "expect": c["expect"], "code": c["code"],
                             "what": c["what"], "bytes": len(data), "warning": c["warning"]})
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    cats = sorted({m["category"] for m in manifest})
    print(f"generate: {len(manifest)} files in {len(cats)} categories -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
