"""Backup and restore of one municipality server: its database and its keys, encrypted.

A backup holds what a server cannot be rebuilt without: the database (SQLite's online
backup API, or ``pg_dump`` of a PostgreSQL database) and the root CA, the TLS key and
certificate and the command key. With them a new machine takes back every enrolled unit
without anyone touching one: the units pin the root CA and trust the command key.

The file is a tar archive sealed with AES-256-GCM under a key derived from a passphrase
by scrypt (both from ``cryptography``). Its header, authenticated with the archive,
carries the KDF's parameters and a check value of the key, so a wrong passphrase is told
apart from a damaged file. Restore writes nothing until the whole backup has been read,
decrypted and checked, and refuses a data directory or database that is not empty.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from kiosk.server import migrate
from kiosk.server.ca import write_private
from kiosk.server.store import Store, database_url

MAGIC = b"KIOSK-SERVER-BACKUP\n"
FORMAT = 1
#: scrypt at OWASP's recommended cost: 128 MiB and about a second per try, for the key of a whole municipality.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1
MIN_PASSPHRASE = 12
KEY_FILES = ("ca.key", "ca.crt", "server.key", "server.crt", "command.key")
SQLITE_NAME, PGDUMP_NAME, MANIFEST_NAME = "database.sqlite", "database.pgdump", "manifest.json"


class BackupError(Exception):
    """A backup that cannot be made or restored; the message says why and what to do."""


@dataclass(frozen=True)
class Manifest:
    format: int
    created_at: float
    dialect: str  # sqlite or postgresql
    schema: str | None  # the Alembic revision of the database inside
    ca_sha256: str


def _derive(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)


def _key_check(key: bytes) -> str:
    return hmac.new(key, b"kiosk-server backup key check", hashlib.sha256).hexdigest()[:16]


def seal(archive: bytes, passphrase: bytes) -> bytes:
    if len(passphrase) < MIN_PASSPHRASE:
        raise BackupError(f"the passphrase must be at least {MIN_PASSPHRASE} characters")
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    key = _derive(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    header = json.dumps({"format": FORMAT, "kdf": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
                         "salt": salt.hex(), "nonce": nonce.hex(), "check": _key_check(key)}).encode()
    return MAGIC + len(header).to_bytes(4, "big") + header + AESGCM(key).encrypt(nonce, archive, header)


def unseal(sealed: bytes, passphrase: bytes) -> bytes:
    """The archive inside; BackupError naming a wrong passphrase or a damaged file."""
    damaged = BackupError("the backup is damaged (it fails its integrity check); use another copy")
    if not sealed.startswith(MAGIC):
        raise BackupError("this is not a kiosk-server backup (or its beginning is damaged)")
    rest = sealed[len(MAGIC):]
    size = int.from_bytes(rest[:4], "big")
    header_bytes, body = rest[4:4 + size], rest[4 + size:]
    try:
        header = json.loads(header_bytes)
        if header["format"] != FORMAT or header["kdf"] != "scrypt":
            raise BackupError(f"this backup's format ({header['format']}, {header['kdf']}) is not known here")
        params = int(header["n"]), int(header["r"]), int(header["p"])
        salt, nonce, check = bytes.fromhex(header["salt"]), bytes.fromhex(header["nonce"]), str(header["check"])
    except (ValueError, KeyError, TypeError):
        raise damaged from None
    if params[0] > 2**20 or params[1] > 32 or params[2] > 16:  # a damaged header must not cost the machine
        raise damaged
    key = _derive(passphrase, salt, *params)
    if not hmac.compare_digest(_key_check(key), check):
        raise BackupError("wrong passphrase for this backup")
    try:
        return AESGCM(key).decrypt(nonce, body, header_bytes)
    except InvalidTag:
        raise damaged from None


# --------------------------------------------------------------------------- backup
def _libpq(url: sa.URL) -> tuple[str, dict[str, str]]:
    """A libpq connection URI without the password, and the environment that carries it."""
    env = {"PGPASSWORD": url.password} if url.password else {}
    return url.set(drivername="postgresql", password=None).render_as_string(hide_password=False), env


def _run(args: list[str], env: dict[str, str], what: str) -> bytes:
    try:
        done = subprocess.run(args, capture_output=True, env={**os.environ, **env}, timeout=3600)
    except FileNotFoundError:
        raise BackupError(f"{args[0]} is not installed (Debian package postgresql-client)") from None
    if done.returncode != 0:
        raise BackupError(f"{what} failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def _database_dump(store: Store, workdir: Path) -> tuple[str, bytes]:
    if store.dialect == "sqlite":
        copy = workdir / SQLITE_NAME
        source = sqlite3.connect(str(store.url.database))
        target = sqlite3.connect(str(copy))
        try:  # a consistent snapshot while the server keeps writing (the online backup API)
            source.backup(target)
        finally:
            target.close()
            source.close()
        return SQLITE_NAME, copy.read_bytes()
    uri, env = _libpq(store.url)
    return PGDUMP_NAME, _run(["pg_dump", "--format=custom", "--no-owner", "--no-privileges", f"--dbname={uri}"],
                             env, "pg_dump")


def make_backup(data: Path, store: Store, ca_sha256: str, passphrase: bytes) -> bytes:
    """The sealed backup of the server in ``data`` with its database ``store``."""
    if len(passphrase) < MIN_PASSPHRASE:  # before the work, not after
        raise BackupError(f"the passphrase must be at least {MIN_PASSPHRASE} characters")
    archive = io.BytesIO()
    with tempfile.TemporaryDirectory() as workdir, tarfile.open(fileobj=archive, mode="w") as tar:
        name, dump = _database_dump(store, Path(workdir))
        manifest = Manifest(FORMAT, time.time(), store.dialect, migrate.current_of(store.engine), ca_sha256)
        members = [(MANIFEST_NAME, json.dumps(manifest.__dict__).encode()), (name, dump)]
        members += [(f, (data / f).read_bytes()) for f in KEY_FILES]
        for member, content in members:
            info = tarfile.TarInfo(member)
            info.size, info.mode = len(content), 0o600
            tar.addfile(info, io.BytesIO(content))
    return seal(archive.getvalue(), passphrase)


# -------------------------------------------------------------------------- restore
def _members(archive: bytes) -> dict[str, bytes]:
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r") as tar:
            found = {}
            for info in tar.getmembers():
                extracted = tar.extractfile(info) if info.isfile() else None
                if extracted is not None:
                    found[info.name] = extracted.read()
    except tarfile.TarError as exc:
        raise BackupError(f"the backup's archive is damaged: {exc}") from None
    missing = [n for n in (MANIFEST_NAME, *KEY_FILES) if n not in found]
    if missing or (SQLITE_NAME not in found) == (PGDUMP_NAME not in found):
        raise BackupError(f"the backup is incomplete (missing {', '.join(missing) or 'its database'})")
    return found


def _database_is_empty(url: sa.URL) -> bool:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return not sa.inspect(conn).get_table_names()
    except sa.exc.OperationalError as exc:
        raise BackupError(f"cannot reach the database to restore into: {str(exc.orig).strip()}") from None
    finally:
        engine.dispose()


@contextlib.contextmanager
def _staged(data: Path) -> Iterator[Path]:
    """A directory beside ``data`` that becomes ``data`` only if everything in it succeeded."""
    data.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{data.name}-restore-", dir=data.parent))
    try:
        yield stage
        if data.exists():
            data.rmdir()  # empty, as checked before anything was written
        os.replace(stage, data)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def restore(sealed: bytes, passphrase: bytes, data: Path, database: str | None) -> Manifest:
    """Restore into an empty data directory (and an empty PostgreSQL database, if one is named)."""
    if data.exists() and any(data.iterdir()):
        raise BackupError(f"{data} is not empty: restore into a new, empty data directory (nothing was changed)")
    members = _members(unseal(sealed, passphrase))
    manifest = Manifest(**json.loads(members[MANIFEST_NAME]))
    url = database_url(database, data)
    if manifest.dialect != url.get_backend_name():
        wanted = "no --database (SQLite)" if manifest.dialect == "sqlite" else "--database postgresql://…"
        raise BackupError(f"this backup holds a {manifest.dialect} database: restore it with {wanted}")
    if manifest.dialect == "postgresql" and not _database_is_empty(url):
        raise BackupError(f"the database {url.render_as_string(hide_password=True)} is not empty: "
                          "restore into a new, empty database (nothing was changed)")
    with _staged(data) as stage:
        os.chmod(stage, 0o700)
        for name in KEY_FILES:
            write_private(stage / name, members[name])
        if manifest.dialect == "sqlite":
            write_private(stage / "kiosk.db", members[SQLITE_NAME])
        else:
            dump = stage / PGDUMP_NAME
            write_private(dump, members[PGDUMP_NAME])
            uri, env = _libpq(url)
            _run(["pg_restore", "--no-owner", "--no-privileges", "--single-transaction", "--exit-on-error",
                  f"--dbname={uri}", str(dump)], env, "pg_restore")
            dump.unlink()
    store = Store.in_directory(data, database=database)  # migrated, if the backup was of an older schema
    try:
        store.forget_online()  # "online" as of the backup says nothing of now
    finally:
        store.close()
    return manifest
