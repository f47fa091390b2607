"""Secrets are masked whole, on every path, by one rule."""

from __future__ import annotations

import pytest

from cairn.redaction import MASK, redact

CASES = {
    "a secret is masked wherever it occurs": ("pw=hunter2 again hunter2", ["hunter2"], f"pw={MASK} again {MASK}"),
    "a secret containing another is masked whole": ("key=abcdef", ["abc", "abcdef"], f"key={MASK}"),
    "a multi-line secret is masked across its lines": ("-----BEGIN-----\nAAA\n-----END-----!", ["-----BEGIN-----\nAAA\n-----END-----"], f"{MASK}!"),
    "values too short to mean anything are left alone": ("port 80 on", ["80", "on"], "port 80 on"),
    "no secrets leave the text as it is": ("nothing here", [], "nothing here"),
}


@pytest.mark.parametrize(("text", "secrets", "shown"), CASES.values(), ids=CASES.keys())
def test_redact(text: str, secrets: list[str], shown: str) -> None:
    assert redact(text, secrets) == shown
