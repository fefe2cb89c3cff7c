"""incidents and their updates, linked to verified windows and maintenance

`incidents` holds what an operator declared (title, impact, the policies affected, when it was
opened and resolved by the collector's clock, a post-mortem link); `incident_updates` the updates
posted on it and `incident_links` its links to outage windows and maintenance announcements. Both
are only ever inserted into.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa

from collector.db import UTCDateTime

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'incidents',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('title', sa.String(length=200), nullable=False),
        sa.Column('impact', sa.String(length=16), nullable=False),
        sa.Column('policies', sa.JSON(), nullable=False),
        sa.Column('created_at', UTCDateTime(), nullable=False),
        sa.Column('created_by', sa.String(length=16), nullable=False),
        sa.Column('author', sa.String(length=128), nullable=False),
        sa.Column('updated_at', UTCDateTime(), nullable=False),
        sa.Column('resolved_at', UTCDateTime(), nullable=True),
        sa.Column('postmortem_url', sa.Text(), nullable=True),
        sa.Column('postmortem_at', UTCDateTime(), nullable=True),
        sa.Column('postmortem_by', sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint('id', name='pk_incidents'),
    )
    op.create_index('ix_incidents_created_at', 'incidents', ['created_at'], unique=False)
    op.create_index('ix_incidents_resolved_at', 'incidents', ['resolved_at'], unique=False)
    op.create_table(
        'incident_updates',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('incident_id', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('message', sa.Text(), nullable=False),
        sa.Column('recorded_at', UTCDateTime(), nullable=False),
        sa.Column('recorded_by', sa.String(length=16), nullable=False),
        sa.Column('author', sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], name='fk_incident_updates_incident_id_incidents'),
        sa.PrimaryKeyConstraint('id', name='pk_incident_updates'),
    )
    op.create_index('ix_incident_updates_incident_id', 'incident_updates', ['incident_id'], unique=False)
    op.create_table(
        'incident_links',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('incident_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('target_id', sa.Integer(), nullable=False),
        sa.Column('policy', sa.String(length=128), nullable=False),
        sa.Column('start', UTCDateTime(), nullable=False),
        sa.Column('linked_at', UTCDateTime(), nullable=False),
        sa.Column('linked_by', sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], name='fk_incident_links_incident_id_incidents'),
        sa.PrimaryKeyConstraint('id', name='pk_incident_links'),
        sa.UniqueConstraint('incident_id', 'kind', 'target_id', name='uq_incident_links_incident_id_kind_target_id'),
    )
    op.create_index('ix_incident_links_incident_id', 'incident_links', ['incident_id'], unique=False)


def downgrade() -> None:
    # Incidents are what the status page told customers; the older schema cannot hold them.
    # Refuse rather than delete them (as 0006 refuses to revive cancelled maintenance).
    count = op.get_bind().execute(sa.text('SELECT COUNT(*) FROM incidents')).scalar()
    if count:
        raise RuntimeError(f"cannot downgrade below 0010: {count} incident(s) are recorded, and the older "
                           "schema cannot hold them (export them with `uptime-collector incidents list "
                           "--format json` first, then delete them by hand if that is really meant)")
    op.drop_index('ix_incident_links_incident_id', table_name='incident_links')
    op.drop_table('incident_links')
    op.drop_index('ix_incident_updates_incident_id', table_name='incident_updates')
    op.drop_table('incident_updates')
    op.drop_index('ix_incidents_resolved_at', table_name='incidents')
    op.drop_index('ix_incidents_created_at', table_name='incidents')
    op.drop_table('incidents')
