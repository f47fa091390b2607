"""The API server's refusals, as errors a person can act on (runtimes/kubernetes/errors.py)."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException

from cairn.runtimes.kubernetes.errors import translate

PSA = ('pods "shop-test-0-abc" is forbidden: violates PodSecurity "restricted:latest": runAsNonRoot != true '
       '(pod or container "app" must set securityContext.runAsNonRoot=true)')


def refusal(status: int, message: str) -> ApiException:
    exc = ApiException(status=status, reason="Forbidden")
    exc.body = json.dumps({"kind": "Status", "message": message})
    return exc


@pytest.mark.parametrize(("message", "said", "hint"), [
    pytest.param(PSA, "Pod Security admission refused the pod", "user:", id="a Pod Security refusal says to set a non-root user"),
    pytest.param('pods "x" is forbidden: exceeded quota: q, requested: cpu=1', "resource quota exceeded", "ResourceQuota",
                 id="a quota refusal says to raise the quota"),
    pytest.param('pods is forbidden: User "u" cannot create resource "pods"', "forbidden", "RBAC",
                 id="any other 403 is a missing permission"),
])
def test_a_403_names_its_cause_and_fix(message: str, said: str, hint: str) -> None:
    error = translate(refusal(403, message), "creating Pod shop-test-0-abc")
    assert said in error.message and message in error.message and hint in (error.hint or "")
