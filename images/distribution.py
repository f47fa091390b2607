"""The registry HTTP API (OCI distribution spec), as far as cairn reads it: manifests.

``manifest_digest`` turns a tag into the digest a revision pins; ``fetch_manifest`` reads a
manifest by digest and checks its bytes hash to that digest. Authentication follows the
registry's challenge: Basic with the given credentials, or a Bearer token fetched from the
challenge's realm with them (how Docker Hub, GHCR and distribution's token auth work).
httpx errors and HTTP statuses become cairn's ``PermanentError``/``TemporaryError`` here.
"""

from __future__ import annotations

import hashlib
import re

import httpx

from cairn.errors import PermanentError, TemporaryError
from cairn.images.credentials import Credentials
from cairn.images.reference import Reference

TIMEOUT_S = 10.0
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
# Every manifest kind cairn can run: without these the registry may answer with (or convert
# to) a schema 1 manifest, whose digest is not the one `docker push` or skopeo reported.
ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST))
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


def manifest_digest(ref: Reference, credentials: Credentials | None = None) -> str:
    """The digest of the manifest ``ref``'s tag points at now (``Docker-Content-Digest``)."""
    if ref.digest:
        return ref.digest
    url = f"{ref.base_url}/v2/{ref.name}/manifests/{ref.tag}"
    with _client(ref) as client:
        response = _request(client, "HEAD", url, ref, credentials)
        digest = response.headers.get("Docker-Content-Digest")
        if digest and re.fullmatch(r"sha256:[a-f0-9]{64}", digest):
            return str(digest)
        # The header is optional in the spec: the digest is then the hash of the body itself.
        response = _request(client, "GET", url, ref, credentials)
        return "sha256:" + hashlib.sha256(response.content).hexdigest()


def fetch_manifest(ref: Reference, credentials: Credentials | None = None) -> tuple[str, bytes]:
    """``(media type, bytes)`` of the manifest ``ref.digest`` names, verified against it."""
    if not ref.digest:
        raise ValueError("fetch_manifest needs a reference with a digest")
    url = f"{ref.base_url}/v2/{ref.name}/manifests/{ref.digest}"
    with _client(ref) as client:
        response = _request(client, "GET", url, ref, credentials)
    actual = "sha256:" + hashlib.sha256(response.content).hexdigest()
    if actual != ref.digest:
        raise PermanentError(f"image {ref}: digest mismatch: the registry served a manifest hashing to {actual}",
                             hint="the registry does not serve the bytes this digest names; check the registry")
    return response.headers.get("Content-Type", "").split(";")[0].strip(), response.content


def _client(ref: Reference) -> httpx.Client:
    return httpx.Client(timeout=TIMEOUT_S, headers={"Accept": ACCEPT}, follow_redirects=True)


def _request(client: httpx.Client, method: str, url: str, ref: Reference,
             credentials: Credentials | None) -> httpx.Response:
    try:
        response = client.request(method, url)
        if response.status_code == 401:
            auth = _authorization(client, response.headers.get("WWW-Authenticate", ""), ref, credentials)
            if auth:
                response = client.request(method, url, headers={"Authorization": auth})
    except (httpx.TransportError, httpx.TimeoutException) as exc:
        raise TemporaryError(f"image {ref}: registry {ref.registry} unreachable: {type(exc).__name__}: {exc}",
                             hint=f"is the registry at {ref.registry} up? retry when it answers") from None
    _check(response, ref)
    return response


def _authorization(client: httpx.Client, challenge: str, ref: Reference,
                   credentials: Credentials | None) -> str | None:
    scheme = challenge.split(" ", 1)[0].lower()
    if scheme == "basic":
        return f"Basic {credentials.basic()}" if credentials else None
    if scheme != "bearer":
        return None
    params = dict(_CHALLENGE_PARAM.findall(challenge))
    realm = params.pop("realm", None)
    if not realm:
        return None
    params.setdefault("scope", f"repository:{ref.name}:pull")
    headers = {"Authorization": f"Basic {credentials.basic()}"} if credentials else {}
    token_response = client.get(realm, params=params, headers=headers)
    if token_response.status_code in (401, 403):
        raise _denied(ref)
    _check(token_response, ref)
    body = token_response.json()
    token = body.get("token") or body.get("access_token")
    return f"Bearer {token}" if token else None


def _check(response: httpx.Response, ref: Reference) -> None:
    status = response.status_code
    if status < 400:
        return
    if status == 404:
        raise PermanentError(f"image {ref} not found in registry {ref.registry}",
                             hint="check the name and tag (or digest), or push the image first")
    if status in (401, 403):
        raise _denied(ref)
    if status == 429 or status >= 500:
        raise TemporaryError(f"image {ref}: registry {ref.registry} answered {status}",
                             hint="the registry is busy or failing; retry")
    raise PermanentError(f"image {ref}: registry {ref.registry} refused the request ({status})",
                         hint="check the reference")


def _denied(ref: Reference) -> PermanentError:
    return PermanentError(f"image {ref}: registry {ref.registry} refused access",
                          hint="check the registry credentials (the Secret block's username and password)")
