"""OS releases and their roll-outs in waves (kiosk.server.rollout)

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('releases',
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('arch', sa.String(length=16), nullable=False),
    sa.Column('compatible', sa.String(length=100), nullable=False),
    sa.Column('file', sa.String(length=255), nullable=False),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('added_at', sa.Float(), nullable=False),
    sa.Column('added_by', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('version')
    )
    op.create_table('rollouts',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('release', sa.String(length=64), nullable=False),
    sa.Column('waves', sa.Text(), nullable=False),
    sa.Column('pause_seconds', sa.Float(), nullable=False),
    sa.Column('max_failed_share', sa.Float(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('wave', sa.Integer(), nullable=False),
    sa.Column('wave_starts_at', sa.Float(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['release'], ['releases.version'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('rollout_units',
    sa.Column('rollout_id', sa.String(length=36), nullable=False),
    sa.Column('device_id', sa.String(length=36), nullable=False),
    sa.Column('wave', sa.Integer(), nullable=False),
    sa.Column('stage', sa.String(length=16), nullable=False),
    sa.Column('command_id', sa.String(length=36), nullable=True),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('changed_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
    sa.ForeignKeyConstraint(['rollout_id'], ['rollouts.id'], ),
    sa.PrimaryKeyConstraint('rollout_id', 'device_id')
    )


def downgrade() -> None:
    op.drop_table('rollout_units')
    op.drop_table('rollouts')
    op.drop_table('releases')
