"""calls kept in the database from the moment they ring, not only once their media flows

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch: SQLite cannot alter a column in place (Alembic copies the table there)
    with op.batch_alter_table('live_calls') as batch:
        batch.alter_column('connected_at', existing_type=sa.Float(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM live_calls WHERE connected_at IS NULL")
    with op.batch_alter_table('live_calls') as batch:
        batch.alter_column('connected_at', existing_type=sa.Float(), nullable=False)
