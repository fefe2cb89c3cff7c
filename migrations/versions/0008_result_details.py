"""result details: degraded, and the probe's other details (phases, steps, certificate, dns)

Every result gains `degraded` (false for the results stored before: nothing said they were) and
`extra`, a JSON object of the details the agent sent (NULL when none). Round summaries gain the
agents whose success was degraded, so that rolling raw results up keeps DEGRADED rounds.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-09
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.add_column(sa.Column('degraded', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('extra', sa.JSON(), nullable=True))
    with op.batch_alter_table('round_summaries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('degraded', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('round_summaries', schema=None) as batch_op:
        batch_op.drop_column('degraded')
    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.drop_column('extra')
        batch_op.drop_column('degraded')
