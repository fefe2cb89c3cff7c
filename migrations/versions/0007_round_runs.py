"""round runs and policy progress: the rollup the status page reads

The evaluator keeps, per policy, the runs of consecutive non-UP rounds (FAILED, UNKNOWN) as it
settles them, and how far it has judged. The status page's current state and daily bars read
these, so that missing evidence is shown as unknown, never as up.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa
import collector.db


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('round_runs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('policy', sa.String(length=128), nullable=False),
    sa.Column('start', collector.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('end', collector.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('verdict', sa.String(length=16), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_round_runs'))
    )
    with op.batch_alter_table('round_runs', schema=None) as batch_op:
        batch_op.create_index('ix_round_runs_policy_start', ['policy', 'start'], unique=False)
        batch_op.create_index('ix_round_runs_end', ['end'], unique=False)
    op.create_table('policy_progress',
    sa.Column('policy', sa.String(length=128), nullable=False),
    sa.Column('judged_until', collector.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('policy', name=op.f('pk_policy_progress'))
    )


def downgrade() -> None:
    op.drop_table('policy_progress')
    with op.batch_alter_table('round_runs', schema=None) as batch_op:
        batch_op.drop_index('ix_round_runs_end')
        batch_op.drop_index('ix_round_runs_policy_start')
    op.drop_table('round_runs')
