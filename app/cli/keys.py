"""`image-gateway keys ...`: API keys (secrets are shown once, on create and rotate)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated

import typer

from app.admin.schemas import KeyDeleted, KeyOut, KeyWithSecret
from app.cli.common import (
    Cursor,
    Json,
    Limit,
    Services,
    fail,
    keys_cli,
    parse_amount,
    parse_time,
    print_json,
    print_one,
    print_page,
    print_table,
    run,
    when,
)
from app.keys.repository import KeyRecord
from app.ledger.budgets import Budget, BudgetUsage
from app.money import micros_to_decimal


def _key_status(record: KeyRecord) -> str:
    if record.revoked:
        return "revoked"
    if record.expires_at is not None and record.expires_at <= datetime.now(UTC):
        return "expired"
    return "active"


def _show_keys(records: Sequence[KeyRecord]) -> None:
    print_table(
        ["ID", "ACCOUNT", "NAME", "PREFIX", "MODELS", "RPM", "CONCURRENCY", "EXPIRES", "STATUS"],
        [
            [k.id, k.account_id, k.name, k.prefix, ",".join(k.models) if k.models else "*",
             k.rpm, k.max_concurrency, when(k.expires_at), _key_status(k)]
            for k in records
        ],
    )  # fmt: skip


def _show_secret(
    record: KeyRecord, secret: str, as_json: bool, budgets: list[BudgetUsage] | None = None
) -> None:
    if as_json:
        print_json(KeyWithSecret.with_secret(record, secret, budgets))
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
    expiry = parse_time(expires_at, "--expires-at")

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

    record, secret, usage = run(work)
    _show_secret(record, secret, as_json, usage)


def _parse_budgets(values: list[str]) -> list[Budget]:
    budgets: list[Budget] = []
    for value in values:
        period, _, amount = value.partition("=")
        if period not in ("day", "month", "total") or not amount:
            fail(f"--budget: expected day=USD, month=USD or total=USD, got {value!r}")
        budgets.append(Budget(period, parse_amount(amount, "--budget")))  # type: ignore[arg-type]
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

    record, usage = run(work)
    if as_json:
        print_json(KeyOut.of(record, usage))
        return
    print_table(
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
    records, next_cursor = run(
        lambda s: s.keys.list_keys(account_id=account_id, limit=limit, cursor=cursor)
    )
    print_page(records, next_cursor, as_json=as_json, out=KeyOut.of, table=_show_keys)


@keys_cli.command("revoke")
def keys_revoke(key_id: str, as_json: Json = False) -> None:
    """Revoke a key (running servers stop it within GATEWAY_KEY_CACHE_TTL_S)."""
    record = run(lambda s: s.keys.revoke_key(key_id))
    print_one(record, as_json=as_json, out=KeyOut.of, table=_show_keys)


@keys_cli.command("rotate")
def keys_rotate(key_id: str, as_json: Json = False) -> None:
    """Give a key a new secret; the old one stops working."""
    record, secret = run(lambda s: s.keys.rotate_key(key_id))
    _show_secret(record, secret, as_json)


@keys_cli.command("delete")
def keys_delete(key_id: str, as_json: Json = False) -> None:
    """Delete a key (its requests and ledger rows stay; the admin API's DELETE /keys/{id})."""
    record = run(lambda s: s.keys.delete_key(key_id))
    if as_json:
        print_json(KeyDeleted(id=record.id))
    else:
        typer.echo(f"deleted {record.id}")
