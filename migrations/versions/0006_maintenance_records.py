"""maintenance records: the collector's own recording time, who recorded it, cancellation

A maintenance announcement is evidence a report relies on, so its notice is judged from when the
collector recorded it (`recorded_at`, the column that already held the collector's time), not
from the time the caller stated (`stated_announced`, kept beside it). Announcements are
append-only: a cancellation is recorded on the row, which stays.

Existing rows: recorded_at = created_at, stated_announced = announced, recorded_by = 'api' (the
only way announcements were written before).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa
import collector.db


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('maintenance', schema=None) as batch_op:
        batch_op.alter_column('created_at', new_column_name='recorded_at',
                              existing_type=sa.DateTime(timezone=True), existing_nullable=False)
        batch_op.alter_column('announced', new_column_name='stated_announced',
                              existing_type=sa.DateTime(timezone=True), existing_nullable=False,
                              nullable=True)
        batch_op.add_column(sa.Column('recorded_by', sa.String(length=16), nullable=False, server_default='api'))
        batch_op.add_column(sa.Column('author', sa.String(length=128), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('cancelled_at', collector.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('cancelled_by', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('cancel_reason', sa.Text(), nullable=True))
    # the defaults only filled the existing rows; new rows always say who recorded them
    with op.batch_alter_table('maintenance', schema=None) as batch_op:
        batch_op.alter_column('recorded_by', existing_type=sa.String(length=16), existing_nullable=False,
                              server_default=None)
        batch_op.alter_column('author', existing_type=sa.String(length=128), existing_nullable=False,
                              server_default=None)


def downgrade() -> None:
    # The schema before this revision cannot say that an announcement was cancelled: a cancelled
    # row would count again and change past reports. Refuse rather than revive or delete evidence.
    bind = op.get_bind()
    cancelled = bind.execute(sa.text('SELECT COUNT(*) FROM maintenance WHERE cancelled_at IS NOT NULL')).scalar()
    if cancelled:
        raise RuntimeError(f"cannot downgrade below 0006: {cancelled} maintenance announcement(s) are cancelled, "
                           "and the older schema would count them again")
    bind.execute(sa.text('UPDATE maintenance SET stated_announced = recorded_at WHERE stated_announced IS NULL'))
    with op.batch_alter_table('maintenance', schema=None) as batch_op:
        batch_op.drop_column('cancel_reason')
        batch_op.drop_column('cancelled_by')
        batch_op.drop_column('cancelled_at')
        batch_op.drop_column('author')
        batch_op.drop_column('recorded_by')
        batch_op.alter_column('stated_announced', new_column_name='announced',
                              existing_type=sa.DateTime(timezone=True), existing_nullable=True,
                              nullable=False)
        batch_op.alter_column('recorded_at', new_column_name='created_at',
                              existing_type=sa.DateTime(timezone=True), existing_nullable=False)
