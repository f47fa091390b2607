"""The local runtime's content-addressed image store: resolve a tag, pull by digest, unpack once.

    ROOT/oci/              one OCI image layout (skopeo writes it); ref name ``sha256-<hex>``
                           per pulled digest, blobs shared between images (the demo app's
                           versions share the base layer)
    ROOT/bundles/<hex>/    umoci's unpack of that digest: ``rootfs/`` plus the OCI runtime
                           ``config.json`` umoci derives from the image config (runc's input)
    ROOT/.lock             pulls and unpacks of one store happen one at a time

The key is the digest the *registry* serves (what a revision pins). skopeo copies an OCI
manifest as is; a Docker-format manifest or a multi-platform index is converted to this
platform's OCI manifest on the way, so the layout's own manifest digest may then differ: the
ref name, not the layout's digest, is what ties it to the pinned digest.

A bundle is read-only by contract: it is the lower layer under each instance's own writable
layer, and nothing writes into an existing bundle (a second unpack returns at once). An unpack
goes to a temporary directory first and is renamed into place whole, so a crash never leaves
a half-unpacked rootfs under a digest's name.

Errors are cairn's: ``PermanentError`` for a missing image or tag, refused credentials or a
digest mismatch; ``TemporaryError`` for an unreachable or failing registry; each with a hint.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cairn.errors import ConfigError, PermanentError, TemporaryError
from cairn.images import distribution, skopeo
from cairn.images.credentials import Credentials
from cairn.images.layout import REF_NAME
from cairn.images.reference import Reference, is_digest

UMOCI = "umoci"
UNPACK_TIMEOUT_S = 600.0


def resolve(ref: str | Reference, credentials: Credentials | None = None) -> str:
    """The manifest digest ``ref``'s tag points at now (a digest in ``ref`` is returned as is)."""
    reference = ref if isinstance(ref, Reference) else Reference.parse(ref)
    return distribution.manifest_digest(reference, credentials)


class ImageStore:
    def __init__(self, root: Path, *, skopeo_bin: str = skopeo.SKOPEO, umoci_bin: str = UMOCI) -> None:
        self.root = root.resolve()
        self.layout = self.root / "oci"
        self.bundles = self.root / "bundles"
        self.skopeo_bin, self.umoci_bin = skopeo_bin, umoci_bin

    def pull(self, ref: str | Reference, credentials: Credentials | None = None) -> str:
        """Fetch the image ``ref`` pins by digest into the store; return that digest.

        A digest already in the store is not fetched again (its bytes were verified when they
        came in). ``ref`` must carry the digest: pulling a bare tag would let a tag moved in
        between fetch other bytes than the revision recorded.
        """
        reference = ref if isinstance(ref, Reference) else Reference.parse(ref)
        if not reference.digest:
            raise ConfigError.single("image", str(reference),
                                     "pull by digest: resolve the tag first (registry/name:tag@sha256:...)")
        digest = reference.digest
        if self.has(digest):
            return digest
        # Read and hash the manifest first: a missing image, refused credentials or a registry
        # that serves other bytes is named precisely here, from the HTTP status, before skopeo.
        media_type, _ = distribution.fetch_manifest(reference, credentials)
        with self._locked():
            if self.has(digest):
                return digest
            self.root.mkdir(parents=True, exist_ok=True)
            source = Reference(reference.registry, reference.name, None, digest)
            skopeo.copy(f"docker://{source}", f"oci:{self.layout}:{_ref_name(digest)}", what=reference,
                        src_ref=source, src_credentials=credentials, skopeo=self.skopeo_bin)
            stored = self._manifest_of(digest)
            if stored is None:
                raise TemporaryError(f"image {reference}: skopeo reported success but the store has no {digest}",
                                     hint="retry the pull")
            if media_type == distribution.OCI_MANIFEST and stored != digest:
                raise PermanentError(f"image {reference}: digest mismatch: stored manifest is {stored}",
                                     hint="the registry served other bytes than the digest names; check the registry")
        return digest

    def has(self, digest: str) -> bool:
        return self._manifest_of(digest) is not None

    def unpack(self, digest: str) -> Path:
        """The read-only rootfs of a pulled digest, unpacked on the first call only."""
        bundle = self.bundle(digest)
        rootfs = bundle / "rootfs"
        if rootfs.is_dir():
            return rootfs
        with self._locked():
            if rootfs.is_dir():
                return rootfs
            if not self.has(digest):
                raise PermanentError(f"image {digest} is not in the store {self.root}",
                                     hint="pull it first (ImageStore.pull(registry/name@digest))")
            self.bundles.mkdir(parents=True, exist_ok=True)
            tmp = self.bundles / f".{digest[7:]}.unpacking"
            shutil.rmtree(tmp, ignore_errors=True)  # a crashed unpack's leftovers (we hold the lock)
            # umoci applies the layers in order with their whiteouts, verifies each blob's
            # digest as it reads it, and never follows a layer's symlinks out of the rootfs.
            argv = [self.umoci_bin, "unpack", "--image", f"{self.layout}:{_ref_name(digest)}", str(tmp)]
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=UNPACK_TIMEOUT_S,
                                      stdin=subprocess.DEVNULL)
            except FileNotFoundError:
                raise PermanentError(f"{self.umoci_bin} is missing", hint="apt-get install umoci") from None
            except subprocess.TimeoutExpired:
                shutil.rmtree(tmp, ignore_errors=True)
                raise TemporaryError(f"unpacking {digest} took over {UNPACK_TIMEOUT_S:.0f}s",
                                     hint="the disk is slow or full; retry") from None
            if done.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                detail = (done.stderr.strip().splitlines() or ["no output"])[-1][:400]
                raise PermanentError(f"image {digest} could not be unpacked: {detail}",
                                     hint="the stored image is damaged: remove it from the store and pull again")
            tmp.rename(bundle)
        return rootfs

    def bundle(self, digest: str) -> Path:
        if not is_digest(digest):
            raise ConfigError.single("digest", digest, "a digest is sha256:<64 lowercase hex>")
        return self.bundles / digest[7:]

    def digests(self) -> list[str]:
        """Every digest in the store, sorted."""
        return sorted(d for d in (_digest_of(e) for e in self._index()) if d)

    def _manifest_of(self, digest: str) -> str | None:
        name = _ref_name(digest)
        for entry in self._index():
            if entry.get("annotations", {}).get(REF_NAME) == name:
                blob = self.layout / "blobs" / "sha256" / str(entry["digest"]).removeprefix("sha256:")
                return str(entry["digest"]) if blob.is_file() else None
        return None

    def _index(self) -> list[dict[str, Any]]:
        try:
            doc = json.loads((self.layout / "index.json").read_text())
        except FileNotFoundError:
            return []
        return list(doc.get("manifests", []))

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _ref_name(digest: str) -> str:
    if not is_digest(digest):
        raise ConfigError.single("digest", digest, "a digest is sha256:<64 lowercase hex>")
    return "sha256-" + digest[7:]  # no ':', so skopeo's and umoci's PATH:REF read it one way


def _digest_of(entry: dict[str, Any]) -> str | None:
    annotations = entry.get("annotations")
    name = annotations.get(REF_NAME, "") if isinstance(annotations, dict) else ""
    return "sha256:" + name[7:] if isinstance(name, str) and name.startswith("sha256-") else None
