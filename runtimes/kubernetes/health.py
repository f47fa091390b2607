"""What the health check gets, in the local runtime's words, for a FAILED or UNHEALTHY reason.

The kubelet's Unhealthy events say only "HTTP probe failed with statuscode: 500" (the body and an
exec probe's exit code are logged on the node, not in the API). A person needs what the check
got, so cairn asks once more, as the kubelet does: HTTP through the API server's pod proxy, exec
through the exec API. Health checks are side-effect free by definition, so asking again is safe.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from cairn.redaction import redact
from cairn.runtimes.kubernetes import manifests as m
from cairn.runtimes.kubernetes import stream


def _tail(text: str, limit: int = 200) -> str:
    text = " ".join(text.strip().split())
    return text if len(text) <= limit else "..." + text[-limit:]


def _probe(pod: dict[str, Any]) -> dict[str, Any] | None:
    for c in pod["spec"]["containers"]:
        if c["name"] == m.CONTAINER:
            return c.get("readinessProbe")
    return None


def _http(core: Any, namespace: str, pod: dict[str, Any], action: dict[str, Any], timeout_s: float, secrets: list[str]) -> str:
    from kubernetes.client.exceptions import ApiException

    port, path = action["port"], action.get("path", "/")
    what = f"HTTP GET :{port}{path}"
    try:
        response = core.connect_get_namespaced_pod_proxy_with_path(
            f"{pod['metadata']['name']}:{port}", namespace, path.lstrip("/"), _preload_content=False,
            _request_timeout=timeout_s + 5)
        status, body = response.status, response.data.decode(errors="replace")
    except ApiException as exc:
        status, body = exc.status, (exc.body or b"").decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or "")
        try:
            data = json.loads(body)
            if isinstance(data, dict) and data.get("kind") == "Status":  # the proxy itself failed
                return f"{what} failed: {_tail(redact(str(data.get('message', '')), secrets))}"
        except ValueError:
            pass
    return f'{what} answered {status} "{_tail(redact(body, secrets))}"'.replace("'", '"')


def _exec(core: Any, namespace: str, pod: dict[str, Any], command: list[str], timeout_s: float, secrets: list[str]) -> str:
    shown = shlex.join(command)
    result = stream.run(core, namespace, pod["metadata"]["name"], m.CONTAINER, command, timeout_s)
    if result.exit_code == 0:
        return f"exec [{shown}] exited 0"
    if result.exit_code == stream.TIMED_OUT:
        return f"exec [{shown}] timed out after {timeout_s:g}s"
    # Masked before it is folded and cut: a cut through a secret would leave a piece no rule matches.
    detail = _tail(redact(result.stderr or result.stdout, secrets)) or "(no output)"
    return f"exec [{shown}] exited {result.exit_code}: {detail}"


def check_now(core: Any, namespace: str, pod: dict[str, Any], secrets: list[str]) -> str | None:
    """Run the pod's health check once and say what it got, ``secrets`` masked; None when it cannot be asked."""
    probe = _probe(pod)
    if probe is None or not pod.get("status", {}).get("podIP"):
        return None
    timeout = float(probe.get("timeoutSeconds", 1))
    try:
        if "httpGet" in probe:
            return _http(core, namespace, pod, probe["httpGet"], timeout, secrets)
        if "exec" in probe:
            return _exec(core, namespace, pod, probe["exec"]["command"], timeout, secrets)
    except Exception:  # noqa: BLE001 - the reason falls back to the kubelet's own words
        return None
    return None


def kubelet_said(events: list[dict[str, Any]], name: str) -> str | None:
    """The newest Unhealthy message about ``name`` (what the kubelet saw)."""
    mine = [e for e in events if e["involvedObject"]["name"] == name and e.get("reason") == "Unhealthy"]
    if not mine:
        return None
    from cairn.runtimes.kubernetes.observe import sort_key

    return str(max(mine, key=sort_key).get("message", "")).strip() or None
