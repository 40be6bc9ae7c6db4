"""The queue's triage keys on Trace (``lowest_score``, ``scorer_spread``, ``mean_step_score``), kept
by triggers on annotator_stepscore, backfilled by one UPDATE, and the indexes of the two triage
orders that sort by a key alone.

The triggers are per statement, with transition tables: whatever writes scores (the live
scorers' upserts, a batch INSERT, a cascade DELETE of steps or traces, a test or a shell), the
statement ends with one UPDATE of the traces it touched, in its transaction. The traces' rows are
locked first, in id order, and the UPDATE (a new statement, so a new snapshot) then sees a
concurrent writer's scores of the same trace once that one has committed.

Not atomic: the indexes are built CONCURRENTLY (as in 0009), so writes to traces go on while they
build. The triggers exist before the backfill, so no score written meanwhile is missed."""

from django.conf import settings
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models

# The definitions (annotator/selectors.py queue_list): the lowest score of any step or the answer;
# the largest spread max - min among the steps (or the answer) scored by two or more scorers; the
# mean of the steps' scores (the answer, step_index -1, left out). NULL where there is none.
KEYS = """
UPDATE annotator_trace t
SET lowest_score = v.lowest, scorer_spread = v.spread, mean_step_score = v.mean
FROM (
    SELECT x.id, agg.lowest, agg.mean, sp.spread
    FROM {traces} AS x(id)
    LEFT JOIN (
        SELECT trace_id, min(score) AS lowest, avg(score) FILTER (WHERE step_index >= 0) AS mean
        FROM annotator_stepscore WHERE {filter} GROUP BY trace_id
    ) agg ON agg.trace_id = x.id
    LEFT JOIN (
        SELECT trace_id, max(d) AS spread
        FROM (SELECT trace_id, max(score) - min(score) AS d FROM annotator_stepscore
              WHERE {filter} GROUP BY trace_id, step_index HAVING count(*) >= 2) per_step
        GROUP BY trace_id
    ) sp ON sp.trace_id = x.id
) v
WHERE t.id = v.id
  AND (t.lowest_score, t.scorer_spread, t.mean_step_score) IS DISTINCT FROM (v.lowest, v.spread, v.mean)
"""

TRIGGERS = """
CREATE OR REPLACE FUNCTION annotator_trace_triage_keys() RETURNS trigger AS $$
DECLARE
    ids bigint[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(DISTINCT trace_id) INTO ids FROM new_rows;
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT array_agg(DISTINCT trace_id) INTO ids
        FROM (SELECT trace_id FROM old_rows UNION SELECT trace_id FROM new_rows) touched;
    ELSE
        SELECT array_agg(DISTINCT trace_id) INTO ids FROM old_rows;
    END IF;
    IF ids IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM annotator_trace WHERE id = ANY(ids) ORDER BY id FOR UPDATE;
""" + KEYS.format(traces="unnest(ids)", filter="trace_id = ANY(ids)") + """;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER annotator_stepscore_triage_insert AFTER INSERT ON annotator_stepscore
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION annotator_trace_triage_keys();
CREATE TRIGGER annotator_stepscore_triage_update AFTER UPDATE ON annotator_stepscore
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION annotator_trace_triage_keys();
CREATE TRIGGER annotator_stepscore_triage_delete AFTER DELETE ON annotator_stepscore
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION annotator_trace_triage_keys();
"""

NO_TRIGGERS = """
DROP TRIGGER IF EXISTS annotator_stepscore_triage_insert ON annotator_stepscore;
DROP TRIGGER IF EXISTS annotator_stepscore_triage_update ON annotator_stepscore;
DROP TRIGGER IF EXISTS annotator_stepscore_triage_delete ON annotator_stepscore;
DROP FUNCTION IF EXISTS annotator_trace_triage_keys();
"""

# Every trace that has scores (the others keep NULL).
BACKFILL = KEYS.format(traces="(SELECT DISTINCT trace_id FROM annotator_stepscore)", filter="true")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('annotator', '0009_list_indexes'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='trace',
            name='lowest_score',
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='trace',
            name='mean_step_score',
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='trace',
            name='scorer_spread',
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.RunSQL(TRIGGERS, NO_TRIGGERS),
        migrations.RunSQL(BACKFILL, migrations.RunSQL.noop),
        AddIndexConcurrently(
            model_name='trace',
            index=models.Index(models.F('project'), models.OrderBy(models.F('lowest_score'), nulls_last=True),
                               models.F('id'), name='trace_project_lowest'),
        ),
        AddIndexConcurrently(
            model_name='trace',
            index=models.Index(models.F('project'),
                               models.OrderBy(models.F('scorer_spread'), descending=True, nulls_last=True),
                               models.F('id'), name='trace_project_spread'),
        ),
    ]
