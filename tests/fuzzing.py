"""Test helper: mutated C-STORE datasets from the real files in ../shared/data.

A :class:`Seed` is one real instance split into what a C-STORE carries: the SOP
class, the transfer syntax of the presentation context and the encoded
dataset (without preamble and file meta). :func:`mutations` is a hypothesis
strategy that turns a seed into a hostile request: flipped, overwritten,
inserted or deleted bytes (mostly in the header, where the parser works),
truncation, element length fields set to huge values, UIDs replaced with path
tricks or over-long values, a request UID or SOP class that disagrees with
the dataset, the wrong transfer syntax, or a fresh valid SOP Instance UID (so
that the store path, not only the parser, is exercised).
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from pathlib import Path

import pydicom
from hypothesis import strategies as st
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
#: The region most mutations hit: the header, before Pixel Data.
HEADER_BYTES = 4096


@dataclass(frozen=True)
class Seed:
    """One real instance as a C-STORE carries it."""

    name: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    dataset: bytes


@dataclass(frozen=True)
class Mutant:
    """A mutated C-STORE request."""

    seed: str
    operations: tuple[str, ...]
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    dataset: bytes


def dataset_bytes(path: Path) -> tuple[pydicom.Dataset, bytes]:
    """The header (no pixels) and the encoded dataset of a Part 10 file, exactly as stored."""
    raw = path.read_bytes()
    meta_length = struct.unpack("<I", raw[140:144])[0]  # (0002,0000) UL value after 132 + 8
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return ds, raw[144 + meta_length :]


def load_seeds(shared_data: Path) -> list[Seed]:
    """Real instances of several kinds: CT, localizer, SC, JPEG Lossless, small CT, SR, SEG."""
    picks = [
        ("ge-head", shared_data / "head-ct-ge" / "01.dcm"),
        (
            "phantom-localizer",
            next(iter(sorted((shared_data / "head-phantom-philips" / "S1000").iterdir()))),
        ),
        ("phantom-sc", sorted((shared_data / "head-phantom-philips" / "S4010").iterdir())[0]),
        (
            "chest-jpeg-lossless",
            sorted((shared_data / "chest-ct" / "jpeg-lossless-40").iterdir())[0],
        ),
        ("small-ct", shared_data / "seg-sr-examples" / "highdicom" / "ct_image.dcm"),
        ("sr", shared_data / "seg-sr-examples" / "dcmqi" / "sr-example" / "sr.dcm"),
        ("seg", shared_data / "seg-sr-examples" / "dcmqi" / "sr-example" / "seg.dcm"),
    ]
    seeds = []
    for name, path in picks:
        ds, data = dataset_bytes(path)
        seeds.append(
            Seed(
                name,
                str(ds.SOPClassUID),
                str(ds.SOPInstanceUID),
                str(ds.file_meta.TransferSyntaxUID),
                data,
            )
        )
    # The GE head re-encoded in Implicit VR Little Endian (what many modalities send).
    full = pydicom.dcmread(shared_data / "head-ct-ge" / "02.dcm")
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, full)
    seeds.append(
        Seed(
            "ge-head-implicit",
            str(full.SOPClassUID),
            str(full.SOPInstanceUID),
            IMPLICIT_LE,
            buffer.getvalue(),
        )
    )
    return seeds


def _position(data: bytearray, rng: random.Random) -> int:
    if not data:
        return 0
    if rng.random() < 0.8:
        return rng.randrange(min(len(data), HEADER_BYTES))
    return rng.randrange(len(data))


def _new_uid_like(uid: str, rng: random.Random) -> str:
    """A valid UID of the same length (so element lengths stay right)."""
    prefix = "1.2.826.0.1.3680043.10.1."
    if len(uid) <= len(prefix) + 1:
        return uid
    digits = "".join(rng.choice("123456789") for _ in range(len(uid) - len(prefix)))
    return prefix + digits


def mutate(seed: Seed, rng: random.Random, operations: int) -> Mutant:
    """Apply ``operations`` random mutations to ``seed`` (see the module docstring)."""
    data = bytearray(seed.dataset)
    sop_class_uid = seed.sop_class_uid
    sop_instance_uid = seed.sop_instance_uid
    transfer_syntax_uid = seed.transfer_syntax_uid
    applied = []
    for _ in range(operations):
        kind = rng.choice(
            (
                "flip",
                "flip",
                "overwrite",
                "insert",
                "delete",
                "truncate",
                "length",
                "length",
                "uid-path",
                "uid-long",
                "request-uid",
                "request-class",
                "syntax",
                "new-uid",
                "duplicate",
                "zero-run",
            )
        )
        at = _position(data, rng)
        if kind == "flip" and data:
            for _ in range(rng.randint(1, 8)):
                data[_position(data, rng)] ^= 1 << rng.randrange(8)
        elif kind == "overwrite" and data:
            chunk = rng.randbytes(rng.randint(1, 16))
            data[at : at + len(chunk)] = chunk
        elif kind == "insert":
            data[at:at] = rng.randbytes(rng.randint(1, 64))
        elif kind == "delete" and data:
            del data[at : at + rng.randint(1, 64)]
        elif kind == "truncate":
            del data[rng.randrange(len(data) + 1) if data else 0 :]
        elif kind == "length" and len(data) > 8:
            value = rng.choice(
                (0xFFFFFFFF, 0xFFFFFFFE, 0x7FFFFFFF, len(data) * 2, rng.randrange(1 << 32))
            )
            data[at : at + 4] = struct.pack("<I", value)
        elif kind == "uid-path":
            uid = sop_instance_uid.encode()
            where = data.find(uid)
            if where >= 0:
                trick = rng.choice(
                    (
                        b"../../../../etc/passwd",
                        b"..",
                        b"/tmp/x",
                        b"1.2.3/../..",
                        b"1.2.\x00.3",
                        b"C:\\x",
                    )
                )
                data[where : where + len(uid)] = trick.ljust(len(uid), b"\x00")[: len(uid)]
        elif kind == "uid-long":
            uid = seed.sop_instance_uid.encode()
            where = data.find(uid)
            if where >= 0:
                data[where : where + len(uid)] = b"1." + b"9" * (len(uid) - 2)
        elif kind == "request-uid":
            sop_instance_uid = rng.choice(("1.2.3.4", "../../x", "9" * 64, "", "1.2.840.1"))
        elif kind == "request-class":
            sop_class_uid = rng.choice((CT_IMAGE_STORAGE, SECONDARY_CAPTURE))
        elif kind == "syntax":
            transfer_syntax_uid = rng.choice((EXPLICIT_LE, IMPLICIT_LE, JPEG_LOSSLESS_SV1))
        elif kind == "new-uid":
            old = sop_instance_uid.encode()
            where = data.find(old)
            if where >= 0 and old:
                new = _new_uid_like(sop_instance_uid, rng)
                data[where : where + len(old)] = new.encode()
                sop_instance_uid = new
        elif kind == "duplicate" and data:
            data[at:at] = data[at : at + rng.randint(8, 256)]
        elif kind == "zero-run" and data:
            length = rng.randint(4, 512)
            data[at : at + length] = bytes(min(length, len(data) - at))
        applied.append(kind)
    return Mutant(
        seed.name, tuple(applied), sop_class_uid, sop_instance_uid, transfer_syntax_uid, bytes(data)
    )


def mutants(seeds: list[Seed]) -> st.SearchStrategy[Mutant]:
    """Hypothesis strategy: a seed, a random generator seed and 1 to 4 mutations."""
    return st.builds(
        lambda index, seed_value, count: mutate(seeds[index], random.Random(seed_value), count),
        st.integers(0, len(seeds) - 1),
        st.integers(0, 2**63),
        st.integers(1, 4),
    )


def vm_rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process (Linux /proc), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")
