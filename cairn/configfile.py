"""Read a configuration file and turn every problem in it into one :class:`ConfigError`.

The whole file is validated before anything is stored, so a bad file saves nothing. Field paths
name apps and clusters by name (``apps[shop-api].environments.production.memory_mb``), not by list
index, because that is how the user finds the line to fix.
"""

from __future__ import annotations

import difflib
import os
import re
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from cairn.config import CairnConfig, ClusterSpec
from cairn.errors import ConfigError
from cairn.paths import host_path_problem

M = TypeVar("M", bound=BaseModel)

# Fixes for pydantic's generic error types; our own validators carry their fix in the message.
_FIXES = {
    "missing": "required; add it",
    "int_type": "must be a whole number",
    "float_parsing": "must be a number",
    "string_type": "must be a string (quote it in YAML)",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping of the documented keys",
    "finite_number": "must be a finite number (not inf or nan)",
    "float_type": "must be a number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "string_too_long": "is too long",
}

_BOUNDS = {
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be greater than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "too_short": "needs at least {min_length} item(s)",
    "literal_error": "must be one of {expected}",
}


# A configuration file of hundreds of apps is far below these; past them a file is a mistake or
# an attack (an alias "billion laughs" of a few hundred bytes expands to millions of nodes, which
# pydantic would then walk one by one).
MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 100_000
MAX_DEPTH = 64


def load_file(path: str | Path, *, known_clusters: Iterable[str | ClusterSpec] | None = None) -> CairnConfig:
    path = Path(path)
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            # Checked before reading and again on what was read: a file may grow (or be a pipe).
            data = f.read(MAX_FILE_BYTES + 1) if size <= MAX_FILE_BYTES else b""
    except OSError as exc:
        raise ConfigError.single("file", str(path), f"cannot be read ({exc.strerror}); check the path") from None
    if size > MAX_FILE_BYTES or len(data) > MAX_FILE_BYTES:
        raise ConfigError.single("file", str(path), _too_big(max(size, len(data))))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError.single("file", str(path), f"is not UTF-8: byte {exc.start} (line {line}) is {data[exc.start:exc.start + 1]!r}; "
                                 "save the file as UTF-8") from None
    return load_text(text, known_clusters=known_clusters)


def load_text(text: str, *, known_clusters: Iterable[str | ClusterSpec] | None = None) -> CairnConfig:
    if len(text) > MAX_FILE_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise ConfigError.single("file", f"{len(text)} characters", _too_big(len(text.encode("utf-8", "surrogatepass"))))
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader (see _Loader)
    except _Refused as exc:
        raise ConfigError.single(exc.where, exc.value, exc.fix) from None
    except RecursionError:
        raise ConfigError.single("the file", "YAML", f"nests deeper than {MAX_DEPTH} levels; flatten it") from None
    except ValueError as exc:  # a constructor's own check: an int past Python's digit limit, a date like 2024-13-01
        raise ConfigError.single("the file", "YAML", f"holds a value that cannot be read ({exc}); quote it to keep it as text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "the file"
        raise ConfigError.single(where, "YAML", f"is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError.single("(top level)", type(data).__name__, "must be a mapping with clusters and apps")
    return load_data(data, known_clusters=known_clusters)


def _too_big(size: int) -> str:
    return f"is {size} bytes; a configuration file holds at most {MAX_FILE_BYTES} (1 MiB): split it into several files"


class _Refused(Exception):
    """A rule of the file itself, raised while PyYAML reads it; load_text makes it a ConfigError."""

    def __init__(self, where: str, value: Any, fix: str) -> None:
        super().__init__(fix)
        self.where, self.value, self.fix = where, value, fix


def _line(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing what it would accept silently: a key given twice (the last
    one won), a document whose aliases expand past ``MAX_NODES`` nodes, nesting past ``MAX_DEPTH``."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise _Refused(_line(event.start_mark), "YAML", f"nests deeper than {MAX_DEPTH} levels; flatten it")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Any:
        node = super().compose_document()
        size = _expanded_size(node, {}, set(), 0)
        if size > MAX_NODES:
            raise _Refused("the file", f"over {MAX_NODES} nodes", f"expands (through anchors and aliases) to more than {MAX_NODES} nodes; "
                           "write the values out or use fewer aliases")
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Mark] = {}
            for key_node, _ in node.value:
                # A merge key (<<) may be repeated and its keys overridden: YAML's own rule.
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:
                    continue  # an unhashable key: construct_mapping says why
                if first is not key_node.start_mark:
                    raise _Refused(_line(key_node.start_mark), key,
                                   f"duplicate key (first given at line {first.line + 1}); keep one of them")
        return super().construct_mapping(node, deep)


def _expanded_size(node: Any, sizes: dict[int, int], open_nodes: set[int], depth: int) -> int:
    """How many nodes ``node`` stands for once every alias is expanded; a node is sized once."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if depth > MAX_DEPTH:
        raise _Refused(_line(node.start_mark), "YAML", f"nests deeper than {MAX_DEPTH} levels (counting aliases); flatten it")
    if key in open_nodes:
        raise _Refused(_line(node.start_mark), "YAML", "an alias refers to a node that contains it (a recursive structure); remove it")
    open_nodes.add(key)
    total = 1
    if isinstance(node, yaml.SequenceNode):
        children: list[Any] = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    else:
        children = []
    for child in children:
        total += _expanded_size(child, sizes, open_nodes, depth + 1)
        if total > MAX_NODES:
            break  # the answer is "too many" already
    open_nodes.discard(key)
    sizes[key] = total
    return total


def load_data(data: Mapping[str, Any], *, known_clusters: Iterable[str | ClusterSpec] | None = None) -> CairnConfig:
    """Validate ``data``; with ``known_clusters`` (the stored ones) also check cluster references."""
    config = validate(CairnConfig, data)
    if known_clusters is not None:
        check_references(config, known_clusters)
    return config


def validate(model: type[M], data: Any, *, prefix: str = "") -> M:
    """``model.model_validate(data)`` with pydantic's errors rewritten as one ConfigError."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_problem(err, data, model, prefix) for err in exc.errors()]) from None


def check_references(config: CairnConfig, known_clusters: Iterable[str | ClusterSpec] = ()) -> None:
    """Every environment names a cluster defined in this file or stored before, and every host
    path lies under that cluster's allowed roots. A cluster known by name alone allows no host path."""
    specs = {c.name: c for c in known_clusters if isinstance(c, ClusterSpec)} | {c.name: c for c in config.clusters}
    defined = set(specs) | {c for c in known_clusters if isinstance(c, str)}
    problems = []
    for app in config.apps:
        for env_name, env in app.environments.items():
            where = f"apps[{app.name}].environments.{env_name}"
            if env.cluster not in defined:
                close = difflib.get_close_matches(env.cluster, sorted(defined), n=1)
                known = sorted(defined) or "none"
                fix = f"unknown cluster; did you mean {close[0]!r}?" if close else f"unknown cluster; define it under clusters (known: {known})"
                problems.append((f"{where}.cluster", env.cluster, fix))
                continue
            cluster = specs.get(env.cluster)
            roots = cluster.host_path_roots() if cluster else []
            for i, mount in enumerate(env.dirs):
                problem = host_path_problem(mount.host_path, roots, on_this_machine=cluster is not None and cluster.runtime == "local")
                if problem:
                    problems.append((f"{where}.dirs[{i}].host_path", mount.host_path, f"{problem} (cluster {env.cluster})"))
    if problems:
        raise ConfigError(problems)


def _problem(err: Any, data: Any, model: type[BaseModel], prefix: str) -> tuple[str, Any, str]:
    loc = list(err["loc"])
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if err["type"] == "cairn":
        loc += _field_parts(str(ctx["field"]))
        value = ctx.get("value")
        fix = ctx["fix"]
    elif err["type"] == "extra_forbidden":
        fix = _unknown_key_fix(loc, model)
    elif err["type"] in _BOUNDS:
        fix = _BOUNDS[err["type"]].format(**ctx)
    else:
        message = err["msg"].removeprefix("Value error, ")
        fix = message if err["type"] == "value_error" else _FIXES.get(err["type"], message)
    return prefix + _render(loc, data), value, fix


def _field_parts(field: str) -> list[str | int]:
    """'ports[1].container_port' -> ['ports', 1, 'container_port'], so list indexes render by name."""
    parts: list[str | int] = []
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", field):
        parts.append(int(token[1:-1]) if token.startswith("[") else token)
    return parts


def _unknown_key_fix(loc: list[Any], model: type[BaseModel]) -> str:
    known = _fields_at(model, loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    return f"unknown key; known keys here: {', '.join(known)}" if known else "unknown key"


def _fields_at(model: Any, loc: list[Any]) -> list[str]:
    """The field names of the model found by walking ``loc`` from ``model``."""
    current = model
    for part in loc:
        if isinstance(part, int) or not hasattr(current, "model_fields"):
            continue
        field = current.model_fields.get(part)
        if field is None:
            continue  # a dict key such as an environment name
        current = _inner_model(field.annotation)
    if current is not None and hasattr(current, "model_fields"):
        return list(current.model_fields)
    return []


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _render(loc: list[Any], data: Any) -> str:
    """('apps', 0, 'environments', 'production', 'cpu') -> 'apps[shop-api].environments.production.cpu'."""
    out = ""
    node = data
    for part in loc:
        if part == "[key]":  # pydantic marks an invalid dict key this way; the key itself is the field
            continue
        if isinstance(part, int):
            name = node[part].get("name") if isinstance(node, list) and part < len(node) and isinstance(node[part], Mapping) else None
            out += f"[{name}]" if isinstance(name, str) and name else f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
        try:
            node = node[part] if node is not None else None
        except (KeyError, IndexError, TypeError):
            node = None
    return out or "(top level)"
