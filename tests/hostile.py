"""Random hostile mutations of examples/shop.yaml, as YAML text, for the property tests: values
replaced with hostile ones (inf, nan, huge numbers, newlines, NUL, non-ASCII, '..' paths, wrong
types), keys dropped, renamed or given twice."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "shop.yaml"

HOSTILE_VALUES: list[Any] = [
    float("inf"), float("-inf"), float("nan"), "inf", "nan", 10**20, 2**63, -1, 0, 1e308, -0.0,
    "", " ", "x\n", "v1\n", "a\x00b", "\x00", "shöp", "Ünïcode-名前", "shop api", "../../etc", "/./etc", "//", "/", "/proc/self",
    "/tmp/cairn-demo/../../etc", "a" * 300, None, True, [], {}, [1, 2], {"k": "v"}, "${HOME}", "--help",
]
HOSTILE_KEYS = ["", "x\n", "LÖG", "1ABC", "A-B", "a\x00", "nmae", "<<"]


def example() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return data


def _paths(node: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every location in ``node`` (container or leaf), the root excluded."""
    found: list[tuple[Any, ...]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, child in items:
        found.append((*at, key))
        found += _paths(child, (*at, key))
    return found


def _parent(data: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        data = data[key]
    return data


@st.composite
def mutated_example(draw: st.DrawFn, rename: str | None = None) -> str:
    """YAML text of the example with 1-3 hostile mutations. ``rename`` prefixes the app and cluster
    names first, so what a run stores cannot collide with other tests' names."""
    data = example()
    if rename:
        for cluster in data["clusters"]:
            cluster["name"] = f"{rename}-{cluster['name']}"
        for app in data["apps"]:
            app["name"] = f"{rename}-{app['name']}"
            for env in app["environments"].values():
                env["cluster"] = f"{rename}-{env['cluster']}"
    duplicates = 0
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(data, path)
        action = draw(st.sampled_from(["replace", "replace", "replace", "drop", "rename", "duplicate"]))
        if action == "replace":
            parent[path[-1]] = draw(st.sampled_from(HOSTILE_VALUES))
        elif action == "drop":
            del parent[path[-1]]
        elif action == "rename" and isinstance(parent, dict):
            parent[draw(st.sampled_from(HOSTILE_KEYS))] = parent.pop(path[-1])
        else:
            duplicates += 1
    text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
    lines = text.splitlines(keepends=True)
    keyed = [i for i, line in enumerate(lines) if re.match(r"^\s*(- )?[A-Za-z_][\w-]*:", line)]
    for _ in range(duplicates):
        if keyed:
            i = draw(st.sampled_from(keyed))
            # A "- key:" line repeated as "  key:" stays in the same mapping: a duplicate key.
            lines.insert(i + 1, re.sub(r"^(\s*)- ", lambda m: m.group(1) + "  ", lines[i]))
    return "".join(lines)
