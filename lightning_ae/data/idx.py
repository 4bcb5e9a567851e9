"""Read IDX files (the MNIST format), verify them byte for byte and cache the verified arrays.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the values in C order.
The SHA-256 is taken over the decompressed bytes, so a gzip or a raw copy of the
same data verifies alike.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lightning_ae.files import atomic_write

log = logging.getLogger(__name__)

# IDX type codes and the numpy dtypes they stand for (values are big-endian).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class DataFileError(RuntimeError):
    """A data file is unreadable, truncated, malformed or fails its checksum."""


@dataclass(frozen=True)
class IdxFile:
    """One file of a dataset: its name without `.gz`, pinned SHA-256 and expected shape."""

    name: str
    sha256: str
    shape: tuple[int, ...]


def read_file_bytes(path: Path) -> bytes:
    """The decompressed content of `path` (gzip recognised by its magic bytes)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(2)
        if head == b"\x1f\x8b":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataFileError(
            f"{path}: the gzip stream is truncated or corrupted ({err}). Replace the file with an intact copy."
        ) from err
    except OSError as err:
        raise DataFileError(f"{path}: cannot be read ({err}).") from err


def parse_idx(raw: bytes, path: Path, expected_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Decode IDX bytes into an array, checking the header and the length against each other."""
    if len(raw) < 4:
        raise DataFileError(f"{path}: expected an IDX header of at least 4 bytes, found {len(raw)} bytes.")
    zero0, zero1, type_code, ndim = raw[:4]
    if zero0 != 0 or zero1 != 0 or type_code not in IDX_DTYPES or ndim == 0:
        raise DataFileError(
            f"{path}: expected an IDX magic number 00 00 <type in "
            f"{sorted(hex(code) for code in IDX_DTYPES)}> <ndim >= 1>, found {raw[:4].hex(' ')}."
        )
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataFileError(
            f"{path}: expected a {header_len}-byte header for {ndim} dimensions, found {len(raw)} bytes."
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if expected_shape is not None and shape != tuple(expected_shape):
        raise DataFileError(f"{path}: expected an IDX array of shape {tuple(expected_shape)}, the header says {shape}.")
    dtype = IDX_DTYPES[type_code]
    expected_len = header_len + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected_len:
        what = "truncated" if len(raw) < expected_len else "longer than its header says"
        raise DataFileError(
            f"{path}: file is {what}: expected {expected_len} bytes for shape {shape}, found {len(raw)} bytes."
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)  # native order, writable


def read_idx(path: Path, expected: IdxFile) -> np.ndarray:
    """Read and verify one IDX file: header, length, then SHA-256 of the decompressed bytes."""
    raw = read_file_bytes(path)
    array = parse_idx(raw, path, expected.shape)
    found = hashlib.sha256(raw).hexdigest()
    if found != expected.sha256:
        raise DataFileError(
            f"{path}: SHA-256 of the decompressed content does not match: expected {expected.sha256}, "
            f"found {found}. The file is not the published dataset (tampered or damaged); "
            "replace it with an intact copy."
        )
    return array


def default_cache_dir() -> Path:
    """Where verified arrays are cached: $LIGHTNING_AE_CACHE_DIR, else the XDG cache folder."""
    if env := os.environ.get("LIGHTNING_AE_CACHE_DIR"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lightning_ae"


def _cache_path(source: Path, expected: IdxFile, cache_dir: Path) -> Path:
    # The key covers the pinned hash and the source file's identity: a source that
    # changes on disk (replaced, tampered) gets a new key and is verified again.
    stat = source.stat()
    identity = f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{expected.sha256}"
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return cache_dir / f"{expected.name}-{key}.npy"


def idx_sha256(array: np.ndarray) -> str:
    """The SHA-256 of the IDX file that holds `array`: what `read_idx` checked against the pinned hash.

    Rebuilding the header costs nothing, and hashing the MNIST training images about 0.03 s, so a
    cache entry is verified against the published hash itself, with no digest of its own to trust.
    """
    code = next((code for code, dtype in IDX_DTYPES.items() if dtype.newbyteorder("=") == array.dtype), None)
    if code is None:
        return f"no IDX type holds {array.dtype}"
    stored = np.ascontiguousarray(array, dtype=IDX_DTYPES[code])  # big-endian, as in the file
    digest = hashlib.sha256(bytes([0, 0, code, array.ndim]))
    digest.update(b"".join(int(size).to_bytes(4, "big") for size in array.shape))
    digest.update(memoryview(stored).cast("B"))
    return digest.hexdigest()


def _write_atomically(array: np.ndarray, target: Path) -> None:
    with atomic_write(target) as handle:
        np.save(handle, array, allow_pickle=False)


def load_verified(source: Path, expected: IdxFile, cache_dir: Path | None) -> np.ndarray:
    """The verified array of `source`, from the cache when a valid entry exists.

    The first load verifies the file and writes the array to the cache through a
    temporary file and a rename, so a crash never leaves a partial cache entry. Every cached load
    is checked against the pinned SHA-256 (`idx_sha256`); an entry that cannot be read, has the
    wrong shape or fails the check (damaged or edited) is discarded and rebuilt from the source.
    """
    if cache_dir is None:
        return read_idx(source, expected)
    cached = _cache_path(source, expected, cache_dir)
    if cached.exists():
        try:
            array = np.load(cached, allow_pickle=False)
            if array.shape != expected.shape:
                reason = f"shape {array.shape}, expected {expected.shape}"
            elif idx_sha256(array) != expected.sha256:
                reason = "its content does not match the pinned SHA-256"
            else:
                return array
        except (ValueError, OSError, EOFError) as err:
            reason = str(err)
        log.warning("Discarding unreadable cache entry %s (%s); rebuilding it from %s.", cached, reason, source)
        cached.unlink(missing_ok=True)
    array = read_idx(source, expected)
    try:
        _write_atomically(array, cached)
    except OSError as err:  # a read-only cache costs speed, never correctness
        log.warning(
            "Cannot write the data cache %s (%s); set LIGHTNING_AE_CACHE_DIR to a writable folder.", cached, err
        )
    return array
