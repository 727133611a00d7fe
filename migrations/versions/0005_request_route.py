"""request_log.route: the provider attempts of a request ("openai:UPSTREAM_ERROR>fal:ok")

Revision ID: 0005_request_route
Revises: 0004_idempotency_fencing
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_request_route"
down_revision: str | Sequence[str] | None = "0004_idempotency_fencing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("request_log") as batch:
        batch.add_column(sa.Column("route", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("request_log") as batch:
        batch.drop_column("route")
