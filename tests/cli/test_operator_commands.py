"""The commands the admin API had and the CLI lacked, and empty lists (a table header, `[]`)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from app.cli import cli
from app.db.engine import make_engine
from app.ledger.service import Ledger
from tests.support.cli import as_json, table


def test_empty_lists_print_a_header_or_an_empty_page(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/empty.db"}
    runner = CliRunner()
    assert runner.invoke(cli, ["migrate"], env=env).exit_code == 0
    headers = {
        ("accounts", "list"): ["ID", "NAME", "BALANCE", "STATUS", "CREATED"],
        ("keys", "list"): ["ID", "ACCOUNT", "NAME", "PREFIX", "MODELS", "RPM", "CONCURRENCY",
                           "EXPIRES", "STATUS"],
        ("requests",): ["ID", "ACCOUNT", "MODEL", "STATE", "STATUS", "CODE", "IMAGES", "COST",
                        "MS", "CREATED"],
    }  # fmt: skip
    for command, header in headers.items():
        result = runner.invoke(cli, list(command), env=env)
        assert result.exit_code == 0, (command, result.stderr, result.exception)
        assert table(result) == [header]
        result = runner.invoke(cli, [*command, "--json"], env=env)
        assert result.exit_code == 0, (command, result.stderr)
        assert json.loads(result.stdout) == {"object": "list", "data": [], "next_cursor": None}


def test_suspend_and_activate(run: Any) -> None:
    account = as_json(run("accounts", "create", "acme", "--json"))["id"]
    assert as_json(run("accounts", "suspend", account, "--json"))["status"] == "suspended"
    assert table(run("accounts", "show", account))[1][3] == "suspended"
    assert table(run("accounts", "activate", account))[1][3] == "active"
    result = run("accounts", "suspend", "acct_missing", code=1)
    assert result.stderr == "error: No account with id 'acct_missing'.\n" or (
        result.stderr.startswith("error: No account with id 'acct_missing'")
    )


def test_ledger_lists_an_accounts_rows_newest_first(run: Any, database_url: str) -> None:
    account = as_json(run("accounts", "create", "acme", "--balance", "5", "--json"))["id"]
    run("accounts", "credit", account, "2.5", "--note", "invoice 9")
    page = as_json(run("ledger", account, "--json"))
    assert [(e["kind"], e["amount"], e["balance_after"]) for e in page["data"]] == [
        ("topup", 2.5, 7.5),
        ("topup", 5, 5),
    ]
    assert page["data"][0]["note"] == "invoice 9"
    rows = table(run("ledger", account, "--limit", "1"))
    assert rows[0][:4] == ["ID", "KIND", "AMOUNT", "BALANCE"]
    assert rows[1][1:4] == ["topup", "2.5", "7.5"] and len(rows) == 2
    assert run("ledger", "acct_missing", code=1).stderr.startswith("error: No account")


def test_requests_lists_the_request_log(run: Any, database_url: str) -> None:
    account = as_json(run("accounts", "create", "acme", "--balance", "5", "--json"))["id"]
    key = as_json(run("keys", "create", account, "--name", "ci", "--json"))["id"]

    async def two_requests() -> None:
        engine = make_engine(database_url)
        try:
            ledger = Ledger(engine)
            for request_id, model in (("req_a", "local-preview"), ("req_b", "gpt-image-1")):
                await ledger.hold(
                    request_id=request_id,
                    account_id=account,
                    key_id=key,
                    model=model,
                    amount_micros=40_000,
                )
            await ledger.settle(request_id="req_a", cost_micros=25_000, images=1)
        finally:
            await engine.dispose()

    asyncio.run(two_requests())
    page = as_json(run("requests", "--account-id", account, "--json"))
    assert {(r["id"], r["state"], r["cost"]) for r in page["data"]} == {
        ("req_a", "settled", 0.025),
        ("req_b", "pending", 0),
    }
    rows = table(run("requests", "--state", "settled"))
    assert [row[:4] for row in rows[1:]] == [["req_a", account, "local-preview", "settled"]]
    assert rows[1][7] == "0.025"
    assert as_json(run("requests", "--model", "nope", "--json"))["data"] == []
    result = run("requests", "--state", "bogus", code=2)
    assert "bogus" in result.stderr


def test_keys_delete(run: Any) -> None:
    account = as_json(run("accounts", "create", "acme", "--json"))["id"]
    key = as_json(run("keys", "create", account, "--name", "ci", "--json"))
    assert as_json(run("keys", "delete", key["id"], "--json")) == {
        "object": "api_key",
        "id": key["id"],
        "deleted": True,
    }
    assert as_json(run("keys", "list", "--json"))["data"] == []
    assert run("keys", "delete", key["id"], code=1).stderr.startswith("error: ")
