"""Local images: a directory with ``image.json`` (and optional ``rootfs/``) stands for an image.

Format (``<root>/<repository>/<tag>/image.json``, or ``<root>/<repository>/image.json`` for an
image whose ``tags`` patterns accept many tags, e.g. every version of the demo app)::

    {
      "entrypoint": ["python3"],          # argv prefix; "python3" is the host's interpreter
      "cmd": ["app.py"],                  # default arguments
      "workdir": "/acs/code",             # cwd of the process
      "env": {"APP_VERSION": "${TAG}"},   # ${TAG} is the tag the image was asked for
      "tags": ["*"]                       # fnmatch patterns (wildcard image only)
    }

``rootfs/`` is copied over the instance's root at start (e.g. ``rootfs/acs/code/app.py``).
Search path: ``$CAIRN_IMAGES`` (colon-separated), ``cairn_home()/images``, then the images
shipped in this package.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cairn.errors import PermanentError
from cairn.paths import cairn_home

SHIPPED = Path(__file__).resolve().parent / "images"


def search_path() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("CAIRN_IMAGES", "").split(":") if p]
    return [*extra, cairn_home() / "images", SHIPPED]


def python_bin_dir() -> str:
    """The directory of the host's real Python 3 (not a venv, not a pyenv shim)."""
    real = os.path.realpath(os.path.join(sys.base_prefix, "bin", "python3"))
    return os.path.dirname(real) if os.path.exists(real) else os.path.dirname(shutil.which("python3") or "/usr/bin/python3")


def default_path() -> str:
    return f"{python_bin_dir()}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Image:
    ref: str
    directory: str
    entrypoint: list[str]
    cmd: list[str]
    workdir: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def rootfs(self) -> str | None:
        path = os.path.join(self.directory, "rootfs")
        return path if os.path.isdir(path) else None

    def argv(self, command: list[str] | None) -> list[str]:
        return list(command) if command else [*self.entrypoint, *self.cmd]


def split_ref(ref: str) -> tuple[str, str]:
    repo, _, tag = ref.partition(":")
    return repo, tag or "latest"


def _load(directory: Path, ref: str, tag: str) -> Image:
    data = json.loads((directory / "image.json").read_text())
    env = {k: str(v).replace("${TAG}", tag) for k, v in data.get("env", {}).items()}
    return Image(
        ref=ref,
        directory=str(directory),
        entrypoint=list(data.get("entrypoint", [])),
        cmd=list(data.get("cmd", [])),
        workdir=data.get("workdir", "/"),
        env=env,
    )


def resolve(ref: str) -> Image:
    """The image ``ref`` names, or PermanentError saying where it was looked for."""
    repo, tag = split_ref(ref)
    roots = search_path()
    for root in roots:
        exact = root / repo / tag
        if (exact / "image.json").is_file():
            return _load(exact, ref, tag)
        wildcard = root / repo
        if (wildcard / "image.json").is_file():
            patterns = json.loads((wildcard / "image.json").read_text()).get("tags", ["*"])
            if any(fnmatch.fnmatchcase(tag, p) for p in patterns):
                return _load(wildcard, ref, tag)
    raise PermanentError(
        f"image {ref} not found",
        hint=f"a local image is a directory <root>/{repo}/{tag}/image.json; searched {', '.join(map(str, roots))}",
    )
