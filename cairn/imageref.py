"""Image references: ``registry[:port]/name[:tag][@sha256:hex]``, parsed once, strictly.

The grammar is distribution's (github.com/distribution/reference, which docker, containerd
and skopeo share), narrowed to what cairn pulls: a reference cairn pulls names its registry
host. An implicit Docker Hub would make a reference mean different bytes on different
machines, and this project's registries are named hosts (the loopback one is ``127.0.0.1:PORT``).

Configuration may also say a **short name** (``cairn/python:3.11``, no registry host): the
order qualifies it with the default registry (``cairn.images.defaults``) before anything is
pinned or pulled. ``check_image`` is the configuration's rule for both spellings.

In the core (not in cairn.images, which re-exports it) because the configuration and the
revision validate and print references, and they sit below the images layer.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from cairn.errors import ConfigError

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_HOST = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?$"
)
_FIX = ("write registry/name:tag or registry/name@sha256:<64 hex> (e.g. 127.0.0.1:5000/cairn/demo-app:v1), "
        "or a short name:tag (cairn/demo-app:v1) for the default registry")


@dataclass(frozen=True)
class Reference:
    registry: str  # host[:port], as written
    name: str  # repository path inside the registry
    tag: str | None = None
    digest: str | None = None  # sha256:<hex>

    @classmethod
    def parse(cls, text: str, *, field: str = "image", default_registry: str | None = None,
              tagless: bool = False) -> Reference:
        """``text`` as a reference. A short name (no registry host) takes ``default_registry``
        (refused without one); ``tagless`` admits a name with neither tag nor digest (deploy
        type image: the version is the tag)."""
        if not isinstance(text, str) or not text or len(text) > 1024 or text != text.strip():
            raise ConfigError.single(field, text, _FIX)
        rest, digest = text, None
        if "@" in rest:
            rest, digest = rest.split("@", 1)
            if not _DIGEST.fullmatch(digest):
                raise ConfigError.single(field, text, f"the digest must be sha256:<64 lowercase hex>; {_FIX}")
        if is_short(rest):
            if default_registry is None:
                raise ConfigError.single(field, text, f"name the registry host first; {_FIX}")
            if not _looks_like_host(default_registry):
                raise ConfigError.single("registry", default_registry, "a registry is host[:port], e.g. 127.0.0.1:5000")
            registry, path = default_registry, rest
        else:
            registry, _, path = rest.partition("/")
        tag = None
        last = path.rsplit("/", 1)[-1]
        if ":" in last:
            path, tag = path.rsplit(":", 1)
            if not _TAG.fullmatch(tag):
                raise ConfigError.single(field, text, f"a tag is 1-128 of [A-Za-z0-9_.-], not starting with . or -; {_FIX}")
        if not _NAME.fullmatch(path) or len(path) > 255:
            raise ConfigError.single(field, text, f"the repository name is lowercase [a-z0-9] parts joined by . _ - or /; {_FIX}")
        if tag is None and digest is None and not tagless:
            raise ConfigError.single(field, text, f"give a tag or a digest (cairn never assumes :latest); {_FIX}")
        return cls(registry=registry, name=path, tag=tag, digest=digest)

    @property
    def is_loopback(self) -> bool:
        """A registry on this machine's loopback: plain HTTP is used only there."""
        host = self.registry.rsplit(":", 1)[0] if not self.registry.endswith("]") else self.registry
        host = host.strip("[]")
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @property
    def base_url(self) -> str:
        return f"{'http' if self.is_loopback else 'https'}://{self.registry}"

    def with_tag(self, tag: str) -> Reference:
        """The same repository at ``tag``, unpinned (deploy type image: the version is the tag)."""
        if not _TAG.fullmatch(tag):
            raise ConfigError.single("version", tag, "a tag is 1-128 of [A-Za-z0-9_.-], not starting with . or -")
        return Reference(self.registry, self.name, tag, None)

    @property
    def repository(self) -> str:
        """``registry/name``, what a skopeo ``docker://`` reference starts with."""
        return f"{self.registry}/{self.name}"

    def at(self, digest: str) -> Reference:
        """The same image pinned to ``digest`` (the tag kept only for display)."""
        if not _DIGEST.fullmatch(digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return Reference(self.registry, self.name, self.tag, digest)

    def __str__(self) -> str:
        text = self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def is_short(text: str) -> bool:
    """No registry host: the first path component is not one (or there is no ``/`` at all)."""
    first, sep, _ = text.partition("/")
    return not sep or not _looks_like_host(first)


def check_image(text: str) -> str:
    """The configuration's rule: a full reference or a short name, tag optional. Returns ``text``;
    raises ``ValueError`` with the fix (a pydantic validator's error)."""
    try:
        # Any host stands in for the default registry: only the grammar is checked here.
        Reference.parse(text, default_registry="localhost", tagless=True)
    except ConfigError as exc:
        raise ValueError(f"not an image reference: {exc.problems[0][2]}") from None
    return text


def _looks_like_host(part: str) -> bool:
    # distribution's rule for a first component that is a registry: it has a dot or a port,
    # or is localhost. Anything else would be a Docker Hub namespace, which cairn refuses.
    if not _HOST.fullmatch(part):
        return False
    return "." in part or ":" in part or part == "localhost"


def is_digest(text: str) -> bool:
    return bool(_DIGEST.fullmatch(text))
