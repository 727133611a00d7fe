"""What every CLI command shares: the typer apps, running against the database, and output.

`run(work)` loads the settings and connects first, so an operator's mistake (a bad setting,
an unreachable database) is one line naming the setting and exit code 2; an error from the
operation itself (unknown account, refused amount, unmigrated schema) is one line and exit 1.
No command prints a traceback for either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, NoReturn, TypeVar

import typer
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError

from app.admin.reports import Reports
from app.admin.schemas import Page
from app.db.engine import engine_for
from app.db.faults import DatabaseUnavailable
from app.errors import GatewayError
from app.keys.service import KeyService
from app.ledger.service import Ledger
from app.money import MoneyError, micros_to_decimal, parse_usd
from app.preflight import SetupError, check_database, load_settings, muted
from app.settings import Settings
from app.webhooks.destinations import DestinationPolicy
from app.webhooks.dispatcher import DeliveryPolicy, Dispatcher, make_client
from app.webhooks.service import WebhookService

T = TypeVar("T")
R = TypeVar("R")

#: exit codes: 1 the operation was refused, 2 the setup (settings, files, services) is wrong
EXIT_REFUSED = 1
EXIT_SETUP = 2

cli = typer.Typer(
    name="image-gateway",
    help="OpenAI-compatible image generation gateway.",
    no_args_is_help=True,
    add_completion=False,
)
accounts_cli = typer.Typer(help="Prepaid accounts.", no_args_is_help=True)
keys_cli = typer.Typer(help="API keys.", no_args_is_help=True)
config_cli = typer.Typer(help="The model catalog.", no_args_is_help=True)
webhooks_cli = typer.Typer(help="Webhook endpoints and deliveries.", no_args_is_help=True)
cli.add_typer(accounts_cli, name="accounts")
cli.add_typer(keys_cli, name="keys")
cli.add_typer(config_cli, name="config")
cli.add_typer(webhooks_cli, name="webhooks")

Json = Annotated[bool, typer.Option("--json", help="Print JSON (the admin API's shapes).")]
Limit = Annotated[int, typer.Option(min=1, max=500, help="Page size.")]
Cursor = Annotated[str | None, typer.Option(help="next_cursor of the previous page.")]


@dataclass(frozen=True, slots=True)
class Services:
    ledger: Ledger
    keys: KeyService
    reports: Reports
    settings: Settings
    webhooks: WebhookService


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SetupError as exc:
        setup_failed(exc)


def run(work: Callable[[Services], Awaitable[T]]) -> T:
    """Run one operation against the configured database (see the module docstring)."""
    settings = settings_or_exit()

    async def go() -> T:
        await check_database(settings)
        engine = engine_for(settings)
        destinations = DestinationPolicy(
            allow_http=settings.webhook_allow_http, allow_private=settings.webhook_allow_private
        )
        client = make_client(
            timeout_s=settings.webhook_timeout_s, ca_bundle=settings.webhook_ca_bundle
        )
        dispatcher = Dispatcher(
            engine, client, destinations=destinations, policy=DeliveryPolicy.from_settings(settings)
        )
        services = Services(
            Ledger(engine),
            KeyService(engine),
            Reports(engine),
            settings,
            WebhookService(engine, dispatcher, destinations),
        )
        try:
            return await work(services)
        finally:
            await client.aclose()
            await engine.dispose()

    try:
        with muted("app.db.faults"):  # the one `error:` line below says it
            return asyncio.run(go())
    except SetupError as exc:
        setup_failed(exc)
    except DatabaseUnavailable as exc:
        fail(f"database unavailable: {exc.__cause__ or exc.message}")
    except GatewayError as exc:
        fail(exc.message)
    except DBAPIError as exc:
        fail(f"database: {exc.orig} (was `image-gateway migrate` run on DATABASE_URL?)")


def fail(message: str, code: int = EXIT_REFUSED) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def setup_failed(exc: SetupError) -> NoReturn:
    fail(str(exc), EXIT_SETUP)


def print_json(model: BaseModel) -> None:
    typer.echo(model.model_dump_json(by_alias=True, indent=2))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """An aligned table; with no rows, just the header line."""
    cells = [[("-" if cell is None else str(cell)) for cell in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    for row in [list(headers), *cells]:
        padded = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        typer.echo("  ".join(padded).rstrip())


def print_more(next_cursor: str | None) -> None:
    if next_cursor:
        typer.echo(f"more: --cursor {next_cursor}", err=True)


def print_one(
    record: R, *, as_json: bool, out: Callable[[R], BaseModel], table: Callable[[Sequence[R]], None]
) -> None:
    """One record: the admin API's body for it (`--json`), or a table of one row."""
    if as_json:
        print_json(out(record))
    else:
        table([record])


def print_page(
    records: Sequence[R],
    next_cursor: str | None,
    *,
    as_json: bool,
    out: Callable[[R], BaseModel],
    table: Callable[[Sequence[R]], None],
) -> None:
    """A list command's page: the admin API's `Page` (`--json`), or a table and, on stderr,
    the cursor of the next page."""
    if as_json:
        print_json(Page(data=[out(record) for record in records], next_cursor=next_cursor))
        return
    table(records)
    print_more(next_cursor)


def usd(micros: int) -> str:
    return format(micros_to_decimal(micros), "f")


def when(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def parse_time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option}: not an ISO 8601 date or time: {value!r}")
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def parse_amount(value: str, option: str) -> int:
    try:
        return parse_usd(value)
    except MoneyError as exc:
        fail(f"{option}: {exc}")
