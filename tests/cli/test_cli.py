"""The `image-gateway` CLI, run in-process with typer's CliRunner against a migrated database."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.db.engine import make_engine
from app.errors import AuthenticationError, PermissionDenied
from app.keys.auth import AuthenticatedKey, KeyAuthenticator
from app.ledger.service import Ledger
from tests.support.cli import as_json, table


def authenticate(database_url: str, secret: str) -> AuthenticatedKey:
    async def check() -> AuthenticatedKey:
        engine = make_engine(database_url)
        try:
            return await KeyAuthenticator(engine).authenticate(f"Bearer {secret}")
        finally:
            await engine.dispose()

    return asyncio.run(check())


def test_migrate_creates_the_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/fresh/gateway.db"
    result = CliRunner().invoke(cli, ["migrate"], env={"DATABASE_URL": url})
    assert result.exit_code == 0, result.stderr
    assert "migrated sqlite+aiosqlite:///" in result.stdout
    result = CliRunner().invoke(cli, ["accounts", "list", "--json"], env={"DATABASE_URL": url})
    assert json.loads(result.stdout) == {"object": "list", "data": [], "next_cursor": None}


def test_an_unmigrated_database_is_a_clear_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/empty.db"
    result = CliRunner().invoke(cli, ["accounts", "list"], env={"DATABASE_URL": url})
    assert result.exit_code == 1
    assert "image-gateway migrate" in result.stderr


def test_accounts_create_show_list(run: Any) -> None:
    account = as_json(run("accounts", "create", "acme", "--balance", "10.25", "--json"))
    assert account["object"] == "account"
    assert (account["name"], account["balance"], account["status"]) == ("acme", 10.25, "active")

    rows = table(run("accounts", "show", account["id"]))
    assert rows[0] == ["ID", "NAME", "BALANCE", "STATUS", "CREATED"]
    assert rows[1][:4] == [account["id"], "acme", "10.25", "active"]

    second = as_json(run("accounts", "create", "beta", "--json"))
    assert second["balance"] == 0
    rows = table(run("accounts", "list"))
    assert [row[0] for row in rows[1:]] == [account["id"], second["id"]]

    page = as_json(run("accounts", "list", "--limit", "1", "--json"))
    assert [a["id"] for a in page["data"]] == [account["id"]]
    rest = as_json(run("accounts", "list", "--cursor", page["next_cursor"], "--json"))
    assert [a["id"] for a in rest["data"]] == [second["id"]]
    assert rest["next_cursor"] is None


def test_accounts_errors_exit_1(run: Any) -> None:
    result = run("accounts", "show", "acct_missing", code=1)
    assert "error: No account with id 'acct_missing'" in result.stderr
    result = run("accounts", "create", "x", "--balance", "0.0000001", code=1)
    assert "--balance" in result.stderr and "micro-dollar" in result.stderr
    result = run("accounts", "create", "x", "--balance", "-1", code=1)
    assert "balance" in result.stderr


def test_accounts_credit_and_update(run: Any) -> None:
    account = as_json(run("accounts", "create", "acme", "--balance", "1", "--json"))
    credit = as_json(run("accounts", "credit", account["id"], "2.5", "--note", "inv 7", "--json"))
    assert credit["balance"] == 3.5
    assert (credit["entry"]["kind"], credit["entry"]["note"]) == ("topup", "inv 7")

    rows = table(run("accounts", "credit", account["id"], "--", "-0.5"))
    assert rows[0] == ["ACCOUNT", "KIND", "AMOUNT", "BALANCE", "NOTE"]
    assert rows[1] == [account["id"], "adjustment", "-0.5", "3", "-"]

    result = run("accounts", "credit", account["id"], "--", "-10", code=1)
    assert "below zero" in result.stderr

    updated = as_json(run("accounts", "update", account["id"], "--status", "suspended", "--json"))
    assert updated["status"] == "suspended"
    result = run("accounts", "update", account["id"], "--status", "gone", code=1)
    assert "status" in result.stderr


def test_keys_create_list_revoke_rotate(run: Any, database_url: str) -> None:
    account = as_json(run("accounts", "create", "acme", "--json"))["id"]
    key = as_json(
        run(
            "keys", "create", account, "--name", "ci", "--models", "local-preview,gpt-image-1",
            "--rpm", "60", "--max-concurrency", "2", "--expires-at", "2099-01-01", "--json",
        )
    )  # fmt: skip
    assert key["object"] == "api_key" and key["key"].startswith("sk-")
    assert key["models"] == ["local-preview", "gpt-image-1"]
    assert (key["rpm"], key["max_concurrency"]) == (60, 2)
    assert key["expires_at"].startswith("2099-01-01T00:00:00")
    assert authenticate(database_url, key["key"]).key_id == key["id"]

    result = run("keys", "create", account, "--name", "plain")
    rows = table(result)
    assert rows[0][:4] == ["ID", "ACCOUNT", "NAME", "PREFIX"]
    assert rows[1][2] == "plain" and rows[1][4] == "*" and rows[1][-1] == "active"
    secret = result.stdout.strip().rsplit(" ", 1)[-1]
    assert secret.startswith(rows[1][3])  # the prefix column is the secret's start

    listed = as_json(run("keys", "list", "--account-id", account, "--json"))
    assert [k["name"] for k in listed["data"]] == ["ci", "plain"]
    assert all("key" not in k for k in listed["data"])
    assert key["key"] not in run("keys", "list").stdout

    rotated = as_json(run("keys", "rotate", key["id"], "--json"))
    assert rotated["key"] != key["key"]
    with pytest.raises(AuthenticationError):
        authenticate(database_url, key["key"])
    assert authenticate(database_url, rotated["key"]).key_id == key["id"]

    rows = table(run("keys", "revoke", key["id"]))
    assert rows[1][0] == key["id"] and rows[1][-1] == "revoked"
    with pytest.raises(PermissionDenied):
        authenticate(database_url, rotated["key"])
    result = run("keys", "rotate", key["id"], code=1)
    assert "revoked" in result.stderr


def test_keys_validation_exits_1(run: Any) -> None:
    account = as_json(run("accounts", "create", "acme", "--json"))["id"]
    assert "rpm" in run("keys", "create", account, "--name", "k", "--rpm", "0", code=1).stderr
    result = run("keys", "create", account, "--name", "k", "--expires-at", "soon", code=1)
    assert "--expires-at" in result.stderr
    result = run("keys", "create", "acct_missing", "--name", "k", code=1)
    assert "No account" in result.stderr


def test_usage(run: Any, database_url: str) -> None:
    account = as_json(run("accounts", "create", "acme", "--balance", "10", "--json"))["id"]
    key = as_json(run("keys", "create", account, "--name", "k", "--json"))["id"]

    async def traffic() -> None:
        engine = make_engine(database_url)
        ledger = Ledger(engine)
        try:
            for number, (model, cost, images) in enumerate(
                [("m-a", 134_000, 1), ("m-a", 268_000, 2), ("m-b", 40_000, 1)]
            ):
                request_id = f"req_{number}"
                await ledger.hold(
                    request_id=request_id, account_id=account, key_id=key, model=model,
                    amount_micros=cost,
                )  # fmt: skip
                await ledger.settle(request_id=request_id, cost_micros=cost, images=images)
        finally:
            await engine.dispose()

    asyncio.run(traffic())
    body = as_json(run("usage", "--group-by", "model", "--account-id", account, "--json"))
    assert body["group_by"] == "model"
    assert [(r["group"], r["requests"], r["images"], r["cost"]) for r in body["data"]] == [
        ("m-a", 2, 3, 0.402),
        ("m-b", 1, 1, 0.04),
    ]
    assert body["total"]["cost"] == 0.442

    rows = table(run("usage", "--group-by", "model"))
    assert rows == [
        ["MODEL", "REQUESTS", "IMAGES", "COST"],
        ["m-a", "2", "3", "0.402"],
        ["m-b", "1", "1", "0.04"],
        ["TOTAL", "3", "4", "0.442"],
    ]
    rows = table(run("usage", "--model", "m-b"))
    assert rows == [["ALL", "REQUESTS", "IMAGES", "COST"], ["TOTAL", "1", "1", "0.04"]]
    body = as_json(run("usage", "--from", "2000-01-01", "--to", "2000-01-02", "--json"))
    assert body["total"]["requests"] == 0

    days = as_json(run("usage", "--group-by", "day", "--json"))["data"]
    assert len(days) == 1 and days[0]["requests"] == 3
    run("usage", "--group-by", "week", code=2)


CATALOG = str(Path(__file__).parents[2] / "config" / "models.yaml")


def test_config_check(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli, ["config", "check", "--config", CATALOG], env={"OPENAI_API_KEY": ""}
    )
    assert result.exit_code == 0, result.stderr
    rows = table(result)
    assert rows[0] == ["MODEL", "OWNED_BY", "SIZING", "ROUTES"]
    assert any(row[0] == "local-preview" for row in rows[1:])
    assert "warning:" in result.stderr

    result = runner.invoke(cli, ["config", "check", "--config", CATALOG, "--json"])
    body = json.loads(result.stdout)
    assert "local-preview" in [model["id"] for model in body["models"]]
    assert isinstance(body["warnings"], list)

    broken = tmp_path / "models.yaml"
    broken.write_text("providers: {}\nmodels:\n  x: {routes: [{provider: nope}]}\n")
    result = runner.invoke(cli, ["config", "check", "--config", str(broken)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: GATEWAY_CONFIG: {broken}")


def test_serve_hands_over_to_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    import app.server

    calls: list[tuple[str, int, int]] = []
    monkeypatch.setattr(app.server, "run_server", lambda *args: calls.append(args[1:]))
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--port", "9000"])
    assert result.exit_code == 0, result.stderr
    assert calls == [("0.0.0.0", 9000, 1)]


def test_keys_carry_budgets_shown_with_spent_and_remaining(run: Any) -> None:
    account = as_json(run("accounts", "create", "budgeted", "--balance", "5", "--json"))
    key = as_json(
        run(
            "keys", "create", account["id"], "--name", "ci",
            "--budget", "day=0.5", "--budget", "total=10", "--json",
        )
    )  # fmt: skip
    assert [(b["period"], b["amount"], b["remaining"]) for b in key["budgets"]] == [
        ("day", 0.5, 0.5),
        ("total", 10.0, 10.0),
    ]
    shown = table(run("keys", "budgets", key["id"], "--set", "month=3"))
    assert shown[0] == ["PERIOD", "WINDOW", "AMOUNT", "SPENT", "REMAINING"]
    assert [row[0] for row in shown[1:]] == ["month"] and shown[1][2:] == ["3", "0", "3"]
    assert as_json(run("keys", "budgets", key["id"], "--clear", "--json"))["budgets"] == []
    run("keys", "create", account["id"], "--name", "bad", "--budget", "week=1", code=1)
