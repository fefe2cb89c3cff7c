"""signed evidence: agents' public keys, accepted batches, and the append-only Merkle log

`agent_keys` holds every key an agent was registered with (never deleted: old evidence stays
verifiable); `batches` what rebuilds each accepted batch's signed statement and log entry;
`batch_members` links each stored result to its batch; `log_entries` the log (docs/evidence.md,
"The log") and `log_state` its size, whose row lock orders the appends of every collector on the
database.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa

from collector.db import UTCDateTime

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'agent_keys',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('agent_id', sa.String(length=64), nullable=False),
        sa.Column('key_id', sa.String(length=8), nullable=False),
        sa.Column('public_key', sa.String(length=64), nullable=False),
        sa.Column('registered_at', UTCDateTime(), nullable=False),
        sa.Column('registered_by', sa.String(length=16), nullable=False),
        sa.Column('log_index', sa.BigInteger(), nullable=False),
        sa.Column('revoked_at', UTCDateTime(), nullable=True),
        sa.Column('revoked_log_index', sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], name='fk_agent_keys_agent_id_agents'),
        sa.PrimaryKeyConstraint('id', name='pk_agent_keys'),
        sa.UniqueConstraint('agent_id', 'key_id', name='uq_agent_keys_agent_id_key_id'),
        sa.UniqueConstraint('agent_id', 'public_key', name='uq_agent_keys_agent_id_public_key'),
    )
    op.create_table(
        'batches',
        sa.Column('id', _ID, nullable=False),
        sa.Column('agent_id', sa.String(length=64), nullable=False),
        sa.Column('batch_sha256', sa.String(length=64), nullable=False),
        sa.Column('prev', sa.String(length=64), nullable=True),
        sa.Column('key_id', sa.String(length=8), nullable=True),
        sa.Column('signature', sa.String(length=88), nullable=True),
        sa.Column('count', sa.Integer(), nullable=False),
        sa.Column('digests', sa.Text(), nullable=False),
        sa.Column('received_at', UTCDateTime(), nullable=False),
        sa.Column('log_index', sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], name='fk_batches_agent_id_agents'),
        sa.PrimaryKeyConstraint('id', name='pk_batches'),
        sa.UniqueConstraint('log_index', name='uq_batches_log_index'),
    )
    op.create_index('ix_batches_agent_id_log_index', 'batches', ['agent_id', 'log_index'], unique=False)
    op.create_table(
        'batch_members',
        sa.Column('batch_id', _ID, nullable=False),
        sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('row_id', _ID, nullable=False),
        sa.ForeignKeyConstraint(['batch_id'], ['batches.id'], name='fk_batch_members_batch_id_batches'),
        sa.PrimaryKeyConstraint('batch_id', 'position', name='pk_batch_members'),
    )
    op.create_index('ix_batch_members_row_id', 'batch_members', ['row_id'], unique=False)
    op.create_table(
        'log_entries',
        sa.Column('index', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('leaf_hash', sa.LargeBinary(), nullable=False),
        sa.Column('entry', sa.LargeBinary(), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('logged_at', UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('index', name='pk_log_entries'),
    )
    log_state = op.create_table(
        'log_state',
        sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id', name='pk_log_state'),
    )
    op.bulk_insert(log_state, [{'id': 1, 'size': 0}])


def downgrade() -> None:
    op.drop_table('log_state')
    op.drop_table('log_entries')
    op.drop_index('ix_batch_members_row_id', table_name='batch_members')
    op.drop_table('batch_members')
    op.drop_index('ix_batches_agent_id_log_index', table_name='batches')
    op.drop_table('batches')
    op.drop_table('agent_keys')
