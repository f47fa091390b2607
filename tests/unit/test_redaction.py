"""Secrets are masked whole, on every path, by one rule."""

from __future__ import annotations

import pytest

from cairn.redaction import MASK, redact, redact_tail

PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n-----END PRIVATE KEY-----\n"

CASES = {
    "a secret is masked wherever it occurs": ("pw=hunter2 again hunter2", ["hunter2"], f"pw={MASK} again {MASK}"),
    "a secret containing another is masked whole": ("key=abcdef", ["abc", "abcdef"], f"key={MASK}"),
    "a multi-line secret is masked across its lines": ("-----BEGIN-----\nAAA\n-----END-----!", ["-----BEGIN-----\nAAA\n-----END-----"], f"{MASK}!"),
    "a multi-line secret printed line by line is masked in each line":
        ("2026-01-01T00:00:00Z MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", [PEM], f"2026-01-01T00:00:00Z {MASK}"),
    "a multi-line secret folded onto one line leaves none of its lines":
        ("exec exited 1: " + " ".join(PEM.split()), [PEM], f"exec exited 1: {MASK} {MASK} {MASK} {MASK}"),
    "a line of a secret is found without the indentation it was stored with": ("got   token-line-1", ["{\n   token-line-1\n}"], f"got   {MASK}"),
    "values too short to mean anything are left alone": ("port 80 on", ["80", "on"], "port 80 on"),
    "short lines of a multi-line secret are left alone": ("{ and }", ["{\nlong-enough\n}"], "{ and }"),
    "no secrets leave the text as it is": ("nothing here", [], "nothing here"),
}


@pytest.mark.parametrize(("text", "secrets", "shown"), CASES.values(), ids=CASES.keys())
def test_redact(text: str, secrets: list[str], shown: str) -> None:
    assert redact(text, secrets) == shown


TAILS = {
    "a text that starts inside a secret loses that piece too": ("r2-is-mine!", ["hunter2-is-mine"], f"{MASK}!"),
    "the longest piece is masked when the value repeats itself": ("abab-x", ["xabab-"], f"{MASK}x"),
    "a text that starts inside a line of a multi-line secret loses that piece": ("TUt9Us8cKj\nend", [PEM], f"{MASK}\nend"),
    "a whole secret later in the tail is masked as redact does": ("ok s3cr3t", ["s3cr3t"], f"ok {MASK}"),
    "a start that shares too little with a secret is left alone": ("r2 at the start", ["hunter2"], "r2 at the start"),
    "a start that is no end of a secret is left alone": ("hunt at the start", ["hunter2"], "hunt at the start"),
}


@pytest.mark.parametrize(("text", "secrets", "shown"), TAILS.values(), ids=TAILS.keys())
def test_redact_tail(text: str, secrets: list[str], shown: str) -> None:
    assert redact_tail(text, secrets) == shown
