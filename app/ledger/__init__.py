"""The prepaid-balance ledger: holds, settles, refunds, the sweeper and idempotency records.

See `app.ledger.service` for the invariants and `app.ledger.postgres_sql` for why each money
statement is atomic.
"""

from app.ledger.records import AccountRecord, LedgerRow, SettleOutcome
from app.ledger.refusals import insufficient_balance_message, usd
from app.ledger.service import Ledger

__all__ = [
    "AccountRecord",
    "Ledger",
    "LedgerRow",
    "SettleOutcome",
    "insufficient_balance_message",
    "usd",
]
