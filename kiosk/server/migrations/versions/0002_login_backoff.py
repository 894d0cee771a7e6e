"""failed logins remembered (kiosk.server.login_guard)

Revision ID: 0002
Revises: 0001

Until migrations came, the login guard created this table itself the first time it ran,
so a database from then may hold it already; it is created only where it is missing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table('login_backoff'):
        return
    op.create_table('login_backoff',
    sa.Column('key', sa.String(length=120), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('blocked_until', sa.Float(), nullable=False),
    sa.Column('last_attempt', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )


def downgrade() -> None:
    op.drop_table('login_backoff')
