"""IDX parsing, checksum verification and the verified-array cache."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import MNIST_DIR

from lightning_ae.data import idx
from lightning_ae.data.datasets import MNIST
from lightning_ae.data.idx import DataFileError, IdxFile, idx_sha256, load_verified, parse_idx, read_idx

LABELS = MNIST.test_labels  # the smallest real file: 10,008 bytes decompressed


def write_gz(path: Path, raw: bytes) -> Path:
    with gzip.open(path, "wb") as handle:
        handle.write(raw)
    return path


@pytest.fixture
def label_bytes() -> bytes:
    return gzip.decompress((MNIST_DIR / f"{LABELS.name}.gz").read_bytes())


def test_reads_real_labels_gz_and_raw_alike(tmp_path, label_bytes):
    from_gz = read_idx(MNIST_DIR / f"{LABELS.name}.gz", LABELS)
    raw_copy = tmp_path / LABELS.name
    raw_copy.write_bytes(label_bytes)
    from_raw = read_idx(raw_copy, LABELS)
    assert from_gz.shape == (10000,) and from_gz.dtype == np.uint8
    np.testing.assert_array_equal(from_gz, from_raw)
    # Independent check of the decoding: the labels are the bytes after the 8-byte header.
    np.testing.assert_array_equal(from_gz, np.frombuffer(label_bytes[8:], dtype=np.uint8))


def test_tampered_copy_fails_checksum_naming_file_expected_and_found(tmp_path, label_bytes):
    tampered = bytearray(label_bytes)
    tampered[100] = (tampered[100] + 1) % 10  # still a valid label: only the checksum can tell
    path = write_gz(tmp_path / f"{LABELS.name}.gz", bytes(tampered))
    with pytest.raises(DataFileError) as err:
        read_idx(path, LABELS)
    message = str(err.value)
    assert str(path) in message and LABELS.sha256 in message
    assert "found" in message and "SHA-256" in message


def test_truncated_data_is_reported_with_expected_and_found_length(tmp_path, label_bytes):
    path = write_gz(tmp_path / "short.gz", label_bytes[:-10])
    with pytest.raises(DataFileError, match=r"truncated: expected 10008 bytes .* found 9998 bytes"):
        read_idx(path, LABELS)


def test_truncated_gzip_stream_is_reported(tmp_path):
    whole = (MNIST_DIR / f"{LABELS.name}.gz").read_bytes()
    path = tmp_path / "cut.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataFileError, match="gzip stream is truncated"):
        read_idx(path, LABELS)


@pytest.mark.parametrize(
    "header, pattern",
    [
        (b"\x01\x00\x08\x01" + bytes(8), "magic number"),  # not starting with two zero bytes
        (b"\x00\x00\x07\x01" + bytes(8), "magic number"),  # unknown type code
        (b"\x00\x00", "header of at least 4 bytes"),
        (b"\x00\x00\x08\x03" + bytes(4), "expected a 16-byte header for 3 dimensions"),
    ],
)
def test_malformed_header(header, pattern):
    with pytest.raises(DataFileError, match=pattern):
        parse_idx(header, Path("x.idx"))


def test_header_shape_must_match_the_expected_shape(label_bytes):
    with pytest.raises(DataFileError, match=r"expected an IDX array of shape \(60000,\), the header says \(10000,\)"):
        parse_idx(label_bytes, Path("labels"), expected_shape=(60000,))


def test_big_endian_types_decode_to_native_values():
    raw = (
        b"\x00\x00\x0c\x01" + (3).to_bytes(4, "big") + b"".join(v.to_bytes(4, "big", signed=True) for v in (1, -2, 300))
    )
    np.testing.assert_array_equal(parse_idx(raw, Path("ints")), [1, -2, 300])


def _copy_labels(tmp_path: Path) -> Path:
    source = tmp_path / "src" / f"{LABELS.name}.gz"
    source.parent.mkdir()
    shutil.copy(MNIST_DIR / source.name, source)
    return source


def test_second_load_comes_from_cache_without_rereading_the_source(tmp_path, monkeypatch):
    source, cache = _copy_labels(tmp_path), tmp_path / "cache"
    first = load_verified(source, LABELS, cache)
    assert len(list(cache.glob("*.npy"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("the source was read again")

    monkeypatch.setattr(idx, "read_idx", fail)
    np.testing.assert_array_equal(load_verified(source, LABELS, cache), first)


def test_no_partial_cache_is_left_when_writing_fails(tmp_path, monkeypatch):
    source, cache = _copy_labels(tmp_path), tmp_path / "cache"

    def crash(handle, array, allow_pickle):
        handle.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt  # an interrupt in the middle of the write

    monkeypatch.setattr(idx.np, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        load_verified(source, LABELS, cache)
    assert list(cache.iterdir()) == []


def test_truncated_cache_entry_is_discarded_and_rebuilt(tmp_path):
    source, cache = _copy_labels(tmp_path), tmp_path / "cache"
    expected = load_verified(source, LABELS, cache)
    (entry,) = cache.glob("*.npy")
    entry.write_bytes(entry.read_bytes()[:200])
    np.testing.assert_array_equal(load_verified(source, LABELS, cache), expected)
    assert len(entry.read_bytes()) > 200


def test_source_tampered_after_caching_is_verified_again(tmp_path, label_bytes):
    source, cache = _copy_labels(tmp_path), tmp_path / "cache"
    load_verified(source, LABELS, cache)
    tampered = bytearray(label_bytes)
    tampered[50] ^= 1
    write_gz(source, bytes(tampered))
    with pytest.raises(DataFileError, match="SHA-256"):
        load_verified(source, LABELS, cache)


def test_unwritable_cache_still_loads(tmp_path):
    source = _copy_labels(tmp_path)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    assert load_verified(source, LABELS, blocker / "cache").shape == LABELS.shape


def test_custom_idx_file_spec_roundtrip(tmp_path):
    raw = b"\x00\x00\x08\x02" + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes(range(6))
    import hashlib

    spec = IdxFile("tiny", hashlib.sha256(raw).hexdigest(), (2, 3))
    path = write_gz(tmp_path / "tiny.gz", raw)
    np.testing.assert_array_equal(read_idx(path, spec), np.arange(6).reshape(2, 3))


def test_an_edited_cache_entry_of_the_right_shape_is_discarded_and_rebuilt(tmp_path, caplog):
    """Overwriting the cached labels with 3s keeps the shape: only checking the content catches it."""
    source, cache = _copy_labels(tmp_path), tmp_path / "cache"
    expected = load_verified(source, LABELS, cache)
    (entry,) = cache.glob("*.npy")
    np.save(entry, np.full_like(expected, 3))
    with caplog.at_level("WARNING"):
        again = load_verified(source, LABELS, cache)
    np.testing.assert_array_equal(again, expected)
    assert "does not match the pinned SHA-256" in caplog.text
    np.testing.assert_array_equal(np.load(entry), expected)  # rebuilt


def test_the_cache_check_is_the_idx_files_own_hash(label_bytes):
    """`idx_sha256` of the parsed array equals the SHA-256 of the file's bytes, header included."""
    import hashlib

    array = parse_idx(label_bytes, Path("labels"))
    assert idx_sha256(array) == hashlib.sha256(label_bytes).hexdigest()
    assert idx_sha256(array.astype(np.int16)) != hashlib.sha256(label_bytes).hexdigest()
