"""First start on the embedded default: a demo account and key, so `local-preview` works at once.

Only on SQLite, only when the database has no account yet. The demo secret is also written to
`demo-key.txt` beside the database file (mode 600) so a restarted laptop gateway can print it
again; Postgres deployments never get a demo account.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from app.db.engine import engine_for
from app.db.models import Account
from app.keys.service import KeyService
from app.ledger.service import Ledger
from app.money import parse_usd
from app.settings import Settings


def demo_key_file(settings: Settings) -> Path | None:
    database = make_url(settings.database_url).database
    if not settings.is_sqlite or not database or database == ":memory:":
        return None
    return Path(database).parent / "demo-key.txt"


@dataclass(frozen=True, slots=True)
class DemoKey:
    account_id: str
    secret: str


async def ensure_demo_key(settings: Settings) -> DemoKey | None:
    """The demo account and secret when they exist or were just made; None elsewhere."""
    key_file = demo_key_file(settings)
    if key_file is None:
        return None
    engine = engine_for(settings)
    try:
        async with engine.connect() as conn:
            accounts = (await conn.execute(select(func.count()).select_from(Account))).scalar_one()
            demo_id = (
                await conn.execute(
                    select(Account.id)
                    .where(Account.name == "demo")
                    .order_by(Account.created_at)
                    .limit(1)
                )
            ).scalar_one_or_none()
        if accounts:
            if demo_id is None or not key_file.exists():
                return None
            return DemoKey(account_id=demo_id, secret=key_file.read_text().strip())
        account = await Ledger(engine).create_account(
            name="demo", balance_micros=parse_usd(settings.demo_balance_usd)
        )
        _, secret = await KeyService(engine).create_key(account_id=account.id, name="demo")
    finally:
        await engine.dispose()
    key_file.write_text(secret + "\n")
    os.chmod(key_file, 0o600)
    return DemoKey(account_id=account.id, secret=secret)


def demo_banner(demo: DemoKey, host: str, port: int, *, admin_enabled: bool) -> str:
    shown_host = "localhost" if host in ("0.0.0.0", "::", "127.0.0.1") else host
    base = f"http://{shown_host}:{port}"
    secret = demo.secret
    admin = (
        f"    curl {base}/admin/v1/accounts/{demo.account_id} "
        '-H "Authorization: Bearer $GATEWAY_ADMIN_TOKEN"\n'
        if admin_enabled
        else "    (off: set GATEWAY_ADMIN_TOKEN to enable /admin/v1; or use the CLI:\n"
        f"     image-gateway accounts show {demo.account_id})\n"
    )
    return (
        "\n  image-gateway demo key (embedded SQLite, local-preview model):\n"
        f"    {secret}\n"
        f"  demo account: {demo.account_id}\n\n"
        "  Admin API:\n"
        f"{admin}\n"
        "  Try it:\n"
        f"    curl {base}/v1/images/generations \\\n"
        f'      -H "Authorization: Bearer {secret}" \\\n'
        '      -H "Content-Type: application/json" \\\n'
        '      -d \'{"model": "local-preview", "prompt": "a lighthouse at dusk", '
        '"size": "512x512"}\'\n'
    )
