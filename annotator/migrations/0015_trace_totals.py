"""The project's trace totals on the queue page (traces, unreviewed, reviewed, disputed), kept by
PostgreSQL: ``queue/counts/`` reads at most SHARDS rows instead of four capped counts of up to 10,001
rows, each followed by an EXPLAIN for the estimate above the cap (50-70 ms at 1M traces, and only
estimates; bench/lists.py).

Deltas, per statement (inserts, deletes: transition tables) and per row for the few updates that
move a trace in or out of "unreviewed" or "disputed" (or to another project): the WHEN of the
trigger picks those, so the many other updates of a trace (tokens, steps, status) cost nothing. A
trace counts while it exists, with its current columns, so adding what a statement inserted and
subtracting what it deleted keeps the sums exact whatever the order of writes; ``x = x + d`` on a
row is safe between concurrent writers (the second applies its delta to the first's committed row).
Each backend writes the shard pg_backend_pid() % SHARDS of a project, so concurrent generations in
one project rarely wait on one row until the other commits.

Atomic: the triggers and the backfill commit together (CREATE TRIGGER holds off writes to the
traces until then), so no trace is missed or counted twice."""

import django.db.models.deletion
from django.db import migrations, models


SHARDS = 16

DELTA = """
    INSERT INTO annotator_tracetotals AS c (project_id, shard, traces, unreviewed, disputed)
    SELECT project_id, pg_backend_pid() % {shards}, sum(n), sum(u), sum(d)
    FROM ({rows}) x(project_id, n, u, d)
    GROUP BY project_id
    HAVING sum(n) <> 0 OR sum(u) <> 0 OR sum(d) <> 0
    ORDER BY project_id
    ON CONFLICT (project_id, shard) DO UPDATE
    SET traces = c.traces + EXCLUDED.traces, unreviewed = c.unreviewed + EXCLUDED.unreviewed,
        disputed = c.disputed + EXCLUDED.disputed;
"""
PLUS = "SELECT project_id, 1, (review_count = 0)::int, disputed::int FROM {table}"
MINUS = "SELECT project_id, -1, -(review_count = 0)::int, -disputed::int FROM {table}"


def _delta(rows: str) -> str:
    return DELTA.format(shards=SHARDS, rows=rows)


FUNCTIONS = """
CREATE OR REPLACE FUNCTION annotator_trace_totals_apply() RETURNS trigger AS $$
BEGIN
    IF TG_LEVEL = 'ROW' THEN""" + _delta(
    "SELECT NEW.project_id, 1, (NEW.review_count = 0)::int, NEW.disputed::int "
    "UNION ALL SELECT OLD.project_id, -1, -(OLD.review_count = 0)::int, -OLD.disputed::int") + """
    ELSIF TG_OP = 'INSERT' THEN""" + _delta(PLUS.format(table="new_rows")) + """
    ELSE""" + _delta(MINUS.format(table="old_rows")) + """
        DELETE FROM annotator_tracetotals
        WHERE project_id IN (SELECT DISTINCT project_id FROM old_rows)
          AND traces = 0 AND unreviewed = 0 AND disputed = 0;
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER annotator_trace_totals_insert AFTER INSERT ON annotator_trace
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION annotator_trace_totals_apply();
CREATE TRIGGER annotator_trace_totals_delete AFTER DELETE ON annotator_trace
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION annotator_trace_totals_apply();
CREATE TRIGGER annotator_trace_totals_update AFTER UPDATE ON annotator_trace FOR EACH ROW
    WHEN ((OLD.review_count = 0) <> (NEW.review_count = 0) OR OLD.disputed <> NEW.disputed
          OR OLD.project_id <> NEW.project_id)
    EXECUTE FUNCTION annotator_trace_totals_apply();
"""

NO_FUNCTIONS = """
DROP TRIGGER IF EXISTS annotator_trace_totals_insert ON annotator_trace;
DROP TRIGGER IF EXISTS annotator_trace_totals_delete ON annotator_trace;
DROP TRIGGER IF EXISTS annotator_trace_totals_update ON annotator_trace;
DROP FUNCTION IF EXISTS annotator_trace_totals_apply();
"""

BACKFILL = """
INSERT INTO annotator_tracetotals (project_id, shard, traces, unreviewed, disputed)
SELECT project_id, 0, count(*), count(*) FILTER (WHERE review_count = 0), count(*) FILTER (WHERE disputed)
FROM annotator_trace GROUP BY project_id
"""


class Migration(migrations.Migration):

    dependencies = [
        ('annotator', '0014_queue_counters'),
    ]

    operations = [
        migrations.CreateModel(
            name='TraceTotals',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('shard', models.SmallIntegerField()),
                ('traces', models.IntegerField(default=0)),
                ('unreviewed', models.IntegerField(default=0)),
                ('disputed', models.IntegerField(default=0)),
                ('project', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='annotator.project')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('project', 'shard'), name='trace_totals_unique')],
            },
        ),
        migrations.RunSQL(FUNCTIONS, NO_FUNCTIONS),
        migrations.RunSQL(BACKFILL, migrations.RunSQL.noop),
    ]
