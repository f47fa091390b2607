"""Reaching the components over loopback: their health endpoints, and whether a port is free."""

from __future__ import annotations

import socket
import ssl
import urllib.error
import urllib.request

from layout import cdir


def https_get(url: str, cluster: str | None = None, client: str | None = "admin") -> tuple[int, str]:
    ctx = ssl.create_default_context()
    if cluster:
        ctx.load_verify_locations(cdir(cluster) / "pki" / "ca.crt")
        if client:
            pki = cdir(cluster) / "pki"
            ctx.load_cert_chain(pki / f"{client}.crt", pki / f"{client}.key")
    else:  # components' self-signed serving certs: only loopback health checks use this
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def http_get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.read().decode(errors="replace")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False
