"""`image-gateway`: run the server and operate accounts, keys and usage from a shell.

The operator commands talk to the database named by `DATABASE_URL` directly, through the same
services the admin API uses (`Ledger`, `KeyService`, `Reports`), so a rule lives in one place
and the two front ends cannot disagree. `--json` prints exactly the admin API's JSON for the
same object; without it the output is a plain aligned table for people.

Notes for operators:
- Amounts are decimal USD (`10`, `0.25`); finer than one micro-dollar is refused. A negative
  adjustment needs `--` so it is not read as an option: `accounts credit ID -- -5`.
- Times (`--expires-at`, `--from`, `--to`) are ISO 8601; without a zone they are UTC.
- A key revoked or rotated here stops on running servers within `GATEWAY_KEY_CACHE_TTL_S`
  (the CLI is another process and cannot clear their caches); use the admin API for "at once".
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError

from app.admin.reports import GroupBy, Reports, RequestFilter, usage_total
from app.admin.schemas import (
    AccountOut,
    CreditOut,
    KeyOut,
    KeyWithSecret,
    Page,
    UsageOut,
)
from app.db.engine import make_engine
from app.errors import GatewayError
from app.keys.repository import KeyRecord
from app.keys.service import KeyService
from app.ledger.budgets import Budget, BudgetUsage
from app.ledger.records import AccountRecord
from app.ledger.service import Ledger
from app.money import MoneyError, micros_to_decimal, parse_usd
from app.settings import Settings

T = TypeVar("T")

cli = typer.Typer(
    name="image-gateway",
    help="OpenAI-compatible image generation gateway.",
    no_args_is_help=True,
    add_completion=False,
)
accounts_cli = typer.Typer(help="Prepaid accounts.", no_args_is_help=True)
keys_cli = typer.Typer(help="API keys.", no_args_is_help=True)
config_cli = typer.Typer(help="The model catalog.", no_args_is_help=True)
cli.add_typer(accounts_cli, name="accounts")
cli.add_typer(keys_cli, name="keys")
cli.add_typer(config_cli, name="config")

Json = Annotated[bool, typer.Option("--json", help="Print JSON (the admin API's shapes).")]
Limit = Annotated[int, typer.Option(min=1, max=500, help="Page size.")]
Cursor = Annotated[str | None, typer.Option(help="next_cursor of the previous page.")]


def main() -> None:
    cli()


# running ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Services:
    ledger: Ledger
    keys: KeyService
    reports: Reports


def _run(work: Callable[[Services], Awaitable[T]]) -> T:
    """Run one operation against the configured database; errors exit 1 with their message."""

    async def run() -> T:
        engine = make_engine(Settings().database_url)
        try:
            return await work(Services(Ledger(engine), KeyService(engine), Reports(engine)))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except GatewayError as exc:
        _fail(exc.message)
    except DBAPIError as exc:
        _fail(f"database: {exc.orig} (is DATABASE_URL right, and was `image-gateway migrate` run?)")


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _print_json(model: BaseModel) -> None:
    typer.echo(model.model_dump_json(by_alias=True, indent=2))


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[("-" if cell is None else str(cell)) for cell in row] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    for row in [list(headers), *cells]:
        padded = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        typer.echo("  ".join(padded).rstrip())


def _usd(micros: int) -> str:
    return format(micros_to_decimal(micros), "f")


def _when(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _parse_time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        _fail(f"{option}: not an ISO 8601 date or time: {value!r}")
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _parse_amount(value: str, option: str) -> int:
    try:
        return parse_usd(value)
    except MoneyError as exc:
        _fail(f"{option}: {exc}")


# serve / migrate / config -------------------------------------------------------------------
@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Migrate the database and serve the API (creates the demo key on first SQLite start)."""
    from app.server import run_server  # uvicorn and the whole app only when serving

    run_server(host, port, workers)


@cli.command()
def migrate() -> None:
    """Apply the database migrations (Alembic) to DATABASE_URL."""
    from sqlalchemy.engine import make_url

    from app.db.migrate import upgrade

    url = Settings().database_url
    upgrade(url)
    typer.echo(f"migrated {make_url(url).render_as_string(hide_password=True)}")


@config_cli.command("check")
def config_check(
    path: Annotated[
        Path | None, typer.Option("--config", help="Catalog file (default GATEWAY_CONFIG).")
    ] = None,
    as_json: Json = False,
) -> None:
    """Validate the catalog as start-up would; list the usable models and any warnings."""
    import json

    from app.catalog.errors import CatalogError
    from app.catalog.loader import load_catalog

    path = path or Settings().gateway_config
    try:
        catalog = load_catalog(path, os.environ)
    except CatalogError as exc:
        _fail(str(exc))
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
    _print_table(
        ["MODEL", "OWNED_BY", "SIZING", "ROUTES"],
        [[m["id"], m["owned_by"], m["sizing"], ",".join(m["routes"])] for m in models],
    )
    for warning in catalog.warnings:
        typer.echo(f"warning: {warning}", err=True)


# accounts -----------------------------------------------------------------------------------
def _show_accounts(records: Sequence[AccountRecord]) -> None:
    _print_table(
        ["ID", "NAME", "BALANCE", "STATUS", "CREATED"],
        [[a.id, a.name, _usd(a.balance_micros), a.status, _when(a.created_at)] for a in records],
    )


@accounts_cli.command("create")
def accounts_create(
    name: str,
    balance: Annotated[str, typer.Option(help="Opening balance in USD.")] = "0",
    as_json: Json = False,
) -> None:
    """Create an account (an opening balance is its first ledger row)."""
    micros = _parse_amount(balance, "--balance")
    account = _run(lambda s: s.ledger.create_account(name=name, balance_micros=micros))
    if as_json:
        _print_json(AccountOut.of(account))
    else:
        _show_accounts([account])


@accounts_cli.command("list")
def accounts_list(limit: Limit = 50, cursor: Cursor = None, as_json: Json = False) -> None:
    """List accounts in creation order."""
    records, next_cursor = _run(lambda s: s.reports.list_accounts(limit=limit, cursor=cursor))
    if as_json:
        _print_json(Page(data=[AccountOut.of(a) for a in records], next_cursor=next_cursor))
        return
    _show_accounts(records)
    if next_cursor:
        typer.echo(f"more: --cursor {next_cursor}", err=True)


@accounts_cli.command("show")
def accounts_show(account_id: str, as_json: Json = False) -> None:
    """Show one account."""
    account = _run(lambda s: s.ledger.get_account(account_id))
    if as_json:
        _print_json(AccountOut.of(account))
    else:
        _show_accounts([account])


@accounts_cli.command("update")
def accounts_update(
    account_id: str,
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    status: Annotated[str | None, typer.Option(help="active or suspended.")] = None,
    as_json: Json = False,
) -> None:
    """Rename, suspend or reactivate an account."""
    account = _run(lambda s: s.ledger.update_account(account_id, name=name, status=status))
    if as_json:
        _print_json(AccountOut.of(account))
    else:
        _show_accounts([account])


@accounts_cli.command("credit")
def accounts_credit(
    account_id: str,
    amount: Annotated[str, typer.Argument(help="USD; negative (after --) to adjust down.")],
    note: Annotated[str | None, typer.Option(help="Why (kept in the ledger).")] = None,
    as_json: Json = False,
) -> None:
    """Top up (or adjust) a balance; prints the new balance."""
    micros = _parse_amount(amount, "AMOUNT")
    row = _run(lambda s: s.ledger.credit(account_id=account_id, amount_micros=micros, note=note))
    if as_json:
        _print_json(CreditOut.of(row))
        return
    _print_table(
        ["ACCOUNT", "KIND", "AMOUNT", "BALANCE", "NOTE"],
        [[row.account_id, row.kind, _usd(row.amount_micros), _usd(row.balance_after_micros),
          row.note]],
    )  # fmt: skip


# keys ---------------------------------------------------------------------------------------
def _key_status(record: KeyRecord) -> str:
    if record.revoked:
        return "revoked"
    if record.expires_at is not None and record.expires_at <= datetime.now(UTC):
        return "expired"
    return "active"


def _show_keys(records: Sequence[KeyRecord]) -> None:
    _print_table(
        ["ID", "ACCOUNT", "NAME", "PREFIX", "MODELS", "RPM", "CONCURRENCY", "EXPIRES", "STATUS"],
        [
            [k.id, k.account_id, k.name, k.prefix, ",".join(k.models) if k.models else "*",
             k.rpm, k.max_concurrency, _when(k.expires_at), _key_status(k)]
            for k in records
        ],
    )  # fmt: skip


def _show_secret(
    record: KeyRecord, secret: str, as_json: bool, budgets: list[BudgetUsage] | None = None
) -> None:
    if as_json:
        _print_json(KeyWithSecret.with_secret(record, secret, budgets))
        return
    _show_keys([record])
    typer.echo(f"\nsecret (shown only now): {secret}")


@keys_cli.command("create")
def keys_create(
    account_id: str,
    name: Annotated[str, typer.Option(help="A label for the key.")],
    models: Annotated[
        str | None, typer.Option(help="Comma-separated model ids (default: every model).")
    ] = None,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute.")] = None,
    max_concurrency: Annotated[int | None, typer.Option(help="Requests in flight.")] = None,
    expires_at: Annotated[str | None, typer.Option(help="ISO 8601 expiry.")] = None,
    budget: Annotated[
        list[str] | None,
        typer.Option(help="A spend limit PERIOD=USD (day, month or total); repeatable."),
    ] = None,
    as_json: Json = False,
) -> None:
    """Create a key; its secret is printed once."""
    budgets = _parse_budgets(budget or [])
    model_list = None if models is None else [m for m in models.split(",") if m.strip()]
    expiry = _parse_time(expires_at, "--expires-at")

    async def work(s: Services) -> tuple[KeyRecord, str, list[BudgetUsage]]:
        record, secret = await s.keys.create_key(
            account_id=account_id,
            name=name,
            models=model_list,
            rpm=rpm,
            max_concurrency=max_concurrency,
            expires_at=expiry,
            budgets=budgets,
        )
        return record, secret, await s.keys.budget_usage(record.id)

    record, secret, usage = _run(work)
    _show_secret(record, secret, as_json, usage)


def _parse_budgets(values: list[str]) -> list[Budget]:
    budgets: list[Budget] = []
    for value in values:
        period, _, amount = value.partition("=")
        if period not in ("day", "month", "total") or not amount:
            _fail(f"--budget: expected day=USD, month=USD or total=USD, got {value!r}")
        budgets.append(Budget(period, _parse_amount(amount, "--budget")))  # type: ignore[arg-type]
    return budgets


@keys_cli.command("budgets")
def keys_budgets(
    key_id: str,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Replace the budgets with PERIOD=USD ...; repeatable."),
    ] = None,
    clear: Annotated[bool, typer.Option(help="Remove every budget of the key.")] = False,
    as_json: Json = False,
) -> None:
    """Show a key's budgets with spent and remaining (optionally replace them first)."""
    new = _parse_budgets(set_ or [])

    async def work(s: Services) -> tuple[KeyRecord, list[BudgetUsage]]:
        if new or clear:
            await s.keys.set_budgets(key_id, new)
        return await s.keys.get_key(key_id), await s.keys.budget_usage(key_id)

    record, usage = _run(work)
    if as_json:
        _print_json(KeyOut.of(record, usage))
        return
    _print_table(
        ["PERIOD", "WINDOW", "AMOUNT", "SPENT", "REMAINING"],
        [
            [u.period, u.window, f"{micros_to_decimal(u.amount_micros):f}",
             f"{micros_to_decimal(u.spent_micros):f}",
             f"{micros_to_decimal(u.remaining_micros):f}"]
            for u in usage
        ],
    )  # fmt: skip


@keys_cli.command("list")
def keys_list(
    account_id: Annotated[str | None, typer.Option(help="Only this account's keys.")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    as_json: Json = False,
) -> None:
    """List keys (never their secrets)."""
    records, next_cursor = _run(
        lambda s: s.keys.list_keys(account_id=account_id, limit=limit, cursor=cursor)
    )
    if as_json:
        _print_json(Page(data=[KeyOut.of(k) for k in records], next_cursor=next_cursor))
        return
    _show_keys(records)
    if next_cursor:
        typer.echo(f"more: --cursor {next_cursor}", err=True)


@keys_cli.command("revoke")
def keys_revoke(key_id: str, as_json: Json = False) -> None:
    """Revoke a key (running servers stop it within GATEWAY_KEY_CACHE_TTL_S)."""
    record = _run(lambda s: s.keys.revoke_key(key_id))
    if as_json:
        _print_json(KeyOut.of(record))
    else:
        _show_keys([record])


@keys_cli.command("rotate")
def keys_rotate(key_id: str, as_json: Json = False) -> None:
    """Give a key a new secret; the old one stops working."""
    record, secret = _run(lambda s: s.keys.rotate_key(key_id))
    _show_secret(record, secret, as_json)


# usage --------------------------------------------------------------------------------------
class GroupChoice(StrEnum):
    model = "model"
    key = "key"
    day = "day"


@cli.command()
def usage(
    account_id: Annotated[str | None, typer.Option(help="Only this account.")] = None,
    key_id: Annotated[str | None, typer.Option(help="Only this key.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="Start (inclusive).")] = None,
    to: Annotated[str | None, typer.Option(help="End (exclusive).")] = None,
    group_by: Annotated[GroupChoice | None, typer.Option(help="Group by (days are UTC).")] = None,
    as_json: Json = False,
) -> None:
    """Requests, images delivered and cost (settled requests)."""
    grouping: GroupBy | None = None if group_by is None else group_by.value
    since, until = _parse_time(from_, "--from"), _parse_time(to, "--to")
    filters = RequestFilter(
        account_id=account_id, key_id=key_id, model=model, since=since, until=until
    )
    rows = _run(lambda s: s.reports.usage(filters, group_by=grouping))
    total = usage_total(rows)
    if as_json:
        _print_json(UsageOut.build(rows, group_by=grouping, since=since, until=until))
        return
    shown = [*(rows if grouping else []), total]
    _print_table(
        [(grouping or "").upper() or "ALL", "REQUESTS", "IMAGES", "COST"],
        [
            [row.group if row is not total else "TOTAL", row.requests, row.images,
             _usd(row.cost_micros)]
            for row in shown
        ],
    )  # fmt: skip
