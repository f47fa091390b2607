"""Registry credentials: a username/password pair the caller reads from a Secret block.

The password never shows in a repr, a log line or an exception; skopeo gets it through an
auth file (skopeo.py), httpx through an Authorization header (distribution.py).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def basic(self) -> str:
        """The ``user:password`` pair as Basic auth and auth.json's ``auth`` field spell it."""
        return base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
