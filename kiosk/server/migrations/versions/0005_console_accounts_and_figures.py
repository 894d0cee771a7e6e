"""the console's people and figures: sessions that end when idle, teams, management's
counted days, logins with the municipality's identity provider, and the indexes behind the
audit log's filters and the figures

Revision ID: 0005
Revises: 0004

Sessions from before get ``last_used`` 0: they count as idle, so everybody logs in again once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_used', sa.Float(), nullable=False, server_default='0'))
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.alter_column('last_used', server_default=None)
    with op.batch_alter_table('audit', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_actor'), ['actor'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_action'), ['action'], unique=False)
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_calls_placed_at'), ['placed_at'], unique=False)
    op.create_table('user_teams',
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('team', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['username'], ['users.username'], ),
    sa.PrimaryKeyConstraint('username', 'team')
    )
    with op.batch_alter_table('user_teams', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_user_teams_team'), ['team'], unique=False)
    op.create_table('figures_calls',
    sa.Column('day', sa.String(length=10), nullable=False),
    sa.Column('week', sa.String(length=8), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('team', sa.String(length=64), nullable=False),
    sa.Column('outcome', sa.String(length=32), nullable=False),
    sa.Column('calls', sa.Integer(), nullable=False),
    sa.Column('talk_seconds', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('day', 'team', 'outcome')
    )
    op.create_table('figures_counted',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('through_day', sa.String(length=10), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('oidc_pending',
    sa.Column('state_hash', sa.String(length=64), nullable=False),
    sa.Column('browser_hash', sa.String(length=64), nullable=False),
    sa.Column('code_verifier', sa.String(length=128), nullable=False),
    sa.Column('nonce', sa.String(length=64), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('state_hash')
    )
    op.create_table('oidc_identities',
    sa.Column('issuer', sa.String(length=200), nullable=False),
    sa.Column('subject', sa.String(length=255), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['username'], ['users.username'], ),
    sa.PrimaryKeyConstraint('issuer', 'subject'),
    sa.UniqueConstraint('username')
    )


def downgrade() -> None:
    op.drop_table('oidc_identities')
    op.drop_table('oidc_pending')
    op.drop_table('figures_counted')
    op.drop_table('figures_calls')
    op.drop_table('user_teams')
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_calls_placed_at'))
    with op.batch_alter_table('audit', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_action'))
        batch_op.drop_index(batch_op.f('ix_audit_actor'))
        batch_op.drop_index(batch_op.f('ix_audit_at'))
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_column('last_used')
