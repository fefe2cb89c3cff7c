"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-25
"""
from alembic import op
import sqlalchemy as sa
import collector.db


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('agents',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('token_sha256', sa.String(length=64), nullable=True),
    sa.Column('created_at', collector.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', collector.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_seen', collector.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('clock_offset_seconds', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agents')),
    sa.UniqueConstraint('token_sha256', name=op.f('uq_agents_token_sha256'))
    )
    op.create_table('checks',
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('interval_seconds', sa.Float(), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('agents', sa.JSON(), nullable=False),
    sa.Column('updated_at', collector.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_checks'))
    )
    op.create_table('maintenance',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('policy', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('announced', collector.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('start', collector.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('end', collector.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('created_at', collector.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_maintenance'))
    )
    with op.batch_alter_table('maintenance', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_maintenance_policy'), ['policy'], unique=False)

    op.create_table('outage_windows',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('policy', sa.String(length=128), nullable=False),
    sa.Column('start', collector.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('end', collector.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('rule_hash', sa.String(length=64), nullable=False),
    sa.Column('evidence', sa.JSON(), nullable=False),
    sa.Column('updated_at', collector.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outage_windows'))
    )
    with op.batch_alter_table('outage_windows', schema=None) as batch_op:
        batch_op.create_index('ix_outage_windows_policy_start', ['policy', 'start'], unique=True)

    op.create_table('results',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('result_id', sa.String(length=64), nullable=False),
    sa.Column('agent_id', sa.String(length=64), nullable=False),
    sa.Column('check', sa.String(length=128), nullable=False),
    sa.Column('slot', collector.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('started', collector.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('ok', sa.Boolean(), nullable=False),
    sa.Column('latency_ms', sa.Float(), nullable=True),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('error', sa.String(length=32), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('received_at', collector.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], name=op.f('fk_results_agent_id_agents')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_results')),
    sa.UniqueConstraint('result_id', name=op.f('uq_results_result_id'))
    )
    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.create_index('ix_results_check_slot', ['check', 'slot'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.drop_index('ix_results_check_slot')

    op.drop_table('results')
    with op.batch_alter_table('outage_windows', schema=None) as batch_op:
        batch_op.drop_index('ix_outage_windows_policy_start')

    op.drop_table('outage_windows')
    with op.batch_alter_table('maintenance', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_maintenance_policy'))

    op.drop_table('maintenance')
    op.drop_table('checks')
    op.drop_table('agents')
