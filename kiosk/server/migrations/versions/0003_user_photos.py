"""staff photos shown on the citizen's ringing screen

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('user_photos',
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('png', sa.LargeBinary(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['username'], ['users.username']),
    sa.PrimaryKeyConstraint('username')
    )


def downgrade() -> None:
    op.drop_table('user_photos')
