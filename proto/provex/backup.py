"""Online backup and restore of a registry or node state directory.

:func:`backup_state` copies a state directory while its server may be
running: every SQLite database (``*.db`` at the top of the directory) through
SQLite's online backup API (:meth:`sqlite3.Connection.backup`, one step, so
the copy is one committed snapshot even while the server writes), then every
other file (settings, identity, keys, certificates, trust roots, admin
identities, a node's ``blobs/``). ``run/`` (the readiness file of a running
server), SQLite's ``-wal``/``-shm``/``-journal`` side files and scratch
``*.tmp`` files are left out. Databases are copied *before* the other files
on purpose: key, certificate, trust-root and blob files are written once
(under a scratch name, then renamed) and never replaced or removed, so every
file the database snapshot refers to is already on disk when the files are
copied; a file that vanishes meanwhile (a partial download just completed)
is skipped.

The result is a directory, or one ``.tar.gz`` / ``.tgz`` file, holding the
copies and ``MANIFEST.json``: the kind of state (registry or node), when it
was taken, each database's schema version, and the size, mode and SHA-256 of
every file. The target is written under a scratch name and renamed into
place at the end, so a failed backup never leaves something that looks
complete.

:func:`restore_state` checks the manifest (format, every file present, no
file it does not list, every SHA-256) and writes the files into a state
directory that must be empty or absent, with their recorded modes (private
keys stay 0600). Nothing is moved into place before everything verified.
The restored directory is then started as usual (``provex-registry serve`` /
``provex-node serve``); a database from an older release is migrated at
start, a newer one is refused by :mod:`provex.storage`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from provex.errors import FailedPrecondition, InvalidArgument, VerificationError
from provex.keyfiles import fsync_directory
from provex.storage import BUSY_TIMEOUT_MS, schema_version
from provex.timestamps import utc_now

__all__ = (
    "EXCLUDED_DIRECTORIES",
    "FORMAT",
    "MANIFEST_NAME",
    "Manifest",
    "ManifestEntry",
    "backup_state",
    "describe",
    "read_manifest",
    "restore_state",
)

FORMAT = "provex-state-backup/1"
MANIFEST_NAME = "MANIFEST.json"
EXCLUDED_DIRECTORIES = frozenset({"run"})
"""Top-level folders never backed up: ``run/`` describes a running process, not state."""

_EXCLUDED_SUFFIXES = ("-wal", "-shm", "-journal", ".tmp")
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
_SQLITE_HEADER = b"SQLite format 3\x00"
_CHUNK = 1 << 20
_KINDS = {"registry.toml": "registry", "node.toml": "node"}
_RESTORE_PREFIX = ".restore-"


@dataclass(frozen=True)
class ManifestEntry:
    """One file of a backup: its path inside the state directory and how to check it."""

    path: str
    size: int
    sha256: str
    mode: int
    # For a SQLite database: the schema version it was at (0 for other files).
    schema_version: int = 0
    database: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "mode": f"{self.mode:04o}",
            "database": self.database,
            "schema_version": self.schema_version,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> ManifestEntry:
        try:
            return cls(
                path=_checked_path(str(document["path"])),
                size=int(document["size"]),
                sha256=str(document["sha256"]),
                mode=int(str(document["mode"]), 8),
                database=bool(document.get("database", False)),
                schema_version=int(document.get("schema_version", 0)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidArgument(
                f"backup manifest: bad file entry {document!r} ({error})"
            ) from None


@dataclass(frozen=True)
class Manifest:
    """What a backup holds: the kind of state, when it was taken, every file with its digest."""

    kind: str
    created_at: str
    files: tuple[ManifestEntry, ...]
    format: str = FORMAT

    def entry(self, path: str) -> ManifestEntry:
        for item in self.files:
            if item.path == path:
                return item
        raise KeyError(path)

    @property
    def total_bytes(self) -> int:
        return sum(item.size for item in self.files)

    def to_json(self) -> str:
        document = {
            "format": self.format,
            "kind": self.kind,
            "created_at": self.created_at,
            "files": [item.to_json() for item in self.files],
        }
        return json.dumps(document, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        try:
            document = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InvalidArgument(f"backup manifest is not JSON: {error}") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            found = document.get("format") if isinstance(document, dict) else None
            raise InvalidArgument(
                f"backup manifest format is {found!r}, this Provex reads {FORMAT!r}"
            )
        files = tuple(ManifestEntry.from_json(item) for item in document.get("files", []))
        paths = [item.path for item in files]
        if len(set(paths)) != len(paths):
            raise InvalidArgument("backup manifest lists a file twice")
        return cls(
            kind=str(document.get("kind", "")),
            created_at=str(document.get("created_at", "")),
            files=files,
        )


# ---------------------------------------------------------------- helpers


def _checked_path(path: str) -> str:
    """A relative POSIX path without ``..``; anything else is refused (no writes outside)."""
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts or str(pure) != path:
        raise InvalidArgument(f"backup names an unsafe path {path!r}")
    if path == MANIFEST_NAME:
        raise InvalidArgument(f"backup lists its own {MANIFEST_NAME} as a state file")
    return path


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def _is_archive(path: Path) -> bool:
    return path.name.endswith(_ARCHIVE_SUFFIXES)


def _state_kind(state_dir: Path) -> str:
    kinds = [kind for name, kind in _KINDS.items() if (state_dir / name).is_file()]
    if len(kinds) != 1:
        raise FailedPrecondition(
            f"{state_dir} is not a registry or node state directory (no single "
            f"{' or '.join(_KINDS)}): check the --state path"
        )
    return kinds[0]


def _state_files(state_dir: Path) -> Iterator[tuple[str, Path]]:
    """Every file to back up, as (relative POSIX path, path), in a stable order."""
    for folder, subfolders, names in os.walk(state_dir):
        here = Path(folder)
        relative_folder = here.relative_to(state_dir)
        if relative_folder == Path("."):
            subfolders[:] = [
                name
                for name in subfolders
                if name not in EXCLUDED_DIRECTORIES and not name.startswith(_RESTORE_PREFIX)
            ]
        for name in subfolders:
            if (here / name).is_symlink():
                raise FailedPrecondition(
                    f"{here / name} is a link; a state directory holds only regular files "
                    "and folders (replace the link by what it points to)"
                )
        subfolders.sort()
        for name in sorted(names):
            path = here / name
            if name.endswith(_EXCLUDED_SUFFIXES):
                continue
            if not path.exists() and not path.is_symlink():
                continue  # Renamed or removed since the listing (a scratch file finishing).
            if path.is_symlink() or not path.is_file():
                raise FailedPrecondition(
                    f"{path} is not a regular file; a state directory holds only regular "
                    "files (replace the link by the file it points to)"
                )
            yield (relative_folder / name).as_posix(), path


def _is_database(relative: str, path: Path) -> bool:
    if "/" in relative or not relative.endswith(".db"):
        return False
    with path.open("rb") as handle:
        return handle.read(len(_SQLITE_HEADER)) == _SQLITE_HEADER


def _copy_database(source: Path, target: Path) -> int:
    """An online, consistent copy of one SQLite database; return its schema version."""
    source_conn = sqlite3.connect(source, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        target_conn = sqlite3.connect(target)
        try:
            # One step (pages=-1): the whole database under one read transaction.
            source_conn.backup(target_conn, pages=-1)
            # The copy stands alone: no -wal file beside it in the backup.
            target_conn.execute("PRAGMA journal_mode=DELETE")
            problems = target_conn.execute("PRAGMA quick_check").fetchall()
            if problems != [("ok",)]:
                raise VerificationError(f"copy of {source} fails SQLite's quick_check: {problems}")
            version = schema_version(target_conn)
        finally:
            target_conn.close()
    finally:
        source_conn.close()
    return version


def _entry(relative: str, path: Path, mode: int, version: int, database: bool) -> ManifestEntry:
    return ManifestEntry(
        path=relative,
        size=path.stat().st_size,
        sha256=_sha256_file(path),
        mode=stat.S_IMODE(mode),
        schema_version=version,
        database=database,
    )


def _stage(state_dir: Path, staging: Path) -> Manifest:
    """Copy the state into ``staging`` (databases first) and write its manifest there."""
    kind = _state_kind(state_dir)
    created_at = utc_now().isoformat().replace("+00:00", "Z")
    databases = [
        (path.name, path)
        for path in sorted(state_dir.iterdir())
        if path.is_file() and not path.is_symlink() and _is_database(path.name, path)
    ]
    entries: list[ManifestEntry] = []
    for relative, path in databases:
        copy = staging / relative
        mode = path.stat().st_mode
        version = _copy_database(path, copy)
        os.chmod(copy, stat.S_IMODE(mode))
        entries.append(_entry(relative, copy, mode, version, database=True))
    # Listed only now, after the snapshots: whatever they refer to is on disk already.
    database_names = {relative for relative, _ in databases}
    others = [(rel, path) for rel, path in _state_files(state_dir) if rel not in database_names]
    for relative, path in others:
        copy = staging / relative
        copy.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(path, copy)
            mode = path.stat().st_mode
        except FileNotFoundError:
            # Gone since the listing: a download finishing or a scratch file renamed. What
            # the database snapshot needs is written once and never removed, so it is there.
            copy.unlink(missing_ok=True)
            continue
        os.chmod(copy, stat.S_IMODE(mode))
        entries.append(_entry(relative, copy, mode, 0, database=False))
    manifest = Manifest(kind, created_at, tuple(sorted(entries, key=lambda item: item.path)))
    (staging / MANIFEST_NAME).write_text(manifest.to_json())
    for item in manifest.files:
        _fsync_file(staging / item.path)
    _fsync_file(staging / MANIFEST_NAME)
    return manifest


def _write_archive(staging: Path, manifest: Manifest, target: Path) -> None:
    """``target`` (.tar.gz): the manifest first, then every file, in manifest order."""
    scratch = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        with tarfile.open(scratch, "w:gz", compresslevel=6) as archive:
            archive.add(staging / MANIFEST_NAME, arcname=MANIFEST_NAME, recursive=False)
            for item in manifest.files:
                archive.add(staging / item.path, arcname=item.path, recursive=False)
        _fsync_file(scratch)
        os.replace(scratch, target)
    finally:
        scratch.unlink(missing_ok=True)
    fsync_directory(target.parent)


# ---------------------------------------------------------------- backup


def backup_state(state_dir: Path, target: Path) -> Manifest:
    """Back up ``state_dir`` (its server may be running) into ``target``; return the manifest.

    ``target`` ending in ``.tar.gz`` or ``.tgz`` becomes one archive file;
    anything else a directory. An existing target is refused, never
    overwritten.
    """
    state_dir, target = Path(state_dir), Path(target)
    if not state_dir.is_dir():
        raise FailedPrecondition(f"{state_dir} is not a directory: check the --state path")
    if target.exists():
        raise FailedPrecondition(f"{target} already exists; back up into a new path")
    resolved_state, resolved_target = state_dir.resolve(), target.resolve()
    if resolved_target.is_relative_to(resolved_state):
        raise InvalidArgument(f"{target} is inside the state directory {state_dir}; choose another")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        manifest = _stage(state_dir, staging)
        if _is_archive(target):
            _write_archive(staging, manifest, target)
        else:
            os.chmod(staging, 0o700)
            os.replace(staging, target)
            fsync_directory(target.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


# ---------------------------------------------------------------- restore


def read_manifest(archive: Path) -> Manifest:
    """The manifest of a backup directory or ``.tar.gz`` file (not yet checked against files)."""
    archive = Path(archive)
    if archive.is_dir():
        try:
            return Manifest.from_json((archive / MANIFEST_NAME).read_bytes())
        except FileNotFoundError:
            raise InvalidArgument(f"{archive} holds no {MANIFEST_NAME}: not a backup") from None
    if not archive.is_file():
        raise InvalidArgument(f"{archive} does not exist: give a backup directory or .tar.gz")
    try:
        with tarfile.open(archive, "r:*") as opened:
            member = opened.extractfile(MANIFEST_NAME)
            if member is None:
                raise InvalidArgument(f"{archive}: {MANIFEST_NAME} is not a regular file")
            return Manifest.from_json(member.read())
    except KeyError:
        raise InvalidArgument(f"{archive} holds no {MANIFEST_NAME}: not a backup") from None
    except tarfile.TarError as error:
        raise InvalidArgument(f"{archive} is not a readable tar.gz backup: {error}") from None


def _copy_verified(source: IO[bytes], target: Path, item: ManifestEntry) -> None:
    """Write ``source`` to ``target`` while hashing it; refuse a size or digest mismatch."""
    digest = hashlib.sha256()
    size = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            handle.write(chunk)
        handle.flush()
        os.fsync(handle.fileno())
    if size != item.size or digest.hexdigest() != item.sha256:
        raise VerificationError(
            f"backup file {item.path} does not match its manifest (size {size}, expected "
            f"{item.size}; SHA-256 {digest.hexdigest()}, expected {item.sha256}): the backup "
            "is damaged, restore another one"
        )
    os.chmod(target, item.mode)


def _extract_directory(archive: Path, manifest: Manifest, staging: Path) -> None:
    present = {
        path.relative_to(archive).as_posix()
        for path in archive.rglob("*")
        if path.is_file() or path.is_symlink()
    }
    _check_listing(archive, manifest, present)
    for item in manifest.files:
        source = archive / item.path
        if source.is_symlink():
            raise InvalidArgument(f"{archive}: {item.path} is a link, not a file")
        with source.open("rb") as handle:
            _copy_verified(handle, staging / item.path, item)


def _extract_tar(archive: Path, manifest: Manifest, staging: Path) -> None:
    with tarfile.open(archive, "r:*") as opened:
        members = opened.getmembers()
        for member in members:
            if not (member.isfile() or member.isdir()):
                raise InvalidArgument(f"{archive}: {member.name} is not a regular file")
        present = {member.name for member in members if member.isfile()}
        _check_listing(archive, manifest, present)
        by_name = {member.name: member for member in members if member.isfile()}
        for item in manifest.files:
            handle = opened.extractfile(by_name[item.path])
            if handle is None:
                raise InvalidArgument(f"{archive}: {item.path} is not a regular file")
            with handle:
                _copy_verified(handle, staging / item.path, item)


def _check_listing(archive: Path, manifest: Manifest, present: set[str]) -> None:
    listed = {item.path for item in manifest.files}
    missing = sorted(listed - present)
    extra = sorted(present - listed - {MANIFEST_NAME})
    if missing:
        raise VerificationError(
            f"{archive} lacks files its manifest lists: {', '.join(missing)}; "
            "the backup is incomplete, restore another one"
        )
    if extra:
        raise VerificationError(
            f"{archive} holds files its manifest does not list: {', '.join(extra)}; "
            "refusing a backup that was changed after it was made"
        )


def _check_empty_target(state_dir: Path) -> None:
    if state_dir.exists() and not state_dir.is_dir():
        raise FailedPrecondition(f"{state_dir} is a file; restore into an empty directory")
    if state_dir.is_dir() and any(state_dir.iterdir()):
        raise FailedPrecondition(
            f"{state_dir} is not empty; restore into an empty or new directory "
            "(move the old state aside first)"
        )


def restore_state(archive: Path, state_dir: Path) -> Manifest:
    """Restore the backup ``archive`` (directory or .tar.gz) into an empty ``state_dir``.

    Every file is checked against the manifest before anything is moved into
    place; on any mismatch ``state_dir`` is left as it was (empty or absent).
    """
    archive, state_dir = Path(archive), Path(state_dir)
    _check_empty_target(state_dir)
    manifest = read_manifest(archive)
    if manifest.kind not in _KINDS.values():
        raise InvalidArgument(f"backup manifest names an unknown kind of state {manifest.kind!r}")
    created = not state_dir.exists()
    if created:
        state_dir.mkdir(mode=0o700, parents=True)
    # An existing empty directory keeps its owner and mode (it may be a volume's mount point).
    # Staged inside the target, so the final renames stay on one file system (a mount point
    # such as a Kubernetes volume cannot itself be replaced).
    staging = state_dir / f"{_RESTORE_PREFIX}{os.getpid()}"
    try:
        staging.mkdir(mode=0o700)
        if archive.is_dir():
            _extract_directory(archive, manifest, staging)
        else:
            _extract_tar(archive, manifest, staging)
        for entry in sorted(staging.iterdir()):
            os.replace(entry, state_dir / entry.name)
        staging.rmdir()
        fsync_directory(state_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                state_dir.rmdir()
        raise
    return manifest


def describe(manifest: Manifest) -> dict[str, Any]:
    """A JSON-ready summary of a manifest (what the CLI prints with ``--json``)."""
    return {
        "format": manifest.format,
        "kind": manifest.kind,
        "created_at": manifest.created_at,
        "files": len(manifest.files),
        "bytes": manifest.total_bytes,
        "databases": {item.path: item.schema_version for item in manifest.files if item.database},
    }


# ---------------------------------------------------------------- the CLIs' commands


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], program: str
) -> None:
    """``backup`` and ``restore`` subcommands (``--state``, ``--json``) for ``program``."""
    backup = commands.add_parser(
        "backup",
        help="back up the state directory (the server may be running)",
        description=f"Copy the {program} state directory into TARGET while its server may run: "
        "each SQLite database through the online backup API (one committed snapshot), then "
        "keys, certificates and settings, with a MANIFEST.json of SHA-256 digests. TARGET "
        "ending in .tar.gz or .tgz becomes one archive, anything else a new directory. The "
        "backup holds private keys: store it like them.",
    )
    backup.add_argument("target", type=Path, help="a new directory, or a .tar.gz/.tgz file")
    restore = commands.add_parser(
        "restore",
        help="restore a backup into an empty state directory",
        description=f"Check every file of ARCHIVE (a {program} backup: directory or .tar.gz) "
        "against its manifest, then restore it into --state, which must be empty or absent. "
        "Nothing is written when any check fails.",
    )
    restore.add_argument("archive", type=Path, help="the backup directory or .tar.gz file")
    for sub in (backup, restore):
        sub.add_argument("--state", type=Path, required=True, help="the state directory")
        sub.add_argument("--json", action="store_true", help="print one JSON object")


def run_command(args: argparse.Namespace, kind: str) -> tuple[dict[str, Any], str]:
    """Run a ``backup``/``restore`` command for a ``kind`` state; its JSON summary and text."""
    if args.command == "backup":
        if Path(args.state).is_dir() and _state_kind(Path(args.state)) != kind:
            raise InvalidArgument(f"{args.state} is not a {kind} state directory")
        manifest = backup_state(args.state, args.target)
        where = args.target
        verb = "backed up"
    else:
        found = read_manifest(args.archive).kind
        if found != kind:
            raise InvalidArgument(
                f"{args.archive} is a backup of a {found} state; restore it with provex-{found}"
            )
        manifest = restore_state(args.archive, args.state)
        where = args.state
        verb = "restored"
    summary = describe(manifest)
    text = (
        f"{verb} {kind} state ({summary['files']} files, {summary['bytes']:,} bytes) "
        f"{'to' if args.command == 'backup' else 'into'} {where}"
    )
    return summary, text
