"""provex.backup on small state directories: consistency under writes, refusals, tampering.

The full path with real servers is tests/integration/test_backup.py; here a
writer thread commits to a WAL database during the backup (the copy must be
one committed snapshot), and damaged or foreign backups and non-empty
targets are refused with a message that says what to do.
"""

from __future__ import annotations

import json
import sqlite3
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from provex.backup import MANIFEST_NAME, backup_state, read_manifest, restore_state
from provex.errors import FailedPrecondition, InvalidArgument, ProvexError, VerificationError


def make_state(root: Path) -> Path:
    """A node-shaped state directory: settings, a key, a WAL database, a run/ folder."""
    state = root / "state"
    (state / "keys").mkdir(parents=True)
    (state / "run").mkdir()
    (state / "node.toml").write_text('peer_listen = "127.0.0.1:7500"\n')
    key = state / "keys" / "signing.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nnot a real key\n-----END PRIVATE KEY-----\n")
    key.chmod(0o600)
    (state / "run" / "endpoints.json").write_text("{}\n")
    conn = sqlite3.connect(state / "node.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE ledger (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL)")
    conn.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at TEXT)"
    )
    conn.execute("INSERT INTO schema_migrations VALUES (1, 'initial', '2026-11-26T00:00:00Z')")
    conn.close()
    return state


def balance(database: Path) -> tuple[int, int]:
    conn = sqlite3.connect(database)
    try:
        query = "SELECT count(*), coalesce(sum(amount), 0) FROM ledger"
        rows, total = conn.execute(query).fetchone()
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()
    return int(rows), int(total)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return make_state(tmp_path)


@pytest.fixture
def writer(state: Path) -> Iterator[threading.Event]:
    """Commits balanced pairs (+n, -n) to the database until the test ends."""
    stop = threading.Event()

    def write() -> None:
        conn = sqlite3.connect(state / "node.db", isolation_level=None, timeout=5)
        n = 0
        while not stop.is_set():
            n += 1
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO ledger (amount) VALUES (?)", (n,))
            conn.execute("INSERT INTO ledger (amount) VALUES (?)", (-n,))
            conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    yield stop
    stop.set()
    thread.join(timeout=10)


@pytest.mark.parametrize("target_name", ["copy", "copy.tar.gz", "copy.tgz"])
def test_backup_while_writing_restores_one_committed_snapshot(
    state: Path, writer: threading.Event, tmp_path: Path, target_name: str
) -> None:
    while balance(state / "node.db")[0] < 200:  # the writer is well under way
        pass
    manifest = backup_state(state, tmp_path / target_name)
    writer.set()
    assert manifest.kind == "node"
    assert [item.path for item in manifest.files] == ["keys/signing.pem", "node.db", "node.toml"]
    assert manifest.entry("node.db").database
    assert manifest.entry("node.db").schema_version == 1
    assert manifest.entry("keys/signing.pem").mode == 0o600

    restored = tmp_path / "restored"
    assert restore_state(tmp_path / target_name, restored) == manifest
    rows, total = balance(restored / "node.db")
    assert rows >= 200
    assert rows % 2 == 0
    assert total == 0  # never half a transaction
    assert not (restored / "run").exists()
    assert (restored / "keys" / "signing.pem").stat().st_mode & 0o777 == 0o600
    assert (restored / "node.toml").read_text() == (state / "node.toml").read_text()
    assert sorted(p.name for p in restored.iterdir()) == ["keys", "node.db", "node.toml"]


def damage_file(backup: Path) -> None:
    with (backup / "node.toml").open("a") as handle:
        handle.write("# changed\n")


def remove_file(backup: Path) -> None:
    (backup / "keys" / "signing.pem").unlink()


def add_file(backup: Path) -> None:
    (backup / "keys" / "extra.pem").write_text("planted\n")


def traversal_manifest(backup: Path) -> None:
    manifest = json.loads((backup / MANIFEST_NAME).read_text())
    manifest["files"][0]["path"] = "../outside.pem"
    (backup / MANIFEST_NAME).write_text(json.dumps(manifest))


def foreign_manifest(backup: Path) -> None:
    manifest = json.loads((backup / MANIFEST_NAME).read_text())
    manifest["format"] = "someone-else/9"
    (backup / MANIFEST_NAME).write_text(json.dumps(manifest))


def no_manifest(backup: Path) -> None:
    (backup / MANIFEST_NAME).unlink()


Tampering = tuple[Callable[[Path], None], type[ProvexError], str]


@pytest.mark.parametrize(
    "case",
    [
        (damage_file, VerificationError, "does not match its manifest"),
        (remove_file, VerificationError, "lacks files its manifest lists: keys/signing.pem"),
        (add_file, VerificationError, "does not list: keys/extra.pem"),
        (traversal_manifest, InvalidArgument, "unsafe path '../outside.pem'"),
        (foreign_manifest, InvalidArgument, "format is 'someone-else/9'"),
        (no_manifest, InvalidArgument, "not a backup"),
    ],
)
@pytest.mark.parametrize("as_archive", [False, True])
def test_restore_refuses_a_changed_backup_and_leaves_the_target_empty(
    state: Path,
    tmp_path: Path,
    case: Tampering,
    as_archive: bool,
) -> None:
    tamper, error, message = case
    backup = tmp_path / "backup"
    backup_state(state, backup)
    tamper(backup)
    source = backup
    if as_archive:
        source = tmp_path / "backup.tar.gz"
        with tarfile.open(source, "w:gz") as archive:
            for path in sorted(backup.rglob("*")):
                if path.is_file():
                    archive.add(path, arcname=path.relative_to(backup).as_posix())
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(error, match=message.replace("(", r"\(").replace(".", r"\.")):
        restore_state(source, target)
    assert list(target.iterdir()) == []
    assert not (tmp_path / "outside.pem").exists()


def test_restore_refuses_a_non_empty_target(state: Path, tmp_path: Path) -> None:
    backup_state(state, tmp_path / "backup.tar.gz")
    with pytest.raises(FailedPrecondition, match="is not empty; restore into an empty"):
        restore_state(tmp_path / "backup.tar.gz", state)


def test_restore_into_an_existing_empty_directory(state: Path, tmp_path: Path) -> None:
    manifest = backup_state(state, tmp_path / "backup.tgz")
    target = tmp_path / "mounted-volume"
    target.mkdir()
    assert restore_state(tmp_path / "backup.tgz", target) == manifest
    assert read_manifest(tmp_path / "backup.tgz") == manifest
    assert (target / "node.db").exists()


Refusal = tuple[Callable[[Path, Path], object], str, type[ProvexError], str]


@pytest.mark.parametrize(
    "case",
    [
        (lambda s, t: (t / "taken").mkdir(), "taken", FailedPrecondition, "already exists"),
        (lambda s, t: None, "state/inside", InvalidArgument, "inside the state directory"),
        (
            lambda s, t: (s / "node.toml").unlink(),
            "b",
            FailedPrecondition,
            "not a registry or node",
        ),
        (
            lambda s, t: (s / "registry.toml").write_text(""),
            "b",
            FailedPrecondition,
            "not a registry or node",
        ),
        (
            lambda s, t: (s / "keys" / "link.pem").symlink_to(s / "node.toml"),
            "b",
            FailedPrecondition,
            "not a regular file",
        ),
        (
            lambda s, t: (s / "tls").symlink_to(t, target_is_directory=True),
            "b",
            FailedPrecondition,
            "tls is a link",
        ),
    ],
)
def test_backup_refusals(
    state: Path,
    tmp_path: Path,
    case: Refusal,
) -> None:
    prepare, target, error, message = case
    prepare(state, tmp_path)
    with pytest.raises(error, match=message):
        backup_state(state, tmp_path / target)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("state", "taken")]
    assert leftovers == []


def test_backup_of_a_missing_state(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="is not a directory"):
        backup_state(tmp_path / "nowhere", tmp_path / "b")
    assert not (tmp_path / "b").exists()
