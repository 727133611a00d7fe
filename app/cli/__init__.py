"""`image-gateway`: run the server and operate accounts, keys and usage from a shell.

The operator commands talk to the database named by `DATABASE_URL` directly, through the same
services the admin API uses (`Ledger`, `KeyService`, `Reports`), so a rule lives in one place
and the two front ends cannot disagree. `--json` prints exactly the admin API's JSON for the
same object (a list is its page object, `data: []` when empty); without it the output is a
plain aligned table for people (only the header when empty).

    app/cli/common.py     typer apps, run() (settings -> connect -> work), output helpers
    app/cli/server.py     serve, migrate, config check (the start-up checks of app.preflight)
    app/cli/accounts.py   accounts create|list|show|update|suspend|activate|credit, ledger
    app/cli/keys.py       keys create|list|revoke|rotate|delete
    app/cli/reports.py    usage, requests
    app/cli/webhooks.py   webhooks create|list|show|enable|disable|rotate-secret|delete|test,
                          webhooks deliveries

Notes for operators:
- Defaults (`data/`, `config/models.yaml`) are found under GATEWAY_HOME: the source checkout
  the CLI runs from, whatever the working directory (see `app.settings.project_home`).
- Amounts are decimal USD (`10`, `0.25`); finer than one micro-dollar is refused. A negative
  adjustment needs `--` so it is not read as an option: `accounts credit ID -- -5`.
- Times (`--expires-at`, `--from`, `--to`) are ISO 8601; without a zone they are UTC.
- A key revoked, rotated or deleted here stops on running servers within
  `GATEWAY_KEY_CACHE_TTL_S` (the CLI is another process and cannot clear their caches); use
  the admin API for "at once".
- Exit codes: 0 done, 1 the operation was refused, 2 a setting, file or service is wrong.
"""

from __future__ import annotations

from app.cli import accounts, keys, reports, server, webhooks
from app.cli.common import cli

__all__ = ["accounts", "cli", "keys", "main", "reports", "server", "webhooks"]


def main() -> None:
    cli()
