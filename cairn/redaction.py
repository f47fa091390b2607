"""Secret values out of text cairn shows or keeps: logs, events, reasons, messages, commands.

One rule for every path (the local runtime's shims and agent, the kubernetes runtime, builds):
every occurrence of a secret's value becomes ``MASK``, longest values first, so a secret that
contains another is masked whole. Values shorter than ``MIN_LENGTH`` are left alone: masking
every "1" or "on" in a log would hide everything and protect nothing.

A multi-line value (a PEM key, a JSON credential) is masked whole and line by line: logs arrive
one line at a time and a health check's output is folded onto one line, so the whole value is
rarely there to match, while each of its lines is.

Text that is the *end* of something longer (the kubelet keeps the last 2 KiB of a container's
output as its termination message) may begin in the middle of a secret: ``redact_tail`` also
masks a leading piece that ends a secret's value or line.
"""

from __future__ import annotations

from collections.abc import Iterable

MASK = "***"
MIN_LENGTH = 3


def values(secrets: Iterable[str]) -> list[str]:
    """What to look for: each value and each line of it long enough to mean something, longest first."""
    found: set[str] = set()
    for value in secrets:
        found.add(value)
        found.update(line.strip() for line in value.splitlines())
    return sorted((v for v in found if len(v) >= MIN_LENGTH), key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    for value in values(secrets):
        text = text.replace(value, MASK)
    return text


def redact_tail(text: str, secrets: Iterable[str]) -> str:
    """``redact`` for the tail of a longer text: a start that is the end of a secret is masked too."""
    wanted = values(secrets)
    head = text[:MIN_LENGTH]
    for value in wanted:
        # The longest end of the value the text starts with (an end shorter than MIN_LENGTH means nothing).
        at = value.find(head, 1) if len(head) == MIN_LENGTH else -1
        while at != -1 and not text.startswith(value[at:]):
            at = value.find(head, at + 1)
        if at != -1:
            text = MASK + text[len(value) - at:]
            break
    for value in wanted:
        text = text.replace(value, MASK)
    return text
