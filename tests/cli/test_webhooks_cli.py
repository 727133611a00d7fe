"""`image-gateway webhooks ...` and the account options behind events and prices."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from app.cli import cli
from tests.support.cli import as_json, table
from tests.support.webhook_receiver import WebhookReceiver

CATALOG = """
providers:
  local: {adapter: local-preview}
models:
  local-preview:
    routes: [{provider: local}]
    pricing: {per_image: 0.001}
"""


def test_endpoint_commands_and_a_verified_test_send(tmp_path: Path, database_url: str) -> None:
    runner = CliRunner()
    with WebhookReceiver(tmp_path) as receiver:
        env = {
            "DATABASE_URL": database_url,
            "GATEWAY_WEBHOOK_ALLOW_PRIVATE": "true",
            "GATEWAY_WEBHOOK_CA_BUNDLE": str(receiver.ca_path),
        }

        def run(*args: str, code: int = 0) -> object:
            result = runner.invoke(cli, ["webhooks", *args], env=env)
            assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
            return result

        created = as_json(run("create", receiver.url, "--event", "key.expiring", "--json"))
        assert created["secret"].startswith("whsec_")
        receiver.secret = created["secret"]
        assert table(run("list"))[1][:3] == [created["id"], receiver.url, "key.expiring"]

        sent = as_json(run("test", created["id"], "--json"))
        assert sent["status"] == "succeeded" and receiver.delivered[0].verified
        assert table(run("deliveries", "--status", "succeeded"))[1][3] == "succeeded"

        assert as_json(run("disable", created["id"], "--json"))["enabled"] is False
        refused = run("create", "http://example.com/h", "--event", "key.expiring", code=1)
        assert "https://" in refused.stderr  # type: ignore[attr-defined]
        run("delete", created["id"])
        run("show", created["id"], code=1)


def test_accounts_update_sets_threshold_and_pricing(tmp_path: Path, database_url: str) -> None:
    catalog = tmp_path / "models.yaml"
    catalog.write_text(CATALOG)
    env = {"DATABASE_URL": database_url, "GATEWAY_CONFIG": str(catalog)}
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> object:
        result = runner.invoke(cli, ["accounts", *args], env=env)
        assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
        return result

    account = as_json(run("create", "acme", "--json"))["id"]
    shown = as_json(
        run(
            "update", account, "--low-balance-threshold", "2", "--json",
            "--pricing", '{"models": {"local-preview": {"multiplier": "2"}}}',
        )
    )  # fmt: skip
    assert shown["low_balance_threshold"] == 2
    assert shown["pricing"] == {"models": {"local-preview": {"multiplier": "2"}}}
    unknown = run("update", account, "--pricing", '{"models": {"nope": {"multiplier": 2}}}', code=1)
    assert "'nope' is not a model id" in unknown.stderr  # type: ignore[attr-defined]
    cleared = as_json(run("update", account, "--pricing", "off", "--json"))
    assert cleared["pricing"] is None and cleared["low_balance_threshold"] == 2
