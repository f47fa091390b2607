"""``cairn webhook serve``: the signed HTTP endpoint CI systems call to start releases."""

from __future__ import annotations

from typing import Annotated

import typer

webhook_app = typer.Typer(help="A signed webhook that starts releases (for CI systems).", no_args_is_help=True)


@webhook_app.command("serve")
def serve(host: Annotated[str, typer.Option("--host", help="Listen address.")] = "127.0.0.1",
          port: Annotated[int, typer.Option("--port", help="Listen port.")] = 8787) -> None:
    """Serve POST /releases (HMAC-SHA256 signed, see `cairn.webhook.server`) until interrupted.

    Requests carry X-Cairn-Delivery, X-Cairn-Timestamp and X-Cairn-Signature: sha256=HMAC(secret,
    "<timestamp>.<delivery>." + body), with the secret from `cairn secret set webhook-secret`."""
    from cairn.webhook.server import serve as run

    run(host, port)
