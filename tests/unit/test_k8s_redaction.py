"""What the kubernetes runtime reads from the cluster, secrets masked: pod statuses before they are
read or cut, the values a Secret holds, and a kubeconfig that cannot be used."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from cairn.errors import PermanentError
from cairn.redaction import MASK
from cairn.runtime import Phase
from cairn.runtimes.kubernetes.api import client_for, decoded
from cairn.runtimes.kubernetes.observe import classify, redacted, says_something, uses_secrets
from tests.unit.test_k8s_observe import NOW, pod

VALUE = "s3cr3t-0123456789abcdef"
PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n-----END PRIVATE KEY-----"


def crashed(message: str) -> dict[str, Any]:
    return pod({"state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "message": message}}})


@pytest.mark.parametrize(("message", "secrets", "shown"), [
    pytest.param(f"connecting with {VALUE}\nrefused", [VALUE], "Error: exited with code 1 (refused)",
                 id="a termination message keeps its last line, with the secret masked on the others"),
    pytest.param(f"refused for {VALUE}", [VALUE], f"Error: exited with code 1 (refused for {MASK})",
                 id="a secret on the last line of a termination message is masked"),
    pytest.param("x" * 290 + f" {VALUE}", [VALUE], "Error: exited with code 1 (" + "x" * 290 + f" {MASK})",
                 id="a secret is masked before the reason is cut to length, so no piece of it is left"),
    pytest.param(VALUE[7:] + " and then it died", [VALUE], f"Error: exited with code 1 ({MASK} and then it died)",
                 id="a termination message that starts inside a secret (the kubelet kept its end) loses that piece"),
    pytest.param(f"key:\n{PEM}\nbad key", [PEM], "Error: exited with code 1 (bad key)",
                 id="a PEM key printed line by line leaves none of its lines"),
    pytest.param(PEM.splitlines()[1], [PEM], f"Error: exited with code 1 ({MASK})",
                 id="one line of a PEM key alone is masked"),
])
def test_a_pods_messages_are_masked_before_they_are_read(message: str, secrets: list[str], shown: str) -> None:
    p = crashed(message)
    verdict = classify(redacted(p, secrets), NOW)
    assert (verdict.phase, verdict.reason) == (Phase.BACKOFF, shown)
    assert p["status"]["containerStatuses"][0]["lastState"]["terminated"]["message"] == message, "the pod read is not changed"


def test_without_secrets_a_pod_is_read_as_it_is() -> None:
    p = crashed(f"x {VALUE}")
    assert redacted(p, []) is p


@pytest.mark.parametrize(("spec", "uses"), [
    pytest.param({"containers": [{"name": "app", "env": [{"name": "A", "value": "1"}]}]}, False, id="plain env values are no secrets"),
    pytest.param({"containers": [{"name": "app", "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "A"}}}]}]},
                 True, id="a secret_env variable is a secret"),
    pytest.param({"containers": [{"name": "app"}], "imagePullSecrets": [{"name": "p"}]}, True, id="a registry login is a secret"),
])
def test_which_pods_were_given_secrets(spec: dict[str, Any], uses: bool) -> None:
    assert uses_secrets({"metadata": {"name": "x"}, "spec": spec}) is uses


def test_a_pod_says_something_when_its_status_holds_a_message() -> None:
    assert says_something(crashed("boom"))
    assert not says_something(pod({"state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}))


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(("secret", "values"), [
    pytest.param({"type": "Opaque", "data": {"DB_PASSWORD": b64(VALUE), "KEY": b64(PEM)}}, [VALUE, PEM],
                 id="each secret_env value is a value"),
    pytest.param({"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": b64(json.dumps(
        {"auths": {"registry.example:5000": {"auth": b64("robot:pull-pass-1234")}}}))}},
        [b64("robot:pull-pass-1234"), "robot:pull-pass-1234", "pull-pass-1234"],
        id="a registry login gives its password and its encoded form, not the JSON around them"),
    pytest.param({"type": "Opaque"}, [], id="a Secret without data gives nothing"),
])
def test_the_values_a_secret_holds(secret: dict[str, Any], values: list[str]) -> None:
    assert decoded(secret) == values


TOKEN = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2Vu.sig"
BROKEN_KUBECONFIGS = [
    pytest.param(f"apiVersion: v1\nusers:\n- name: admin\n  user:\n    token: {TOKEN}\n\tbad: indent\n", "line 6, column 1",
                 id="a kubeconfig that is not YAML is placed by line and column without quoting the line"),
    pytest.param(f"users: [{{name: admin, user: {{token: {TOKEN}}}\n", "not valid YAML",
                 id="an unclosed flow mapping is reported without quoting the token"),
    pytest.param(f"apiVersion: v1\nkind: Config\nusers:\n- name: admin\n  user:\n    token: {TOKEN}\ncontexts: []\n", "current-context",
                 id="a kubeconfig the client refuses is reported in the client's words"),
    pytest.param("a: [1, 2\n", "expected ',' or ']', but got '<stream end>'", id="what YAML expected is said, quotes and all"),
    pytest.param(f"token: {TOKEN}\nb: @x\n", "found character '…' that cannot start any token",
                 id="a character YAML found is not quoted: it is a piece of the content"),
    pytest.param(f"- {TOKEN}\n", "not a kubeconfig document", id="a YAML list is no kubeconfig"),
]


@pytest.mark.parametrize(("text", "said"), BROKEN_KUBECONFIGS)
def test_a_kubeconfig_that_cannot_be_used_is_reported_without_its_content(text: str, said: str) -> None:
    with pytest.raises(PermanentError) as caught:
        client_for(text, None)
    message = str(caught.value)
    assert said in message, message
    assert TOKEN not in message and "c2VjcmV0LXRva2Vu" not in message and "bad: indent" not in message, message
    assert message.startswith("cannot use the kubeconfig"), message


PLUGIN = f"""apiVersion: v1
kind: Config
current-context: c
clusters: [{{name: k, cluster: {{server: "https://127.0.0.1:1"}}}}]
contexts: [{{name: c, context: {{cluster: k, user: u}}}}]
users:
- name: u
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: sh
      args: [-c, 'echo "login refused for $TOKEN" >&2; exit 1']
      env: [{{name: TOKEN, value: {TOKEN}}}]
      interactiveMode: Never
"""


def test_what_a_credential_plugin_prints_is_logged_with_the_kubeconfigs_values_masked(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("ERROR"):
        client_for(PLUGIN, None)
    said = [r.getMessage() for r in caplog.records if "login refused" in r.getMessage()]
    assert said == [f"exec: process returned 1. login refused for {MASK}"], said
