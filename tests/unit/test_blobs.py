"""Tests of node.blobs: content-addressed imports, digest refusals, partial downloads."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from node.blobs import PIECE_BYTES, BlobStore, DigestMismatch, hash_file, write_durably
from provex.errors import FailedPrecondition, InvalidArgument, NotFound

CONTRACT = "C0123456789abcdef0123456789abcdef"


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore.of_state(tmp_path / "state")


def data_file(tmp_path: Path, data: bytes, name: str = "data.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("size", [0, 1, PIECE_BYTES - 1, PIECE_BYTES, 2 * PIECE_BYTES + 17])
def test_an_import_is_named_by_its_sha256_and_holds_the_same_bytes(
    store: BlobStore, tmp_path: Path, size: int
) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    imported = store.import_file(data_file(tmp_path, data))
    assert imported.digest == hashlib.sha256(data).digest()
    assert imported.size == size
    assert store.path(imported.digest) == store.root / hashlib.sha256(data).hexdigest()
    assert store.path(imported.digest).read_bytes() == data
    assert store.size(imported.digest) == size
    assert hash_file(store.path(imported.digest)) == (imported.digest, size)
    assert list(store.scratch_dir.iterdir()) == []


def test_an_import_with_the_wrong_digest_is_refused_and_leaves_nothing(
    store: BlobStore, tmp_path: Path
) -> None:
    wrong = hashlib.sha256(b"other data").digest()
    with pytest.raises(DigestMismatch, match=wrong.hex()) as refused:
        store.import_file(data_file(tmp_path, b"the data"), expected=wrong)
    assert refused.value.actual == hashlib.sha256(b"the data").digest()
    assert isinstance(refused.value, FailedPrecondition)
    assert store.size(wrong) is None
    assert store.size(refused.value.actual) is None
    assert list(store.scratch_dir.iterdir()) == []


def test_a_damaged_blob_is_replaced_by_a_fresh_import(store: BlobStore, tmp_path: Path) -> None:
    data = b"x" * 5000
    digest = store.import_file(data_file(tmp_path, data)).digest
    store.path(digest).write_bytes(b"y" * 5000)
    store.import_file(data_file(tmp_path, data), expected=digest)
    assert store.path(digest).read_bytes() == data


@pytest.mark.parametrize(
    ("digest", "error"),
    [(b"", InvalidArgument), (b"\x00" * 31, InvalidArgument), (b"\x00" * 32, NotFound)],
)
def test_opening_a_blob_needs_a_held_sha256(
    store: BlobStore, digest: bytes, error: type[Exception]
) -> None:
    with pytest.raises(error):
        store.open(digest).close()


@pytest.mark.parametrize(
    ("on_disk", "recorded", "resumed_at"),
    [
        (None, 0, 0),  # nothing yet: an empty partial file is created
        (100, 100, 100),  # all that is on disk was recorded
        (100, 60, 60),  # written but not recorded before a crash: cut off
        (50, 100, 50),  # shorter than recorded: go on from its own end
    ],
)
def test_a_partial_download_resumes_from_bytes_recorded_as_durable(
    store: BlobStore, on_disk: int | None, recorded: int, resumed_at: int
) -> None:
    path = store.partial_path(CONTRACT)
    if on_disk is not None:
        path.parent.mkdir(parents=True)
        path.write_bytes(b"a" * on_disk)
    assert store.resume_partial(CONTRACT, recorded) == resumed_at
    assert store.partial_size(CONTRACT) == resumed_at
    with store.open_partial(CONTRACT, resumed_at) as handle:
        write_durably(handle, b"b")
    assert path.read_bytes() == b"a" * resumed_at + b"b"


def test_appending_at_the_wrong_offset_is_refused(store: BlobStore) -> None:
    store.resume_partial(CONTRACT, 0)
    with store.open_partial(CONTRACT, 0) as handle:
        write_durably(handle, b"12345")
    with pytest.raises(FailedPrecondition, match="holds 5 bytes, expected 3"):
        store.open_partial(CONTRACT, 3)


@pytest.mark.parametrize("contract_id", ["", "../escape", ".hidden", "a/b"])
def test_a_partial_download_needs_a_plain_name(store: BlobStore, contract_id: str) -> None:
    with pytest.raises(InvalidArgument):
        store.partial_path(contract_id)


def test_a_verified_partial_download_moves_into_the_store(store: BlobStore) -> None:
    data = b"delivered data" * 1000
    store.resume_partial(CONTRACT, 0)
    with store.open_partial(CONTRACT, 0) as handle:
        write_durably(handle, data)
    digest = hashlib.sha256(data).digest()
    assert store.commit_partial(CONTRACT, digest) == store.path(digest)
    assert store.path(digest).read_bytes() == data
    assert not store.partial_path(CONTRACT).exists()


def test_a_partial_download_with_another_digest_is_discarded(store: BlobStore) -> None:
    store.resume_partial(CONTRACT, 0)
    with store.open_partial(CONTRACT, 0) as handle:
        write_durably(handle, b"tampered")
    expected = hashlib.sha256(b"original").digest()
    with pytest.raises(DigestMismatch, match=f"contract {CONTRACT}"):
        store.commit_partial(CONTRACT, expected)
    assert not store.partial_path(CONTRACT).exists()
    assert store.size(expected) is None
    assert store.size(hashlib.sha256(b"tampered").digest()) is None
