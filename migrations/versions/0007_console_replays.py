"""console: which request an Idempotency-Key record belongs to, and how often it was replayed

Revision ID: 0007_console_replays
Revises: 0006_webhooks
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_console_replays"
down_revision: str | Sequence[str] | None = "0006_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("idempotency_records") as batch:
        batch.add_column(sa.Column("request_id", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column("replays", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("last_replayed_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch.create_index("ix_idempotency_records_request_id", ["request_id"])


def downgrade() -> None:
    with op.batch_alter_table("idempotency_records") as batch:
        batch.drop_index("ix_idempotency_records_request_id")
        batch.drop_column("last_replayed_at")
        batch.drop_column("replays")
        batch.drop_column("request_id")
