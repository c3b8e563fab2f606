"""``dataforge serve``: the operator console (JSON API, pages, /metrics) under uvicorn.

One process next to beat and the workers, on the same settings. Without
``DATAFORGE_API_TOKEN`` it listens on loopback only and refuses any other ``--host`` (exit 2):
an open console beyond this machine would let anyone edit and run schedules.
"""

from __future__ import annotations

import click

from dataforge.cli.common import CliContext, pass_cli

__all__ = ["serve"]


@click.command("serve")
@click.option("--host", metavar="ADDRESS",
              help="Address to listen on [default: DATAFORGE_WEB_HOST or 127.0.0.1]. Anything beyond loopback "
                   "needs DATAFORGE_API_TOKEN.")
@click.option("--port", type=click.IntRange(1, 65535), metavar="PORT",
              help="Port to listen on [default: DATAFORGE_WEB_PORT or 8080].")
@pass_cli
def serve(cli: CliContext, host: str | None, port: int | None) -> None:
    """Run the web console: schedules, executions, tasks, the legacy switch, and a JSON API.

    Pages at /, the API under /api (described at /openapi.json), Prometheus metrics at
    /metrics, and /healthz (open) for load balancers. With DATAFORGE_API_TOKEN set, the API
    and /metrics need `Authorization: Bearer <token>` and the pages a login. Every write goes
    through the same checks as `dataforge schedules`. Stops on Ctrl-C or SIGTERM.
    """
    import uvicorn

    from dataforge.web.auth import check_bind
    from dataforge.web.errors import UnsafeBindError

    settings = cli.settings
    address = (host or settings.web_host).strip()
    try:
        check_bind(address, settings.api_token)
    except UnsafeBindError as exc:
        raise click.BadParameter(str(exc), param_hint="--host") from exc
    from dataforge.web import create_web_app

    web = create_web_app(settings)
    shown = f"[{address}]" if ":" in address else address
    where = port or settings.web_port
    access = "token required (DATAFORGE_API_TOKEN)" if settings.api_token else "no token: loopback only"
    click.echo(f"dataforge console on http://{shown}:{where}/ ({access}); API under /api, metrics at /metrics",
               err=True)
    uvicorn.run(web, host=address, port=where, server_header=False, timeout_graceful_shutdown=5, log_level="info")
