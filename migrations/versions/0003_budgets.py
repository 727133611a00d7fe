"""per-key budgets: key_budgets, key_spend, accounts.timezone, request_log.budget_windows

Revision ID: 0003_budgets
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_budgets"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "key_budgets",
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("period", sa.String(length=10), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "period"),
    )
    op.create_table(
        "key_spend",
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("window", sa.String(length=20), nullable=False),
        sa.Column("limit_micros", sa.BigInteger(), nullable=False),
        sa.Column("spent_micros", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("spent_micros >= 0", name="ck_key_spend_nonneg"),
        sa.PrimaryKeyConstraint("key_id", "window"),
    )
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(
            sa.Column("timezone", sa.String(length=64), nullable=False, server_default="UTC")
        )
    with op.batch_alter_table("request_log") as batch:
        batch.add_column(sa.Column("budget_windows", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("request_log") as batch:
        batch.drop_column("budget_windows")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("timezone")
    op.drop_table("key_spend")
    op.drop_table("key_budgets")
