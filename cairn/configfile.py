"""Read a configuration file and turn every problem in it into one :class:`ConfigError`.

The whole file is validated before anything is stored, so a bad file saves nothing. Field paths
name apps and clusters by name (``apps[shop-api].environments.production.memory_mb``), not by list
index, because that is how the user finds the line to fix.
"""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from cairn.config import CairnConfig
from cairn.errors import ConfigError

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
}

_BOUNDS = {
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be greater than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "too_short": "needs at least {min_length} item(s)",
    "literal_error": "must be one of {expected}",
}


def load_file(path: str | Path, *, known_clusters: Iterable[str] | None = None) -> CairnConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError.single("file", str(path), f"cannot be read ({exc.strerror}); check the path") from None
    return load_text(text, known_clusters=known_clusters)


def load_text(text: str, *, known_clusters: Iterable[str] | None = None) -> CairnConfig:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "the file"
        raise ConfigError.single(where, "YAML", f"is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError.single("(top level)", type(data).__name__, "must be a mapping with clusters and apps")
    return load_data(data, known_clusters=known_clusters)


def load_data(data: Mapping[str, Any], *, known_clusters: Iterable[str] | None = None) -> CairnConfig:
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


def check_references(config: CairnConfig, known_clusters: Iterable[str] = ()) -> None:
    """Every environment names a cluster defined in this file or stored before."""
    defined = {c.name for c in config.clusters} | set(known_clusters)
    problems = []
    for app in config.apps:
        for env_name, env in app.environments.items():
            if env.cluster not in defined:
                close = difflib.get_close_matches(env.cluster, sorted(defined), n=1)
                known = sorted(defined) or "none"
                fix = f"unknown cluster; did you mean {close[0]!r}?" if close else f"unknown cluster; define it under clusters (known: {known})"
                problems.append((f"apps[{app.name}].environments.{env_name}.cluster", env.cluster, fix))
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
