"""First start on the embedded default: a demo account and key, so `local-preview` works at once.

Only on SQLite, only when the database has no account yet. The demo secret is also written to
`demo-key.txt` beside the database file (mode 600) so a restarted laptop gateway can print it
again; Postgres deployments never get a demo account.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from app.db.engine import make_engine
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


async def ensure_demo_key(settings: Settings) -> str | None:
    """The demo secret when one exists or was just made; None elsewhere."""
    key_file = demo_key_file(settings)
    if key_file is None:
        return None
    engine = make_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            accounts = (await conn.execute(select(func.count()).select_from(Account))).scalar_one()
        if accounts:
            return key_file.read_text().strip() if key_file.exists() else None
        account = await Ledger(engine).create_account(
            name="demo", balance_micros=parse_usd(settings.demo_balance_usd)
        )
        _, secret = await KeyService(engine).create_key(account_id=account.id, name="demo")
    finally:
        await engine.dispose()
    key_file.write_text(secret + "\n")
    os.chmod(key_file, 0o600)
    return secret


def demo_banner(secret: str, host: str, port: int) -> str:
    shown_host = "localhost" if host in ("0.0.0.0", "::", "127.0.0.1") else host
    base = f"http://{shown_host}:{port}"
    return (
        "\n  image-gateway demo key (embedded SQLite, local-preview model):\n"
        f"    {secret}\n\n"
        "  Try it:\n"
        f"    curl {base}/v1/images/generations \\\n"
        f'      -H "Authorization: Bearer {secret}" \\\n'
        '      -H "Content-Type: application/json" \\\n'
        '      -d \'{"model": "local-preview", "prompt": "a lighthouse at dusk", '
        '"size": "512x512"}\'\n'
    )
