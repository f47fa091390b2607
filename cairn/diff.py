"""What an order changes: the revision an environment runs now against the one an order ships.

One list of field changes, old -> new, for every door that shows it: `cairn release create
--dry-run` (and `--json`), the first block of the order's table artifact (what an approver is
approving), `cairn env diff` (the stored configuration against what runs).

Secret references (``secret_env``, ``image_pull_secret``) are shown as changed, added or removed,
never with their names' old and new values spelled out: a person reads that a secret moved,
and looks it up with the rights to. Secret *values* are never in a revision at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cairn.revision import Revision

# Fields whose values name secrets: shown as changed, never spelled out.
SECRET_FIELDS = ("secret_env", "image_pull_secret")


@dataclass(frozen=True)
class Change:
    """One field that differs. For a field naming a secret, ``old``/``new`` stay None and
    ``secret`` says what happened: "changed", "added" or "removed"."""

    field: str
    old: str | None
    new: str | None
    secret: str | None = None

    @property
    def summary(self) -> str:
        if self.secret:
            return f"secret reference {self.secret}"
        return f"{self.old if self.old is not None else '(none)'} -> {self.new if self.new is not None else '(none)'}"

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "old": self.old, "new": self.new, "secret": self.secret, "summary": self.summary}


def _flat(value: Any, prefix: str, out: dict[str, Any]) -> None:
    """Dotted paths to leaves: ``env.LOG_LEVEL``, ``ports[0].container_port``. An empty dict or
    list is a leaf of its own, so a mount list emptied is seen as a change."""
    if isinstance(value, Mapping) and value:
        for key in sorted(value):
            _flat(value[key], f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, list) and value:
        for i, item in enumerate(value):
            _flat(item, f"{prefix}[{i}]", out)
    else:
        out[prefix] = value


LONG = 80  # longer values (a file mount's content, say) are shown by size and digest


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and (len(value) > LONG or "\n" in value):
        return f"<{len(value.encode())} bytes, sha256 {hashlib.sha256(value.encode()).hexdigest()[:12]}>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return "[]" if isinstance(value, list) else "{}"
    return str(value)


def _emptied_parent(path: str, was: Any, now: Any, before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    """An emptied (or newly filled) dict or list is shown by its children's changes, not again as
    a leaf of its own."""
    empty = next((v for v in (was, now) if v in ({}, [])), None)
    if empty is None:
        return False
    other = after if was is empty else before
    return any(k.startswith((f"{path}.", f"{path}[")) for k in other)


def _is_secret(path: str) -> bool:
    return any(path == f or path.startswith(f"{f}.") for f in SECRET_FIELDS)


def spec_changes(old: Mapping[str, Any] | None, new: Mapping[str, Any], prefix: str = "") -> list[Change]:
    """Every leaf of two environment specs (as JSON: ``model_dump(mode="json")``) that differs,
    in path order. ``old`` None: everything is new."""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    if old is not None:
        _flat(old, prefix, before)
    _flat(new, prefix, after)
    changes = []
    for path in sorted(set(before) | set(after)):
        was, now = before.get(path), after.get(path)
        if was == now or _emptied_parent(path, was, now, before, after):
            continue
        bare = path.removeprefix(f"{prefix}.") if prefix else path
        if _is_secret(bare):
            changes.append(Change(path, None, None, secret="added" if was is None else "removed" if now is None else "changed"))
        else:
            changes.append(Change(path, _text(was), _text(now)))
    return changes


def revision_changes(running: Revision | None, shipped: Revision) -> list[Change]:
    """What shipping ``shipped`` changes over ``running`` (None: the environment runs nothing
    yet, so everything is new): the version, the image as pinned, then every spec field."""
    changes: list[Change] = []
    if running is None or running.version != shipped.version:
        changes.append(Change("version", running.version if running else None, shipped.version))
    if shipped.deploy_type == "image" and (running is None or running.image != shipped.image):
        changes.append(Change("image", running.image if running else None, shipped.image))
    if shipped.package_digest and (running is None or running.package_digest != shipped.package_digest):
        changes.append(Change("package_digest", running.package_digest if running else None, shipped.package_digest))
    old_spec = running.spec.model_dump(mode="json") if running else None
    changes += spec_changes(old_spec, shipped.spec.model_dump(mode="json"), prefix="spec")
    return changes


def markdown(changes: Sequence[Change], running: Revision | None) -> str:
    """The diff as the artifact's first block: a Markdown table."""
    against = f"revision {running.short} (version {running.version})" if running else "nothing (the first order of this environment)"
    if not changes:
        return f"**No change** against what runs now: {against}."
    lines = [f"**What this order changes**, against what runs now: {against}", "", "| field | change |", "|---|---|"]
    lines += [f"| `{c.field}` | {_cell(c.summary)} |" for c in changes]
    return "\n".join(lines)


def _cell(text: str) -> str:
    # A value is text someone wrote into a config: it must not break out of its table cell.
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("`", "'")
