"""Secret values out of text cairn shows or keeps: logs, events, reasons, messages, commands.

One rule for every path (the local runtime's shims and agent, the kubernetes runtime, builds):
every occurrence of a secret's value becomes ``MASK``, longest values first, so a secret that
contains another is masked whole. Values shorter than ``MIN_LENGTH`` are left alone: masking
every "1" or "on" in a log would hide everything and protect nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

MASK = "***"
MIN_LENGTH = 3


def redact(text: str, secrets: Iterable[str]) -> str:
    for value in sorted({s for s in secrets if len(s) >= MIN_LENGTH}, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text
