"""`image-gateway serve|migrate|config check`: the commands that start or check a gateway.

`config check` and `serve` run the same `app.preflight` checks, so a file that passes the one
starts the other; `config check` prints each catalog warning once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from app.cli.common import (
    EXIT_SETUP,
    Json,
    cli,
    config_cli,
    fail,
    print_table,
    settings_or_exit,
    setup_failed,
)
from app.preflight import SetupError, check_catalog, describe_database


@cli.command()
def serve(
    host: Annotated[
        str,
        typer.Option(envvar="GATEWAY_HOST", help="Interface to bind (0.0.0.0 for every one)."),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar="GATEWAY_PORT", min=0, max=65535, help="TCP port.")
    ] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            envvar="GATEWAY_WORKERS",
            min=1,
            help="Worker processes on one socket (SIGHUP to the parent reloads every worker's "
            "catalog).",
        ),
    ] = 1,
) -> None:
    """Check the setup, migrate the database and serve the API (demo key on first SQLite start)."""
    from app.server import run_server  # uvicorn and the whole app only when serving

    settings = settings_or_exit()
    try:
        run_server(settings, host, port, workers)
    except SetupError as exc:
        setup_failed(exc)


@cli.command()
def migrate() -> None:
    """Apply the database migrations (Alembic) to DATABASE_URL."""
    from app.db.migrate import upgrade
    from app.preflight import check_services

    settings = settings_or_exit()
    try:
        check_services(settings)
        upgrade(settings.database_url)
    except SetupError as exc:
        setup_failed(exc)
    typer.echo(f"migrated {describe_database(settings.database_url)}")


@config_cli.command("check")
def config_check(
    path: Annotated[
        Path | None, typer.Option("--config", help="Catalog file (default GATEWAY_CONFIG).")
    ] = None,
    as_json: Json = False,
) -> None:
    """Validate the catalog exactly as `serve` does; list the usable models and any warnings."""
    settings = settings_or_exit()
    if path is not None:
        settings = settings.model_copy(update={"gateway_config": path})
    try:
        catalog = check_catalog(settings)
    except SetupError as exc:
        fail(str(exc), EXIT_SETUP)
    models = [
        {
            "id": model.id,
            "owned_by": model.config.owned_by,
            "sizing": model.sizing,
            "routes": [route.provider for route in model.routes],
        }
        for model in catalog.models.values()
    ]
    if as_json:
        typer.echo(json.dumps({"models": models, "warnings": catalog.warnings}, indent=2))
        return
    print_table(
        ["MODEL", "OWNED_BY", "SIZING", "ROUTES"],
        [[m["id"], m["owned_by"], m["sizing"], ",".join(m["routes"])] for m in models],
    )
    for warning in catalog.warnings:
        typer.echo(f"warning: {warning}", err=True)
