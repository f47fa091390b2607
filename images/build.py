"""The project's own images, built reproducibly and pushed to a registry.

    cairn/python:3.11           one layer: Debian's python3.11 + stdlib + libraries + busybox (rootfs.py)
                                and an empty /acs/code (the deploy root code packages unpack into);
                                ``python3 app.py`` in /acs/code, so a code package's app.py runs as is
    cairn/demo-app:<version>    that layer + one with /acs/code/app.py alone; ``python3 /acs/code/app.py``,
                                the version in APP_VERSION (no VERSION file: a code package's wins)

Every image lands in one OCI image layout (ref names are the image names above), so the demo
app's versions share the base layer's blob. Equal inputs give equal manifest digests (layout.py
says how); skopeo pushes with ``--preserve-digests``, so the digest in the registry is the one
built. Because of that a layout is reused while its inputs are unchanged: ``build`` records the
inputs' fingerprint beside the layout (``built.json``) and rebuilds only when it differs.

    python -m cairn.images.build [--out DIR] [--demo-version v1 ...] [--push 127.0.0.1:5000]
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cairn.errors import CairnError, ConfigError, PermanentError
from cairn.images import rootfs, skopeo
from cairn.images.credentials import Credentials
from cairn.images.layout import REF_NAME, Layout
from cairn.images.reference import Reference

REPO = Path(__file__).resolve().parents[1]
DEMO_APP = REPO / "examples" / "demo-app" / "app.py"
PYTHON_IMAGE = "cairn/python:3.11"
DEMO_REPOSITORY = "cairn/demo-app"
DEMO_VERSIONS = ("v1", "v2")  # the versions examples/demo.py ships
TEST_VERSIONS = tuple(f"v{n}" for n in range(1, 10))  # what the tests ship (and the default)
DEFAULT_OUT = Path("/var/cache/cairn/images/layout")
DEPLOY_ROOT = "/acs/code"
PATH_ENV = "PATH=/usr/local/bin:/usr/bin:/bin"
# Python 3.11 coerces the C locale to UTF-8 itself (PEP 538): no LANG needed.
BASE_ENV = [PATH_ENV, "PYTHONUNBUFFERED=1"]
# What a build reads besides the host's packages: a change to any of them is another image.
_SOURCES = ("build.py", "layout.py", "rootfs.py")
STAMP = "built.json"
_VERSION_FIX = "a version is a tag: 1-128 of [A-Za-z0-9_.-], not starting with . or -"


@dataclass(frozen=True)
class Built:
    layout: Path
    manifests: dict[str, str]  # image name (ref name in the layout) -> manifest digest
    seconds: float


def build(out: Path = DEFAULT_OUT, demo_versions: Sequence[str] = TEST_VERSIONS,
          demo_app: Path = DEMO_APP) -> Built:
    """The base and one demo-app image per version in the OCI layout at ``out``: reused as it is
    when a build of the same inputs made them, built (and recorded) otherwise."""
    for version in demo_versions:
        try:
            Reference.parse(f"localhost/{DEMO_REPOSITORY}:{version}")
        except ConfigError:
            raise ConfigError.single("demo_version", version, _VERSION_FIX) from None
    if not demo_app.is_file():
        raise ConfigError.single("demo_app", str(demo_app), "give the path of the demo app's app.py")
    with _locked(out):  # test sessions and the demo share the cache: one build at a time
        return _build_or_reuse(out, demo_versions, demo_app)


def _build_or_reuse(out: Path, demo_versions: Sequence[str], demo_app: Path) -> Built:
    begun = time.monotonic()
    wanted = [PYTHON_IMAGE, *(f"{DEMO_REPOSITORY}:{v}" for v in demo_versions)]
    key = fingerprint(demo_app)
    recorded = _recorded(out, key)
    if all(name in recorded for name in wanted):
        return Built(out, {name: recorded[name] for name in wanted}, time.monotonic() - begun)
    manifests = _build(Layout(out), demo_versions, demo_app)
    (out / STAMP).write_text(json.dumps({"key": key, "manifests": {**recorded, **manifests}}, sort_keys=True, indent=1))
    return Built(out, manifests, time.monotonic() - begun)


def fingerprint(demo_app: Path = DEMO_APP) -> str:
    """Every input of a build: this builder's sources, the demo app, the Debian packages."""
    sha = hashlib.sha256()
    for name in _SOURCES:
        sha.update((Path(__file__).parent / name).read_bytes())
    sha.update(demo_app.read_bytes())
    sha.update(json.dumps(rootfs.package_versions(), sort_keys=True).encode())
    return "sha256:" + sha.hexdigest()


def _build(layout: Layout, demo_versions: Sequence[str], demo_app: Path) -> dict[str, str]:
    manifests: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="cairn-image-") as tmp:
        base_root = Path(tmp) / "base"
        rootfs.python_rootfs(base_root)  # with an empty /acs/code, the deploy root
        base = layout.layer_from_dir(base_root, rootfs.mtime_of)
        packages = rootfs.package_versions()
        labels = {"org.opencontainers.image.source": "cairn.images.build",
                  **{f"org.cairn.debian.{name}": version for name, version in sorted(packages.items())}}
        base_config = {"Env": BASE_ENV, "Entrypoint": ["python3"], "Cmd": ["app.py"], "WorkingDir": DEPLOY_ROOT,
                       "Labels": labels}
        manifests[PYTHON_IMAGE] = layout.add_image(PYTHON_IMAGE, [base], base_config).digest
        for version in demo_versions:
            app_root = Path(tmp) / f"app-{version}"
            code = app_root / DEPLOY_ROOT.lstrip("/")
            code.mkdir(parents=True)
            (code / "app.py").write_bytes(demo_app.read_bytes())
            for path in (app_root / "acs", code, code / "app.py"):
                path.chmod(0o755 if path.is_dir() else 0o644)
            app = layout.layer_from_dir(app_root)
            config = {"Env": [PATH_ENV, f"APP_VERSION={version}", "PYTHONUNBUFFERED=1"], "Entrypoint": ["python3"],
                      "Cmd": [f"{DEPLOY_ROOT}/app.py"], "WorkingDir": DEPLOY_ROOT, "ExposedPorts": {"8080/tcp": {}},
                      "Labels": {**labels, "org.opencontainers.image.version": version}}
            name = f"{DEMO_REPOSITORY}:{version}"
            manifests[name] = layout.add_image(name, [base, app], config).digest
    return manifests


def _recorded(out: Path, key: str) -> dict[str, str]:
    """The images a build of ``key``'s inputs left in ``out`` and still there, by name."""
    try:
        stamp = json.loads((out / STAMP).read_text())
        if stamp.get("key") != key:
            return {}
        entries = json.loads((out / "index.json").read_text()).get("manifests", [])
        index = {e.get("annotations", {}).get(REF_NAME): e.get("digest") for e in entries}
    except (OSError, ValueError, AttributeError):
        return {}
    blobs = out / "blobs" / "sha256"
    return {name: digest for name, digest in dict(stamp.get("manifests", {})).items()
            if index.get(name) == digest and (blobs / str(digest).removeprefix("sha256:")).is_file()}


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / ".build.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def push(layout: Path, image: str, registry: str, *, as_name: str | None = None,
         credentials: Credentials | None = None) -> str:
    """Push ``image`` (a ref name in the layout) to ``registry`` as ``as_name`` (default: the
    same name); return the pushed manifest digest, which equals the built one."""
    dest = Reference.parse(f"{registry}/{as_name or image}", field="push")
    with tempfile.TemporaryDirectory(prefix="cairn-push-") as tmp:
        digest_file = Path(tmp) / "digest"
        # --preserve-digests: skopeo must not recompress or convert, so the registry serves
        # the very manifest digest the build produced (it refuses instead of changing it).
        skopeo.copy(f"oci:{layout}:{image}", f"docker://{dest}", what=dest, dest_ref=dest,
                    dest_credentials=credentials,
                    extra=["--preserve-digests", "--digestfile", str(digest_file)])
        return digest_file.read_text().strip()


def build_and_push(registry: str, demo_versions: Sequence[str] = TEST_VERSIONS,
                   out: Path = DEFAULT_OUT) -> dict[str, str]:
    """What the tests' and the demo's start-up call: every image built and in ``registry``.
    Returns ``{"127.0.0.1:5000/cairn/python:3.11": "sha256:...", ...}``."""
    # One lock over build and push: a session with other inputs (another checkout's builder)
    # must not re-point the layout's names while this one pushes them.
    with _locked(out):
        built = _build_or_reuse(out, demo_versions, DEMO_APP)
        pushed = {f"{registry}/{name}": push(built.layout, name, registry) for name in built.manifests}
    for name, digest in built.manifests.items():
        if pushed[f"{registry}/{name}"] != digest:
            raise PermanentError(f"pushed {registry}/{name} as {pushed[f'{registry}/{name}']}, built as {digest}",
                                 hint="the registry or skopeo changed the manifest; check skopeo's --preserve-digests")
    return pushed


def seed(registry: str) -> bool:
    """The project's images (the Python base and the demo app's versions) in the platform's
    registry, as a distribution ships its base images: ``cairn up`` calls this, so the first
    ``image: cairn/python:3.11`` a user writes resolves. Pushes only when the base is missing;
    True when it pushed."""
    from cairn.errors import PermanentError
    from cairn.images.store import resolve

    try:
        resolve(f"{registry}/{PYTHON_IMAGE}")
        return False
    except PermanentError:
        build_and_push(registry, DEMO_VERSIONS)
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cairn.images.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"OCI layout directory (default {DEFAULT_OUT})")
    parser.add_argument("--demo-version", action="append", dest="versions",
                        help=f"a demo-app version to build (repeatable; default {' '.join(TEST_VERSIONS)})")
    parser.add_argument("--push", metavar="REGISTRY", help="push every image to REGISTRY (e.g. 127.0.0.1:5000)")
    args = parser.parse_args(argv)
    try:
        built = build(args.out, args.versions or TEST_VERSIONS)
        print(f"built {len(built.manifests)} images into {built.layout} in {built.seconds:.1f}s", file=sys.stderr)
        for name, digest in built.manifests.items():
            if args.push:
                pushed = push(built.layout, name, args.push)
                print(f"{args.push}/{name}@{pushed}")
            else:
                print(f"{name}@{digest}")
    except CairnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
