"""The project's own images, built reproducibly and pushed to a registry.

    cairn/python:3.11           one layer: Debian's python3.11 + stdlib + libraries + busybox (rootfs.py)
    cairn/demo-app:<version>    that layer + one with /app/app.py and /app/VERSION;
                                entrypoint ``python3 /app/app.py``, port 8080

Both land in one OCI image layout (ref names are the image names above), so the demo app's
versions share the base layer's blob. Equal inputs give equal manifest digests (layout.py says
how); skopeo pushes with ``--preserve-digests``, so the digest in the registry is the one built.

    python -m cairn.images.build [--out DIR] [--demo-version v1 ...] [--push 127.0.0.1:5000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cairn.errors import CairnError, ConfigError
from cairn.images import rootfs, skopeo
from cairn.images.credentials import Credentials
from cairn.images.layout import Layout
from cairn.images.reference import Reference

REPO = Path(__file__).resolve().parents[1]
DEMO_APP = REPO / "examples" / "demo-app" / "app.py"
PYTHON_IMAGE = "cairn/python:3.11"
DEMO_REPOSITORY = "cairn/demo-app"
DEMO_VERSIONS = ("v1", "v2")  # the versions examples/demo.py ships
DEFAULT_OUT = Path("/var/cache/cairn/images/layout")
_VERSION_FIX = "a version is a tag: 1-128 of [A-Za-z0-9_.-], not starting with . or -"


@dataclass(frozen=True)
class Built:
    layout: Path
    manifests: dict[str, str]  # image name (ref name in the layout) -> manifest digest
    seconds: float


def build(out: Path = DEFAULT_OUT, demo_versions: Sequence[str] = DEMO_VERSIONS,
          demo_app: Path = DEMO_APP) -> Built:
    """Build the base and one demo-app image per version into the OCI layout at ``out``."""
    for version in demo_versions:
        try:
            Reference.parse(f"localhost/{DEMO_REPOSITORY}:{version}")
        except ConfigError:
            raise ConfigError.single("demo_version", version, _VERSION_FIX) from None
    if not demo_app.is_file():
        raise ConfigError.single("demo_app", str(demo_app), "give the path of the demo app's app.py")
    begun = time.monotonic()
    layout = Layout(out)
    manifests: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="cairn-image-") as tmp:
        base_root = Path(tmp) / "base"
        rootfs.python_rootfs(base_root)
        base = layout.layer_from_dir(base_root, rootfs.mtime_of)
        packages = rootfs.package_versions()
        labels = {"org.opencontainers.image.source": "cairn.images.build",
                  **{f"org.cairn.debian.{name}": version for name, version in sorted(packages.items())}}
        base_config = {"Env": rootfs.ENV, "Cmd": ["python3"], "WorkingDir": "/", "Labels": labels}
        manifests[PYTHON_IMAGE] = layout.add_image(PYTHON_IMAGE, [base], base_config).digest
        for version in demo_versions:
            app_root = Path(tmp) / f"app-{version}"
            (app_root / "app").mkdir(parents=True)
            (app_root / "app" / "app.py").write_bytes(demo_app.read_bytes())
            (app_root / "app" / "VERSION").write_text(version + "\n")
            for path in (app_root / "app", app_root / "app" / "app.py", app_root / "app" / "VERSION"):
                path.chmod(0o755 if path.is_dir() else 0o644)
            app = layout.layer_from_dir(app_root)
            config = {"Env": rootfs.ENV, "Entrypoint": ["python3", "/app/app.py"], "WorkingDir": "/app",
                      "ExposedPorts": {"8080/tcp": {}},
                      "Labels": {**labels, "org.opencontainers.image.version": version}}
            name = f"{DEMO_REPOSITORY}:{version}"
            manifests[name] = layout.add_image(name, [base, app], config).digest
    return Built(out, manifests, time.monotonic() - begun)


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


def build_and_push(registry: str, out: Path = DEFAULT_OUT,
                   demo_versions: Sequence[str] = DEMO_VERSIONS) -> dict[str, str]:
    """What the tests' and the demo's start-up call: every image built and in ``registry``.
    Returns ``{"127.0.0.1:5000/cairn/python:3.11": "sha256:...", ...}``."""
    built = build(out, demo_versions)
    return {f"{registry}/{name}": push(built.layout, name, registry) for name in built.manifests}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cairn.images.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"OCI layout directory (default {DEFAULT_OUT})")
    parser.add_argument("--demo-version", action="append", dest="versions",
                        help=f"a demo-app version to build (repeatable; default {' '.join(DEMO_VERSIONS)})")
    parser.add_argument("--push", metavar="REGISTRY", help="push every image to REGISTRY (e.g. 127.0.0.1:5000)")
    args = parser.parse_args(argv)
    try:
        built = build(args.out, args.versions or DEMO_VERSIONS)
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
