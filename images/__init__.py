"""OCI images for cairn: a registry on loopback, the project's own image builder, and the
content-addressed store the local runtime pulls into and unpacks from.

    reference.py  parse ``registry/name:tag`` / ``name@sha256:...`` (the distribution grammar)
    registry.py   Debian's docker-registry on 127.0.0.1, started and stopped by cairn
    distribution.py  the registry HTTP API client (httpx): a tag to its manifest digest
    credentials.py  a username/password pair from a Secret block (never shown)
    skopeo.py     skopeo's argv, its auth file (credentials never in argv) and its errors
    layout.py     a reproducible OCI image layout writer (sorted tars, fixed mtimes, no owners)
    rootfs.py     the Python base rootfs, copied from this host's Debian packages
    build.py      builds cairn/python:3.11 and cairn/demo-app:<version>, pushes them
    store.py      resolve -> pull (by digest) -> unpack (once per digest)

Plain I/O, no Prefect: it sits below the runtimes in the layers (pyproject.toml), so the local
runtime, the tests and the demo all use one image builder and one store.
"""
