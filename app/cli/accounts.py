"""`image-gateway accounts ...` and `image-gateway ledger`: prepaid accounts and their books."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from app.admin.schemas import AccountOut, CreditOut, LedgerEntryOut
from app.catalog.account_pricing import parse_pricing
from app.cli.common import (
    Cursor,
    Json,
    Limit,
    accounts_cli,
    cli,
    fail,
    parse_amount,
    print_json,
    print_one,
    print_page,
    print_table,
    run,
    settings_or_exit,
    usd,
    when,
)
from app.ledger.records import AccountRecord, LedgerRow
from app.preflight import SetupError, check_catalog


def _show_accounts(records: Sequence[AccountRecord]) -> None:
    print_table(
        ["ID", "NAME", "BALANCE", "STATUS", "CREATED"],
        [[a.id, a.name, usd(a.balance_micros), a.status, when(a.created_at)] for a in records],
    )


def _print_account(account: AccountRecord, as_json: bool) -> None:
    print_one(account, as_json=as_json, out=AccountOut.of, table=_show_accounts)


def _show_entries(rows: Sequence[LedgerRow]) -> None:
    print_table(
        ["ID", "KIND", "AMOUNT", "BALANCE", "MODEL", "REQUEST", "NOTE", "CREATED"],
        [[r.id, r.kind, usd(r.amount_micros), usd(r.balance_after_micros), r.model,
          r.request_id, r.note, when(r.created_at)] for r in rows],
    )  # fmt: skip


@accounts_cli.command("create")
def accounts_create(
    name: str,
    balance: Annotated[str, typer.Option(help="Opening balance in USD.")] = "0",
    as_json: Json = False,
) -> None:
    """Create an account (an opening balance is its first ledger row)."""
    micros = parse_amount(balance, "--balance")
    _print_account(
        run(lambda s: s.ledger.create_account(name=name, balance_micros=micros)), as_json
    )


@accounts_cli.command("list")
def accounts_list(limit: Limit = 50, cursor: Cursor = None, as_json: Json = False) -> None:
    """List accounts in creation order."""
    records, next_cursor = run(lambda s: s.reports.list_accounts(limit=limit, cursor=cursor))
    print_page(records, next_cursor, as_json=as_json, out=AccountOut.of, table=_show_accounts)


@accounts_cli.command("show")
def accounts_show(account_id: str, as_json: Json = False) -> None:
    """Show one account."""
    _print_account(run(lambda s: s.ledger.get_account(account_id)), as_json)


@accounts_cli.command("update")
def accounts_update(
    account_id: str,
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    status: Annotated[str | None, typer.Option(help="active or suspended.")] = None,
    low_balance_threshold: Annotated[
        str | None,
        typer.Option(help="USD: the balance.below_threshold webhook fires below it; 'off'."),
    ] = None,
    pricing: Annotated[
        str | None,
        typer.Option(help='Account prices as JSON, e.g. {"multiplier": "1.2"}; \'off\'.'),
    ] = None,
    as_json: Json = False,
) -> None:
    """Rename, suspend or reactivate an account; set its low-balance alert and prices."""
    edits: dict[str, Any] = {}
    if low_balance_threshold is not None:
        edits["low_balance_threshold_micros"] = (
            None
            if low_balance_threshold == "off"
            else parse_amount(low_balance_threshold, "--low-balance-threshold")
        )
    if pricing is not None:
        edits["pricing"] = None if pricing == "off" else _checked_pricing(pricing)
    account = run(lambda s: s.ledger.update_account(account_id, name=name, status=status, **edits))
    _print_account(account, as_json)


def _checked_pricing(text: str) -> str:
    """The `--pricing` JSON validated like the admin API's, model ids against the catalog."""
    try:
        pricing = parse_pricing(json.loads(text))
    except json.JSONDecodeError as exc:
        fail(f"--pricing: not JSON: {exc}")
    except ValueError as exc:
        fail(f"--pricing: {exc}")
    try:
        catalog = check_catalog(settings_or_exit())
    except SetupError as exc:
        fail(f"--pricing: cannot check the model ids: {exc}")
    try:
        pricing.check_models(catalog.models)
    except ValueError as exc:
        fail(f"--pricing: {exc}")
    return pricing.to_json()


@accounts_cli.command("suspend")
def accounts_suspend(account_id: str, as_json: Json = False) -> None:
    """Suspend an account: its keys are refused (403) until it is activated again."""
    _print_account(run(lambda s: s.ledger.update_account(account_id, status="suspended")), as_json)


@accounts_cli.command("activate")
def accounts_activate(account_id: str, as_json: Json = False) -> None:
    """Reactivate a suspended account."""
    _print_account(run(lambda s: s.ledger.update_account(account_id, status="active")), as_json)


@accounts_cli.command("credit")
def accounts_credit(
    account_id: str,
    amount: Annotated[str, typer.Argument(help="USD; negative (after --) to adjust down.")],
    note: Annotated[str | None, typer.Option(help="Why (kept in the ledger).")] = None,
    as_json: Json = False,
) -> None:
    """Top up (or adjust) a balance; prints the new balance."""
    micros = parse_amount(amount, "AMOUNT")
    row = run(lambda s: s.ledger.credit(account_id=account_id, amount_micros=micros, note=note))
    if as_json:
        print_json(CreditOut.of(row))
        return
    print_table(
        ["ACCOUNT", "KIND", "AMOUNT", "BALANCE", "NOTE"],
        [[row.account_id, row.kind, usd(row.amount_micros), usd(row.balance_after_micros),
          row.note]],
    )  # fmt: skip


@cli.command()
def ledger(
    account_id: str, limit: Limit = 50, cursor: Cursor = None, as_json: Json = False
) -> None:
    """An account's ledger, newest first: credits, holds, settlements, refunds."""
    rows, next_cursor = run(lambda s: s.ledger.ledger_page(account_id, limit=limit, cursor=cursor))
    print_page(rows, next_cursor, as_json=as_json, out=LedgerEntryOut.of, table=_show_entries)
