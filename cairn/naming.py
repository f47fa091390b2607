"""Names that become paths, process titles, URLs or Kubernetes object names: their one home.

Validated here, once, by the configuration models and by every CLI argument, so no caller builds
a path, a URL or an object name from unchecked input.

The patterns keep ``^...$`` because pydantic's ``pattern=`` (Rust's regex engine, where ``$`` is
the end of the text) reads them too (``orders.requests``); Python code matches them only with
``fullmatch``, because Python's ``$`` also matches before a trailing newline ("shop\\n" passed
``match``). The character classes are spelled out ASCII ranges: ``\\w`` and ``\\d`` would take
any Unicode letter or digit.
"""

from __future__ import annotations

import re

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_LABEL = 63
# Secrets, apps and clusters are Prefect block documents named by the user: DNS-1123 labels.
BLOCK_NAME = DNS1123_LABEL
VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# An instance is <app>-<env>-<slot>: DNS-1123 labels joined by "-", which may pass 63 characters.
MAX_INSTANCE = 253

_LABEL_FIX = 'must be a DNS-1123 label: lowercase letters, digits and "-", starting and ending with a letter or digit'
VERSION_FIX = "a version is 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit (e.g. v2, 1.4.0)"
SECRET_FIX = "a secret name is lowercase letters, digits and '-' (e.g. shop-db-password)"
ENV_VAR_FIX = "not an environment variable name: ASCII letters, digits and _, not starting with a digit (e.g. LOG_LEVEL)"


def dns1123_problem(name: str) -> str | None:
    """Why ``name`` is not a DNS-1123 label, or None when it is.

    >>> dns1123_problem("shop-api") is None
    True
    >>> dns1123_problem("Shop_API")
    'must be a DNS-1123 label: lowercase letters, digits and "-", starting and ending with a letter or digit'
    >>> dns1123_problem("shop\\n") is None
    False
    """
    if not name:
        return "must not be empty"
    if len(name) > MAX_LABEL:
        return f"must be at most {MAX_LABEL} characters (has {len(name)})"
    if not DNS1123_LABEL.fullmatch(name):
        return _LABEL_FIX
    return None


def version_problem(version: str) -> str | None:
    """Why ``version`` cannot be a version (an image tag or a code package's name), or None.

    >>> version_problem("1.4.0") is None
    True
    >>> version_problem("v1\\n") == VERSION_FIX
    True
    """
    return None if VERSION.fullmatch(version) else VERSION_FIX


def secret_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a secret (a Prefect Secret block), or None."""
    return None if name and len(name) <= MAX_LABEL and BLOCK_NAME.fullmatch(name) else SECRET_FIX


def env_var_problem(name: str) -> str | None:
    """Why ``name`` cannot be an environment variable's name, or None.

    >>> env_var_problem("LOG_LEVEL") is None
    True
    >>> env_var_problem("LOG-LEVEL") == ENV_VAR_FIX
    True
    """
    return None if ENV_VAR.fullmatch(name) else ENV_VAR_FIX


def instance_problem(name: str) -> str | None:
    """Why ``name`` cannot name an instance (``<app>-<env>-<slot>``), or None."""
    if len(name) > MAX_INSTANCE:
        return f"must be at most {MAX_INSTANCE} characters (has {len(name)})"
    if not name or not DNS1123_LABEL.fullmatch(name):
        return "an instance name is lowercase letters, digits and '-' (e.g. shop-api-production-0; `cairn instances APP ENV` lists them)"
    return None


def instance_name(app: str, env: str, slot: int) -> str:
    """The stable name of the instance in ``slot``: its identity across revisions.

    >>> instance_name("shop-api", "production", 0)
    'shop-api-production-0'
    """
    return f"{app}-{env}-{slot}"


ORDER_ID = re.compile(r"^[0-9a-fA-F-]{4,36}$")


def order_id_problem(order: str) -> str | None:
    """Why ``order`` cannot be a release order's id or a prefix of one, or None."""
    return None if ORDER_ID.fullmatch(order) else "an order is its id or a prefix of it: 4-36 hex digits and '-' (`cairn release list` shows them)"
