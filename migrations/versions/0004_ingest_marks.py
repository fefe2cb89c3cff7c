"""ingest marks replace the index on results.received_at; checks and policies changeable through the API

The evaluating replica used to find what other replicas stored by scanning results by
received_at: during a replay of a long backlog that meant re-judging the last 30 s of replayed
history on every tick, and the index cost every insert. A batch now writes one mark per check and
stretch of slots it touched.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""
from alembic import op
import sqlalchemy as sa
import collector.db


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ingest_marks',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('replica', sa.String(length=128), nullable=False),
    sa.Column('check', sa.String(length=128), nullable=False),
    sa.Column('slot_from', collector.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('slot_to', collector.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('received_at', collector.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ingest_marks'))
    )
    with op.batch_alter_table('ingest_marks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ingest_marks_received_at'), ['received_at'], unique=False)
    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.drop_index('ix_results_received_at')
    with op.batch_alter_table('checks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('entry', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('config_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('removed_at', collector.db.UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('config_token_sha256', sa.String(length=64), nullable=True))
    # What is in the database now is taken as what the config last gave, so that an agent revoked
    # before the upgrade stays revoked.
    op.execute("UPDATE agents SET config_token_sha256 = token_sha256")
    op.create_table('policies',
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('entry', sa.JSON(), nullable=True),
    sa.Column('config_hash', sa.String(length=64), nullable=True),
    sa.Column('updated_at', collector.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('removed_at', collector.db.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_policies'))
    )


def downgrade() -> None:
    op.drop_table('policies')
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.drop_column('config_token_sha256')
    with op.batch_alter_table('checks', schema=None) as batch_op:
        batch_op.drop_column('removed_at')
        batch_op.drop_column('config_hash')
        batch_op.drop_column('entry')
    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.create_index('ix_results_received_at', ['received_at'], unique=False)
    with op.batch_alter_table('ingest_marks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ingest_marks_received_at'))
    op.drop_table('ingest_marks')
