"""recurring maintenance: series (RRULE and duration) and cancelled occurrences

`maintenance_series` holds each recorded series (RFC 5545 RRULE from its start, in its time zone,
each occurrence lasting duration_seconds), stamped with the collector's clock like a one-off
announcement; `occurrence_cancellations` one row per occurrence cancelled, by its start. Both are
append-only evidence: a series is only ever cancelled, never edited.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa

from collector.db import UTCDateTime

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'maintenance_series',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('policy', sa.String(length=128), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('start', UTCDateTime(), nullable=False),
        sa.Column('rrule', sa.Text(), nullable=False),
        sa.Column('duration_seconds', sa.Integer(), nullable=False),
        sa.Column('timezone', sa.String(length=64), nullable=False),
        sa.Column('note', sa.Text(), nullable=False),
        sa.Column('recorded_at', UTCDateTime(), nullable=False),
        sa.Column('recorded_by', sa.String(length=16), nullable=False),
        sa.Column('author', sa.String(length=128), nullable=False),
        sa.Column('stated_announced', UTCDateTime(), nullable=True),
        sa.Column('cancelled_at', UTCDateTime(), nullable=True),
        sa.Column('cancelled_by', sa.String(length=16), nullable=True),
        sa.Column('cancel_reason', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id', name='pk_maintenance_series'),
    )
    op.create_index('ix_maintenance_series_policy', 'maintenance_series', ['policy'], unique=False)
    op.create_table(
        'occurrence_cancellations',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('series_id', sa.Integer(), nullable=False),
        sa.Column('start', UTCDateTime(), nullable=False),
        sa.Column('cancelled_at', UTCDateTime(), nullable=False),
        sa.Column('cancelled_by', sa.String(length=16), nullable=False),
        sa.Column('cancel_reason', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['series_id'], ['maintenance_series.id'],
                                name='fk_occurrence_cancellations_series_id_maintenance_series'),
        sa.PrimaryKeyConstraint('id', name='pk_occurrence_cancellations'),
        sa.UniqueConstraint('series_id', 'start', name='uq_occurrence_cancellations_series_id_start'),
    )
    op.create_index('ix_occurrence_cancellations_series_id', 'occurrence_cancellations', ['series_id'], unique=False)


def downgrade() -> None:
    # Below this revision a report cannot see a series: its excluded minutes would silently count
    # as downtime again. Refuse while there is any, rather than drop evidence.
    bind = op.get_bind()
    recorded = bind.execute(sa.text('SELECT COUNT(*) FROM maintenance_series')).scalar()
    if recorded:
        raise RuntimeError(f"cannot downgrade below 0011: {recorded} recurring maintenance series are recorded, "
                           "and the older schema cannot hold them")
    op.drop_index('ix_occurrence_cancellations_series_id', table_name='occurrence_cancellations')
    op.drop_table('occurrence_cancellations')
    op.drop_index('ix_maintenance_series_policy', table_name='maintenance_series')
    op.drop_table('maintenance_series')
