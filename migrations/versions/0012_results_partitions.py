"""results partitioned by month on PostgreSQL

On PostgreSQL `results` becomes a table partitioned by range of `slot`, one partition a UTC month
(`results_2026_12`) and a default partition for slots no month covers (collector/partitions.py
says why `slot` and how the months are kept and dropped). On SQLite nothing changes.

A partitioned table's unique constraints must hold its partition key: the primary key becomes
(id, slot), and an agent's result ids are unique per agent and slot, (agent_id, result_id,
slot). Agents make a new id for every result and ship it again only with the same result, so
a replay still repeats a stored (agent, id, slot) and is still recognised as a duplicate; one
vote per agent, check and slot (check, slot, agent_id) holds its key already. No foreign key
points at results (batch_members.row_id has none, so that raw results can expire), and results'
own foreign key to agents is kept.

Upgrade: the table is renamed, the partitioned one made with the same columns and defaults, the
months of the stored rows (back to MAX_BACK_MONTHS before now; older rows go to the default
partition) and the months ingest writes to created, every row moved in one INSERT ... SELECT,
the id sequence handed over, and the old table dropped. Downgrade is the reverse; it is refused
(nothing changed) while an agent holds one result id in two slots, which the older schema
cannot hold.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""
import logging
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa

from collector import partitions as P

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

log = logging.getLogger("uptime.collector.migrate")

OLD = 'results_unpartitioned'
MAX_BACK_MONTHS = 24  # month partitions made for stored rows at most this far back; older ones: default
# The months ingest writes to with the default ingest.max_result_age (35 days); the collector
# makes those its configuration needs at start (partitions.ensure_partitions).
INGEST_AGE = 35 * 86400.0

_CONSTRAINTS = ('pk_results', 'uq_results_agent_id_result_id', 'uq_results_check_slot_agent_id',
                'fk_results_agent_id_agents')


def _rename_constraints(bind, table: str, suffix: str, *, back: bool = False) -> None:
    # constraint (index) names are unique per schema: the old table's make way for the new one's
    for name in _CONSTRAINTS:
        old, new = (name + suffix, name) if back else (name, name + suffix)
        bind.execute(sa.text(f'ALTER TABLE {table} RENAME CONSTRAINT {old} TO {new}'))


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != 'postgresql':
        return
    sequence = bind.execute(sa.text("SELECT pg_get_serial_sequence('results', 'id')")).scalar_one()
    bind.execute(sa.text(f'ALTER TABLE results RENAME TO {OLD}'))
    _rename_constraints(bind, OLD, '_unpartitioned')
    bind.execute(sa.text(f'CREATE TABLE results (LIKE {OLD} INCLUDING DEFAULTS) PARTITION BY RANGE (slot)'))
    bind.execute(sa.text(
        'ALTER TABLE results ADD CONSTRAINT pk_results PRIMARY KEY (id, slot), '
        'ADD CONSTRAINT uq_results_agent_id_result_id UNIQUE (agent_id, result_id, slot), '
        'ADD CONSTRAINT uq_results_check_slot_agent_id UNIQUE ("check", slot, agent_id), '
        'ADD CONSTRAINT fk_results_agent_id_agents FOREIGN KEY (agent_id) REFERENCES agents (id)'))
    bind.execute(sa.text(f'CREATE TABLE {P.DEFAULT_PARTITION} PARTITION OF results DEFAULT'))

    now = datetime.now(timezone.utc)
    first, last = bind.execute(sa.text(f'SELECT min(slot), max(slot) FROM {OLD}')).one()
    months = set(P.wanted_months(now, max_result_age=INGEST_AGE, retention_raw=None))
    if first is not None:
        floor = P.add_months(P.month_of(now), -MAX_BACK_MONTHS)
        ceiling = P.add_months(P.month_of(now), P.MONTHS_AHEAD)
        months |= {m for m in P.months_from(first, last) if floor <= m <= ceiling}
    for month in sorted(months):
        bind.execute(sa.text(f'CREATE TABLE {P.partition_name(month)} PARTITION OF results '
                             f'FOR VALUES {P.bounds_sql(month)}'))

    moved = bind.execute(sa.text(f'INSERT INTO results SELECT * FROM {OLD}')).rowcount
    bind.execute(sa.text(f'ALTER SEQUENCE {sequence} OWNED BY results.id'))
    bind.execute(sa.text(f'DROP TABLE {OLD}'))
    bind.execute(sa.text('ANALYZE results'))
    log.info('results partitioned by month: %d results moved into %d month partitions (%s to %s) and %s',
             moved, len(months), f'{min(months):%Y-%m}', f'{max(months):%Y-%m}', P.DEFAULT_PARTITION)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != 'postgresql':
        return
    kind = bind.execute(sa.text("SELECT relkind::text FROM pg_class WHERE oid = to_regclass('results')")).scalar()
    if kind != 'p':
        return
    reused = bind.execute(sa.text(
        'SELECT count(*) FROM (SELECT 1 FROM results GROUP BY agent_id, result_id HAVING count(*) > 1) s')).scalar_one()
    if reused:
        raise RuntimeError(f'cannot downgrade below 0012: {reused} result ids are each held by one agent in more than '
                           'one slot, which revision 0011 (ids unique per agent) cannot hold')
    sequence = bind.execute(sa.text("SELECT pg_get_serial_sequence('results', 'id')")).scalar_one()
    partitioned = 'results_partitioned'
    bind.execute(sa.text(f'ALTER TABLE results RENAME TO {partitioned}'))
    _rename_constraints(bind, partitioned, '_partitioned')
    bind.execute(sa.text(f'CREATE TABLE results (LIKE {partitioned} INCLUDING DEFAULTS)'))
    bind.execute(sa.text(
        'ALTER TABLE results ADD CONSTRAINT pk_results PRIMARY KEY (id), '
        'ADD CONSTRAINT uq_results_agent_id_result_id UNIQUE (agent_id, result_id), '
        'ADD CONSTRAINT uq_results_check_slot_agent_id UNIQUE ("check", slot, agent_id), '
        'ADD CONSTRAINT fk_results_agent_id_agents FOREIGN KEY (agent_id) REFERENCES agents (id)'))
    bind.execute(sa.text(f'INSERT INTO results SELECT * FROM {partitioned}'))
    bind.execute(sa.text(f'ALTER SEQUENCE {sequence} OWNED BY results.id'))
    bind.execute(sa.text(f'DROP TABLE {partitioned}'))  # its partitions with it
