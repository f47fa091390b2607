"""Every way an instance can say its secret, and what cairn shows of it: masked on both runtimes.

An app given a password and a PEM key says them on each path text leaves an instance by: its
output (logs), its output when it crashes (the kubelet's termination message, quoted in the
reason), a health check's output (the reason, the Unhealthy events), a failing PostStart and a
failing PreStop hook (events; the kubelet's event about a failed PreStop quotes nothing). Each
test looks at all cairn shows of the environment (instances, events, logs) for the password and
for every line of the key, and first proves the path was taken: the masked text is where the
secret would have been.
"""

from __future__ import annotations

import base64
import os
import uuid

import pytest

from cairn.redaction import MASK
from cairn.runtime import EnvRef, Phase
from tests.behaviour.conftest import Harness

pytestmark = pytest.mark.slow
SECRET_ENV = {"DB_PASSWORD": "leak-db-password", "TLS_KEY": "leak-tls-key"}


def fresh() -> dict[str, str]:
    """A password and a PEM key no other test uses (the body lines are random: each is a needle)."""
    body = base64.b64encode(os.urandom(96)).decode()
    pem = "\n".join(["-----BEGIN PRIVATE KEY-----", body[:64], body[64:], "-----END PRIVATE KEY-----"])
    return {"DB_PASSWORD": f"pw-{uuid.uuid4().hex}", "TLS_KEY": pem}


def needles(values: dict[str, str]) -> list[str]:
    """The password, the key whole and each line of its body (the armour lines are no secret)."""
    lines = [line for line in values["TLS_KEY"].splitlines() if not line.startswith("-----")]
    return [values["DB_PASSWORD"], values["TLS_KEY"], *lines]


def shown(runtime: Harness, env: EnvRef) -> list[str]:
    """All cairn shows of the environment: its instances, their events and their logs."""
    instances = runtime.runtime.observe(env)
    texts = [str(i.to_dict()) for i in instances]
    texts += [f"{e.reason} {e.message}" for e in runtime.runtime.events(env)]
    texts += [line for i in instances for line in runtime.runtime.logs(env, i.name)]
    return texts


def leaks(texts: list[str], values: dict[str, str]) -> list[str]:
    return [t for t in texts for n in needles(values) if n in t]


def assert_nothing_leaks(runtime: Harness, env: EnvRef, values: dict[str, str]) -> None:
    found = leaks(shown(runtime, env), values)
    assert not found, f"secret values shown in: {found}"


def ship(runtime: Harness, env: EnvRef, values: dict[str, str], version: str = "v1", **spec: object) -> None:
    runtime.ensure(env, [0], runtime.revision(env, version, secret_env=SECRET_ENV, **spec), secrets=values)


SAYS = 'echo "connecting with password $DB_PASSWORD"; echo "key:"; printf "%s\\n" "$TLS_KEY"'


def test_what_the_app_prints_is_masked_in_its_log(runtime: Harness) -> None:
    env, values = runtime.env("sayit"), fresh()
    ship(runtime, env, values, command=["sh", "-c", f"{SAYS}; exec python3 /acs/code/app.py"])
    runtime.wait_ready(env, 1, timeout=60)
    texts = shown(runtime, env)
    assert any(t.endswith(f"connecting with password {MASK}") for t in texts), "the app printed its password"
    assert sum(t.endswith(MASK) for t in texts) >= 3, "and each line of its key"
    assert not leaks(texts, values), texts


def test_what_a_crashing_app_prints_is_masked_in_its_reason(runtime: Harness) -> None:
    env, values = runtime.env("crash"), fresh()
    ship(runtime, env, values, command=["sh", "-c", f'{SAYS}; echo "refused: $DB_PASSWORD"; exit 3'], health_check={})
    [instance] = runtime.wait(env, lambda i: bool(i) and i[0].restarts >= 1 and i[0].phase is Phase.BACKOFF, 90, "a crash loop")
    if runtime.kind == "kubernetes":  # the kubelet keeps the end of the output as the termination message; local does not quote it
        assert instance.reason == f"Error: exited with code 3 (refused: {MASK})", instance.reason
    texts = shown(runtime, env)
    assert any(t.endswith(f"refused: {MASK}") for t in texts), "the app printed its password"
    assert not leaks(texts, values), texts


def test_what_a_health_check_prints_is_masked_in_the_reason_and_events(runtime: Harness) -> None:
    env, values = runtime.env("probe"), fresh()
    # Said last: a reason keeps the end of what the check printed (its last 200 characters).
    check = {"http": None, "exec": {"command": ["sh", "-c", f'{SAYS} >&2; echo "db refused password $DB_PASSWORD" >&2; exit 1']},
             "period_s": 0.5, "timeout_s": 5, "failure_threshold": 3}
    ship(runtime, env, values, health_check=check)
    [instance] = runtime.wait(env, lambda i: bool(i) and i[0].phase is Phase.FAILED, 90, "the instance to fail")
    assert instance.reason and f"db refused password {MASK}" in instance.reason, instance.reason
    runtime.wait_event(env, lambda e: e.reason == "Unhealthy", 30, "an Unhealthy event")
    assert_nothing_leaks(runtime, env, values)


def test_what_a_failing_post_start_hook_prints_is_masked(runtime: Harness) -> None:
    env, values = runtime.env("hook"), fresh()
    hook = {"exec": {"command": ["sh", "-c", f'{SAYS} >&2; echo "hook saw $DB_PASSWORD" >&2; exit 7']}}
    ship(runtime, env, values, lifecycle={"termination_grace_period_s": 2, "post_start": hook})
    event = runtime.wait_event(env, lambda e: e.reason == "PostStartFailed", 60, "PostStartFailed")
    assert f"hook saw {MASK}" in event.message, event.message
    runtime.wait(env, lambda i: bool(i) and i[0].restarts >= 1, 60, "a restart after the kill")
    assert_nothing_leaks(runtime, env, values)


def test_what_a_failing_pre_stop_hook_prints_is_masked(runtime: Harness) -> None:
    env, values = runtime.env("prestop"), fresh()
    hook = {"exec": {"command": ["sh", "-c", f'{SAYS} >&2; echo "stopping with $DB_PASSWORD" >&2; exit 5']}}
    ship(runtime, env, values, lifecycle={"termination_grace_period_s": 5, "pre_stop": hook})
    runtime.wait_ready(env, 1, timeout=60)
    # A release replaces the instance: its PreStop runs and fails while the replacement starts.
    ship(runtime, env, values, "v2", lifecycle={"termination_grace_period_s": 5, "pre_stop": hook})
    event = runtime.wait_event(env, lambda e: e.reason == "FailedPreStop", 60, "FailedPreStop")
    if runtime.kind == "kubernetes":  # the kubelet's event says only "PreStopHook failed", output aside
        assert event.message == "PreStopHook failed", event.message
    else:
        assert f"stopping with {MASK}" in event.message, event.message
    assert_nothing_leaks(runtime, env, values)
