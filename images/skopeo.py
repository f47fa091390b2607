"""Running skopeo: its argv, its credentials (an auth file, never argv), its errors.

Credentials reach skopeo only as ``--src-authfile``/``--dest-authfile PATH``: a file of mode
0600 in a private temporary directory (0700) that is removed when the copy ends. argv is
readable by every user through /proc/PID/cmdline, and the environment through
/proc/PID/environ by the same user; a file in a 0700 directory is readable by root alone.
With no credentials skopeo is told ``--*-no-creds``, so it never falls back to whatever
auth.json or ~/.docker/config.json the host holds: what a pull may use is what cairn passes.

Plain HTTP (``--*-tls-verify=false``) is used for loopback registries only.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from cairn.errors import PermanentError, RuntimeFailure, TemporaryError
from cairn.images.credentials import Credentials
from cairn.images.reference import Reference
from cairn.redaction import redact

SKOPEO = "skopeo"
COPY_TIMEOUT_S = 600.0


@contextmanager
def auth_file(registry: str, credentials: Credentials) -> Iterator[Path]:
    """An auth.json for one registry, in a 0700 temp dir removed on exit."""
    with tempfile.TemporaryDirectory(prefix="cairn-auth-") as tmp:  # mkdtemp makes it 0700
        path = Path(tmp) / "auth.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"auths": {registry: {"auth": credentials.basic()}}}, fh)
        yield path


def copy_argv(src: str, dest: str, *, src_ref: Reference | None = None, dest_ref: Reference | None = None,
              src_authfile: Path | None = None, dest_authfile: Path | None = None,
              extra: list[str] | None = None, skopeo: str = SKOPEO) -> list[str]:
    """skopeo copy's argv. Takes auth *file paths*, never credentials: a secret cannot get in."""
    argv = [skopeo, "--insecure-policy", "copy", "--quiet"]
    # --insecure-policy: cairn checks what it pulls by digest (pinned at the order's snapshot),
    # so the host's /etc/containers/policy.json (absent on a fresh machine) is not consulted.
    for side, ref, authfile in (("src", src_ref, src_authfile), ("dest", dest_ref, dest_authfile)):
        if ref is None:
            continue
        argv += [f"--{side}-authfile", str(authfile)] if authfile else [f"--{side}-no-creds"]
        if ref.is_loopback:
            argv.append(f"--{side}-tls-verify=false")
    return [*argv, *(extra or []), src, dest]


def copy(src: str, dest: str, *, what: Reference, src_ref: Reference | None = None,
         dest_ref: Reference | None = None, src_credentials: Credentials | None = None,
         dest_credentials: Credentials | None = None, extra: list[str] | None = None,
         skopeo: str = SKOPEO) -> None:
    """Run ``skopeo copy``; translate a failure into cairn's error tree, naming ``what``."""
    secrets = [c.password for c in (src_credentials, dest_credentials) if c]
    with ExitStack() as stack:
        src_auth = stack.enter_context(auth_file(src_ref.registry, src_credentials)) \
            if (src_ref and src_credentials) else None
        dest_auth = stack.enter_context(auth_file(dest_ref.registry, dest_credentials)) \
            if (dest_ref and dest_credentials) else None
        argv = copy_argv(src, dest, src_ref=src_ref, dest_ref=dest_ref, src_authfile=src_auth,
                         dest_authfile=dest_auth, extra=extra, skopeo=skopeo)
        home = stack.enter_context(tempfile.TemporaryDirectory(prefix="cairn-skopeo-home-"))
        # A bare environment: no proxy or registry settings of the caller's, no credentials.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "XDG_RUNTIME_DIR": home,
               "TMPDIR": os.environ.get("TMPDIR", "/var/tmp")}
        try:
            done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=COPY_TIMEOUT_S,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise TemporaryError(f"skopeo copy of {what} took over {COPY_TIMEOUT_S:.0f}s",
                                 hint="the registry is slow or the image is large; retry") from None
        except FileNotFoundError:
            raise PermanentError(f"{skopeo} is missing", hint="apt-get install skopeo") from None
    if done.returncode != 0:
        raise translate(redact(done.stderr, secrets), what)


# skopeo reports registry errors as text (containers/image wraps the registry's error codes);
# these are the ones whose meaning is certain. Anything else is taken as temporary, with the text.
_NOT_FOUND = re.compile(r"manifest unknown|name unknown|NAME_UNKNOWN|MANIFEST_UNKNOWN|not found|"
                        r"no such image|does not exist", re.I)
_DENIED = re.compile(r"unauthorized|authentication required|denied|forbidden|invalid username/password", re.I)
_MISMATCH = re.compile(r"digest did not match|does not match digest|Digest did not match|"
                       r"manifest digest .* does not match|digests do not match", re.I)
_UNREACHABLE = re.compile(r"connection refused|no such host|i/o timeout|connection reset|"
                          r"TLS handshake timeout|network is unreachable|: EOF|timeout", re.I)


def translate(stderr: str, what: Reference) -> RuntimeFailure:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    detail = lines[-1][:400] if lines else "no output"
    if _MISMATCH.search(stderr):
        return PermanentError(f"image {what}: digest mismatch: {detail}",
                              hint="the registry served other bytes than the digest names; check the registry")
    if _DENIED.search(stderr):
        return PermanentError(f"image {what}: the registry refused access: {detail}",
                              hint="check the registry credentials (the Secret block's username and password)")
    if _UNREACHABLE.search(stderr):
        return TemporaryError(f"image {what}: registry {what.registry} unreachable: {detail}",
                              hint=f"is the registry at {what.registry} up? retry when it answers")
    if _NOT_FOUND.search(stderr):
        return PermanentError(f"image {what} not found: {detail}",
                              hint="check the name and tag, or push the image first")
    return TemporaryError(f"skopeo copy of {what} failed: {detail}", hint="retry; if it persists, see the message")
