"""Names that become paths, process titles or Kubernetes object names.

Validated once here, so no caller builds a path or an object name from unchecked input.
"""

from __future__ import annotations

import re

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_LABEL = 63


def dns1123_problem(name: str) -> str | None:
    """Why ``name`` is not a DNS-1123 label, or None when it is.

    >>> dns1123_problem("shop-api") is None
    True
    >>> dns1123_problem("Shop_API")
    'must be a DNS-1123 label: lowercase letters, digits and "-", starting and ending with a letter or digit'
    """
    if not name:
        return "must not be empty"
    if len(name) > MAX_LABEL:
        return f"must be at most {MAX_LABEL} characters (has {len(name)})"
    if not DNS1123_LABEL.match(name):
        return 'must be a DNS-1123 label: lowercase letters, digits and "-", starting and ending with a letter or digit'
    return None


def instance_name(app: str, env: str, slot: int) -> str:
    """The stable name of the instance in ``slot``: its identity across revisions.

    >>> instance_name("shop-api", "production", 0)
    'shop-api-production-0'
    """
    return f"{app}-{env}-{slot}"
