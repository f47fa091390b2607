"""A reproducible OCI image layout writer: equal inputs give equal bytes, so equal digests.

What makes a layer reproducible here:
- entries in one order (each directory's entries sorted by name, depth first);
- owners 0:0 with no user or group names (the host's passwd never leaks into an image);
- mtimes from a rule, never from the build's clock: ``EPOCH`` unless the caller's
  ``mtime_of`` keeps a file's own (rootfs.py keeps the stdlib sources' mtimes, which their
  ``.pyc`` files record: with a reset mtime every container start would recompile them);
- gzip with no file name and mtime 0 in its header, at a fixed level;
- JSON with sorted keys and no spaces.

The layout follows the OCI image-layout spec: ``oci-layout``, ``index.json`` (one entry per
ref name, sorted), ``blobs/sha256/<hex>``. skopeo reads it as ``oci:DIR:REF``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

EPOCH = 0
GZIP_LEVEL = 6  # zlib's default: level 9 costs twice the time for ~2% on a Python rootfs
REF_NAME = "org.opencontainers.image.ref.name"

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

MtimeRule = Callable[[str, os.stat_result], int]


@dataclass(frozen=True)
class Blob:
    media_type: str
    digest: str
    size: int

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


@dataclass(frozen=True)
class Layer:
    blob: Blob
    diff_id: str  # digest of the uncompressed tar, what the image config lists
    uncompressed_size: int


class _Hashing:
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, out: BinaryIO) -> None:
        self.out, self.sha, self.size = out, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()

    def tell(self) -> int:  # tarfile asks where it starts
        return self.size

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest()


class Layout:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        if not (root / "index.json").exists():
            self._write_index([])

    def put(self, data: bytes, media_type: str) -> Blob:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self.blobs / digest[7:]
        if not path.exists():
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            tmp.write_bytes(data)
            tmp.replace(path)
        return Blob(media_type, digest, len(data))

    def put_json(self, doc: dict[str, Any], media_type: str) -> Blob:
        return self.put(canonical_json(doc), media_type)

    def layer_from_dir(self, src: Path, mtime_of: MtimeRule | None = None) -> Layer:
        """Everything under ``src`` as one gzip layer, paths relative to ``src``."""
        tmp = self.blobs / f".layer.{os.getpid()}"
        with open(tmp, "wb") as raw:
            compressed = _Hashing(raw)
            with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0,
                               compresslevel=GZIP_LEVEL) as gz:
                uncompressed = _Hashing(gz)  # type: ignore[arg-type]
                with tarfile.open(fileobj=uncompressed, mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                    for path in _walk(src):
                        _add(tar, src, path, mtime_of)
        blob = Blob(LAYER_GZIP, compressed.digest, compressed.size)
        tmp.replace(self.blobs / blob.digest[7:])
        return Layer(blob, uncompressed.digest, uncompressed.size)

    def add_image(self, ref_name: str, layers: list[Layer], config: dict[str, Any],
                  annotations: dict[str, str] | None = None) -> Blob:
        """Write the image config and manifest, point ``ref_name`` at it; return the manifest."""
        image_config = {
            "architecture": "amd64",
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "cairn.images.build"}
                        for _ in layers],
        }
        config_blob = self.put_json(image_config, CONFIG)
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": config_blob.descriptor(),
            "layers": [layer.blob.descriptor() for layer in layers],
        }
        if annotations:
            manifest["annotations"] = dict(sorted(annotations.items()))
        blob = self.put_json(manifest, MANIFEST)
        entries = [e for e in self.index() if e.get("annotations", {}).get(REF_NAME) != ref_name]
        entries.append(blob.descriptor(annotations={REF_NAME: ref_name}))
        self._write_index(entries)
        return blob

    def index(self) -> list[dict[str, Any]]:
        doc = json.loads((self.root / "index.json").read_text())
        return list(doc.get("manifests", []))

    def _write_index(self, entries: list[dict[str, Any]]) -> None:
        entries = sorted(entries, key=lambda e: e.get("annotations", {}).get(REF_NAME, ""))
        doc = {"schemaVersion": 2, "mediaType": INDEX, "manifests": entries}
        tmp = self.root / f".index.json.{os.getpid()}"
        tmp.write_bytes(canonical_json(doc))
        tmp.replace(self.root / "index.json")


def canonical_json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _walk(src: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()  # os.walk descends in this order
        out.extend(Path(dirpath) / name for name in sorted(dirnames + filenames))
    return out


def _add(tar: tarfile.TarFile, src: Path, path: Path, mtime_of: MtimeRule | None) -> None:
    name = str(path.relative_to(src))
    st = path.lstat()
    info = tar.gettarinfo(str(path), arcname=name)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = mtime_of(name, st) if (mtime_of and info.isfile()) else EPOCH
    if info.isfile():
        with open(path, "rb") as fh:
            tar.addfile(info, fh)
    elif info.isdir() or info.issym() or info.islnk():
        tar.addfile(info)
    else:
        raise ValueError(f"{path}: only files, directories and links go into an image layer")
