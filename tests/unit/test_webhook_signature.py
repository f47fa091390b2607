"""The webhook's signature, freshness and payload checks (no server needed)."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from cairn.webhook.server import MAX_SKEW_S, Refusal, parse, sign, verify

SECRET = "s3cret-for-tests-only"
NOW = 1_700_000_000
BODY = json.dumps({"app": "shop", "environment": "test", "version": "v2"}).encode()


def headers(body: bytes = BODY, *, delivery: str = "d-1", stamp: int = NOW, secret: str = SECRET) -> dict[str, str]:
    return {"x-cairn-delivery": delivery, "x-cairn-timestamp": str(stamp), "x-cairn-signature": sign(secret, stamp, delivery, body)}


def test_signature_is_hmac_sha256_over_timestamp_delivery_and_body() -> None:
    expected = hmac.new(SECRET.encode(), f"{NOW}.d-1.".encode() + BODY, hashlib.sha256).hexdigest()
    assert headers()["x-cairn-signature"] == f"sha256={expected}"
    assert verify(SECRET, headers(), BODY, now=NOW) == "d-1"


@pytest.mark.parametrize("case", ["unsigned", "tampered-body", "wrong-secret", "new-delivery-id", "new-timestamp", "stale", "future",
                                  "bad-delivery", "bad-timestamp", "not-hex"])
def test_refused_with_401(case: str) -> None:
    h, body, now = headers(), BODY, NOW
    if case == "unsigned":
        del h["x-cairn-signature"]
    elif case == "tampered-body":
        body = BODY.replace(b"v2", b"v3")
    elif case == "wrong-secret":
        h = headers(secret="another-secret-entirely")
    elif case == "new-delivery-id":  # a captured signature cannot be reused under another delivery id
        h["x-cairn-delivery"] = "d-2"
    elif case == "new-timestamp":  # ... nor refreshed with a new timestamp
        h["x-cairn-timestamp"] = str(NOW + 60)
    elif case == "stale":
        now = NOW + MAX_SKEW_S + 1
    elif case == "future":
        now = NOW - MAX_SKEW_S - 1
    elif case == "bad-delivery":
        h = headers(delivery="has spaces/and slashes")
    elif case == "bad-timestamp":
        h["x-cairn-timestamp"] = "yesterday"
    elif case == "not-hex":
        h["x-cairn-signature"] = "sha256=zz"
    with pytest.raises(Refusal) as err:
        verify(SECRET, h, body, now=now)
    assert err.value.status == 401 and err.value.reason


def test_fresh_within_five_minutes() -> None:
    assert verify(SECRET, headers(), BODY, now=NOW + MAX_SKEW_S) == "d-1"


@pytest.mark.parametrize("payload", [b"not json", b'{"app": "shop"}', b'{"app": "shop", "environment": "staging", "version": "v1"}',
                                     b'{"app": "shop", "environment": "test", "version": "v1", "batches": 0}',
                                     b'{"app": "shop", "environment": "test", "version": "v1", "pause_mode": "sometimes"}',
                                     b'{"app": "shop", "environment": "test", "version": "v1", "extra": 1}'])
def test_invalid_payload_is_422_with_the_field(payload: bytes) -> None:
    with pytest.raises(Refusal) as err:
        parse(payload)
    assert err.value.status == 422 and err.value.detail and err.value.detail["problems"]


def test_valid_payload_defaults() -> None:
    req = parse(BODY)
    assert (req.app, req.environment, req.version, req.batches, req.pause_mode) == ("shop", "test", "v2", 2, "first_batch")
