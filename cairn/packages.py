"""Code packages: reproducible, content-addressed archives of an app's code.

A package is a gzip'd tar with sorted entries, fixed mtimes and no owner data, so equal trees
give equal bytes and equal SHA-256 digests. The store keeps ``<digest>.tar.gz`` plus a small
JSON record per version; unpacking refuses absolute paths, ``..`` and links that leave the
target, and re-checks the digest, so a tampered archive is never shipped.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cairn.errors import ConfigError, NotFound, PermanentError
from cairn.paths import cairn_home

DIGEST_PREFIX = re.compile(r"^[0-9a-f]{12,64}$")
FIXED_MTIME = 0


@dataclass(frozen=True)
class PackageRecord:
    app: str
    version: str
    digest: str
    size: int
    created_at: float
    source: dict[str, str]
    """Where it came from: {"dir": ...} or {"repo", "ref", "commit"} for builds."""


def store_dir() -> Path:
    return cairn_home() / "packages"


def pack_bytes(src: Path) -> bytes:
    """The archive of directory ``src`` as bytes; identical trees give identical bytes."""
    src = Path(src)
    if not src.is_dir():
        raise ConfigError.single("source", str(src), "must be an existing directory")
    buf = io.BytesIO()
    # gzip's own header carries an mtime and a file name: fix both.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=FIXED_MTIME) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(src.rglob("*"), key=lambda p: p.relative_to(src).as_posix()):
                rel = path.relative_to(src).as_posix()
                if "__pycache__" in rel.split("/"):
                    continue
                info = tar.gettarinfo(str(path), arcname=rel)
                info.mtime, info.uid, info.gid, info.uname, info.gname = FIXED_MTIME, 0, 0, "", ""
                info.pax_headers = {}
                if info.isreg():
                    info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
                    with path.open("rb") as fh:
                        tar.addfile(info, fh)
                elif info.isdir():
                    info.mode = 0o755
                    tar.addfile(info)
                elif info.issym():
                    tar.addfile(info)
    return buf.getvalue()


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def add(app: str, version: str, data: bytes, source: dict[str, str]) -> PackageRecord:
    """Store ``data`` as ``app``'s ``version``; storing the same bytes again is a no-op."""
    digest = digest_of(data)
    verify_archive(data)
    existing = record_path(app, version)
    old = json.loads(existing.read_text()) if existing.exists() else None
    # Refuse before writing anything, so a refused add leaves no blob behind.
    if old is not None and old["digest"] != digest:
        raise ConfigError.single("version", version, f"{app} already has a package {version} with another digest; pick a new version")
    blob = blob_path(digest)
    # A stored blob that no longer matches its name was altered: equal bytes replace it.
    if not blob.exists() or digest_of(blob.read_bytes()) != digest:
        _atomic_write(blob, data)
    if old is not None:
        return PackageRecord(**old)
    record = PackageRecord(app, version, digest, len(data), time.time(), source)
    _atomic_write(existing, json.dumps(asdict(record), indent=2).encode())
    return record


def build_version(ref: str, commit: str) -> str:
    """The version name of a build: ``<ref-sanitized>-<commit[:12]>``, a valid release version.

    >>> build_version("feature/login", "0123456789abcdef")
    'feature-login-0123456789ab'
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", ref).strip("-._")[:50] or "ref"
    return f"{safe}-{commit[:12]}"


def record_path(app: str, version: str) -> Path:
    return store_dir() / "records" / app / f"{version}.json"


def resolve(app: str, version: str) -> PackageRecord:
    """The package ``version`` (a version name or a digest) of ``app``."""
    path = record_path(app, version)
    if path.exists():
        return PackageRecord(**json.loads(path.read_text()))
    # A release version holds at most 63 characters, so a digest is also found by a prefix of 12 or more.
    if DIGEST_PREFIX.match(version):
        found = {r.digest: r for r in list_packages(app) if r.digest.startswith(version)}
        if len(found) == 1:
            return next(iter(found.values()))
        if len(found) > 1:
            raise ConfigError.single("version", version, "more than one package of this app starts with this digest; give more of it")
    raise NotFound(f"no code package {version!r} for app {app!r}", hint=f"cairn package add {app} {version} DIR, or cairn build {app}")


def list_packages(app: str) -> list[PackageRecord]:
    folder = store_dir() / "records" / app
    records = [PackageRecord(**json.loads(p.read_text())) for p in folder.glob("*.json")] if folder.is_dir() else []
    return sorted(records, key=lambda r: r.created_at)


def blob_path(digest: str) -> Path:
    return store_dir() / f"{digest}.tar.gz"


def read_verified(digest: str) -> bytes:
    path = blob_path(digest)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PermanentError(f"code package {digest[:12]} is not in the package store", hint="build or add it again") from None
    if digest_of(data) != digest:
        raise PermanentError(f"code package {digest[:12]} does not match its digest", hint="the stored archive was altered; build it again")
    return data


def verify_archive(data: bytes) -> None:
    """Refuse an archive with absolute paths, ``..`` entries, device files or links leaving it."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            name = member.name
            if name.startswith("/") or ".." in name.split("/"):
                raise ConfigError.single("package entry", name, "archives may hold only relative paths without '..'")
            if member.isdev() or member.islnk():
                raise ConfigError.single("package entry", name, "device files and hard links are not allowed in a package")
            if member.issym() and (member.linkname.startswith("/") or ".." in member.linkname.split("/")):
                raise ConfigError.single("package entry", name, "symlinks must stay inside the package")


def unpack(digest: str, dest: Path) -> None:
    """Unpack a verified package into ``dest`` (created; must be empty or missing)."""
    data = read_verified(digest)
    verify_archive(data)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(dest, filter="data")


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
        tmp.write(data)
    os.replace(tmp.name, path)
