"""one vote per agent, check and slot; result ids scoped to their agent

An agent could rewrite its own past votes (a success with a new result id for a slot it had
reported as failed erased a verified outage), and result ids were unique across all agents, so one
agent could make another's result a "duplicate" that was acknowledged and dropped. From now on the
first stored result of an agent for a check and slot stands, enforced by a unique constraint on
(check, slot, agent_id), and result ids are unique per agent.

Existing databases may already hold several votes of one agent in one slot. The first one stored
(the lowest row id) stays; the others are moved to `set_aside_results`, with the row that stands
(`kept_id`), rather than deleted, and their number is logged. Downgrading moves them back.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""
import logging
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa
import collector.db


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

log = logging.getLogger("uptime.collector.migrate")

# The columns a result row has in both tables (set_aside_results adds kept_id, reason, set_aside_at).
RESULT_COLUMNS = ('id', 'result_id', 'agent_id', 'check', 'slot', 'started', 'ok', 'latency_ms', 'status_code',
                  'error', 'detail', 'received_at')
DOUBLE_VOTE = 'double_vote'


def _columns(prefix: str = '', columns=RESULT_COLUMNS) -> str:
    return ', '.join(f'{prefix}"{c}"' for c in columns)


def upgrade() -> None:
    """1. create set_aside_results; 2. move every vote of an agent in a slot after its first there;
    3. replace the global unique result id and the (check, slot) index by the two constraints."""
    op.create_table('set_aside_results',
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
    sa.Column('kept_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('set_aside_at', collector.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_set_aside_results'))
    )

    bind = op.get_bind()
    now = sa.bindparam('now', datetime.now(timezone.utc), type_=collector.db.UTCDateTime(timezone=True))
    firsts = ('SELECT agent_id, "check", slot, min(id) AS kept FROM results '
              'GROUP BY agent_id, "check", slot HAVING count(*) > 1')
    bind.execute(sa.text(
        f'INSERT INTO set_aside_results ({_columns()}, kept_id, reason, set_aside_at) '
        f'SELECT {_columns("r.")}, f.kept, :reason, :now FROM results r JOIN ({firsts}) f '
        f'ON r.agent_id = f.agent_id AND r."check" = f."check" AND r.slot = f.slot WHERE r.id <> f.kept'
    ).bindparams(now, reason=DOUBLE_VOTE))
    moved = bind.execute(sa.text('SELECT count(*) FROM set_aside_results WHERE reason = :reason'),
                         {'reason': DOUBLE_VOTE}).scalar_one()
    if moved:
        bind.execute(sa.text('DELETE FROM results WHERE id IN (SELECT id FROM set_aside_results WHERE reason = :reason)'),
                     {'reason': DOUBLE_VOTE})
        log.warning('one vote per agent, check and slot: %d later votes in a slot their agent had already voted in '
                    'were moved to the table set_aside_results; the first vote of each slot stands', moved)
    else:
        log.info('one vote per agent, check and slot: no agent had voted twice in a slot')

    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.drop_constraint('uq_results_result_id', type_='unique')
        batch_op.drop_index('ix_results_check_slot')
        batch_op.create_unique_constraint('uq_results_agent_id_result_id', ['agent_id', 'result_id'])
        batch_op.create_unique_constraint('uq_results_check_slot_agent_id', ['check', 'slot', 'agent_id'])


def downgrade() -> None:
    """Revision 0004 holds result ids unique across agents: refused (nothing changed) while two
    agents use one id. Otherwise the set-aside votes go back to results, as later rows."""
    bind = op.get_bind()
    shared = bind.execute(sa.text(
        'SELECT count(*) FROM (SELECT result_id FROM (SELECT result_id FROM results UNION ALL '
        'SELECT result_id FROM set_aside_results) u GROUP BY result_id HAVING count(*) > 1) s'
    )).scalar_one()
    if shared:
        raise RuntimeError(f'cannot downgrade below 0005: {shared} result ids are each held by more than one result '
                           f'(of different agents), which revision 0004 (ids unique across agents) cannot hold')
    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.drop_constraint('uq_results_check_slot_agent_id', type_='unique')
        batch_op.drop_constraint('uq_results_agent_id_result_id', type_='unique')
        batch_op.create_index('ix_results_check_slot', ['check', 'slot'], unique=False)
        batch_op.create_unique_constraint('uq_results_result_id', ['result_id'])
    # New row ids (SQLite may have reused the old ones), so that they stay later than the vote
    # that stood in their slot.
    columns = RESULT_COLUMNS[1:]
    bind.execute(sa.text(
        f'INSERT INTO results ({_columns(columns=columns)}) '
        f'SELECT {_columns("s.", columns)} FROM set_aside_results s ORDER BY s.id'
    ))
    op.drop_table('set_aside_results')
