"""Every error cairn raises, in one tree.

    CairnError                 (exit 1 unless a subclass says otherwise)
    ├── ConfigError            bad input: names the field, the value and the fix (exit 2)
    ├── NotFound               an app, environment, order, instance or image that does not exist (exit 3)
    ├── ActionRefused          an action the order's status does not allow (resume a running order, ...) (exit 4)
    ├── Conflict               another order already holds the environment (exit 5)
    └── RuntimeFailure         something went wrong where instances run
        ├── PermanentError     retrying the same call cannot help (image missing, port taken, forbidden)
        │   └── BatchFailed    a batch's instances did not become healthy: the order stops (names each one and why)
        └── TemporaryError     retrying may help (agent or API unreachable, a timeout)
            └── Expired        (cairn.runtimes.kubernetes.api) a watch's resourceVersion is too old: list again;
                               caught inside the runtime, never leaves it

An exception that never leaves the module raising it is a signal inside that module, not an
error of this tree (e.g. ``cairn.runtimes.local.netns.AddressTaken``: another agent holds the
address, allocate the next one).

Runtimes translate vendor errors (httpx, kubernetes.client.ApiException, OSError) into this tree
at their edge, with a hint, so flows decide retries on ``TemporaryError`` alone (kopf's split of
permanent and temporary errors). Messages never carry secret values.
"""

from __future__ import annotations

from typing import Any


class CairnError(Exception):
    """Base of every cairn error. ``hint`` says what the user can do about it."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message} (hint: {hint})")

    def to_dict(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "message": self.message, "hint": self.hint}

    def __reduce__(self) -> tuple[Any, ...]:
        # A flow run's exception is its persisted result, read back in another process (the CLI
        # reads a failed build's error from it): pickle restores the fields, not a re-run of an
        # __init__ whose signature differs per class.
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class ConfigError(CairnError):
    """Invalid input. ``problems`` lists each one as (field path, value, fix)."""

    exit_code = 2

    def __init__(self, problems: list[tuple[str, Any, str]]) -> None:
        self.problems = problems
        lines = [f"{field}: {_show(value)}: {fix}" for field, value, fix in problems]
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"invalid configuration ({len(problems)} {noun}):\n  " + "\n  ".join(lines))

    @classmethod
    def single(cls, field: str, value: Any, fix: str) -> ConfigError:
        return cls([(field, value, fix)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": "ConfigError",
            "problems": [{"field": f, "value": _show(v), "fix": fix} for f, v, fix in self.problems],
        }


class NotFound(CairnError):
    exit_code = 3


class ActionRefused(CairnError):
    exit_code = 4


class Conflict(CairnError):
    exit_code = 5


class RuntimeFailure(CairnError):
    """A runtime could not do what was asked."""


class PermanentError(RuntimeFailure):
    """Retrying the same call cannot succeed until a person changes something."""


class TemporaryError(RuntimeFailure):
    """Retrying may succeed: the runtime was unreachable, busy or slow."""


def _restore(cls: type[CairnError], args: tuple[Any, ...], state: dict[str, Any]) -> CairnError:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class BatchFailed(PermanentError):
    """A batch's instances did not become healthy; the order stops. ``failed`` maps instance -> reason."""

    def __init__(self, batch: int, failed: dict[str, str], events: list[str] | None = None) -> None:
        self.batch = batch
        self.failed = failed
        self.events = events or []
        lines = [f"  {name}: {reason}" for name, reason in sorted(failed.items())]
        if self.events:
            lines += ["events:"] + [f"  {e}" for e in self.events[-20:]]
        super().__init__(
            f"batch {batch} failed: {len(failed)} instance(s) not healthy\n" + "\n".join(lines),
            hint="fix the cause, then `cairn release retry ORDER` re-deploys only the failed instances",
        )
