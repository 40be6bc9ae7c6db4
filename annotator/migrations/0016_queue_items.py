"""The person's queue as rows (``annotator_queueitem``: one per assigned trace), kept by the same
recount as the counters (migration 0014): the ``mine`` queue pages join them and read a page from
the index (annotator, project[, reviewed], trace) in trace order, however few or many the person's
traces and wherever they lie in the project. Counting the page from the counters was not enough:
the page itself, an EXISTS per trace, was read by a hash join of the whole project and a sort
(100-270 ms at 100k traces), and walking the project's traces in order instead costs seconds when
the person's traces are the project's newest (bench/lists.py, BENCHMARKS.md).

The recount of a prompt now also replaces its items (delete, insert: a prompt has a few traces and
a few annotators), under the same bucket lock; deleting an assignment and moving one recount too.
Atomic, with the backfill."""

import importlib

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


COUNTERS = importlib.import_module("annotator.migrations.0014_queue_counters")

ITEMS = """
    DELETE FROM annotator_queueitem WHERE prompt_id IN (SELECT unnest(prompt_ids));
    INSERT INTO annotator_queueitem (annotator_id, project_id, prompt_id, trace_id, reviewed)
    SELECT a.annotator_id, a.project_id, a.prompt_id, t.id,
           EXISTS (SELECT 1 FROM annotator_tracereview r WHERE r.trace_id = t.id AND r.annotator_id = a.annotator_id)
    FROM annotator_assignment a JOIN annotator_trace t ON t.prompt_id = a.prompt_id
    WHERE a.prompt_id IN (SELECT unnest(prompt_ids));
"""
OFF = "    PERFORM set_config('annotator.queue_recount', 'off', true);"
assert COUNTERS.FUNCTIONS.count(OFF) == 1
FUNCTIONS = COUNTERS.FUNCTIONS.replace(OFF, ITEMS + OFF)

TRIGGERS = """
CREATE OR REPLACE FUNCTION annotator_assignment_recount() RETURNS trigger AS $$
BEGIN
    IF TG_LEVEL = 'ROW' THEN
        PERFORM annotator_queue_recount(ARRAY[OLD.prompt_id, NEW.prompt_id]);
    ELSIF TG_OP = 'INSERT' THEN
        PERFORM annotator_queue_recount(ARRAY(SELECT DISTINCT prompt_id FROM new_rows));
    ELSE
        PERFORM annotator_queue_recount(ARRAY(SELECT DISTINCT prompt_id FROM old_rows));
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER annotator_assignment_recount_delete AFTER DELETE ON annotator_assignment
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION annotator_assignment_recount();
"""

NO_TRIGGERS = "DROP TRIGGER IF EXISTS annotator_assignment_recount_delete ON annotator_assignment;" + COUNTERS.FUNCTIONS

# One person's items are mostly one project's: without the pair's statistics PostgreSQL multiplies
# the two selectivities (680 rows estimated where 8,000 match, at 100k) and sorts instead of reading
# the index in order.
STATISTICS = "CREATE STATISTICS queue_item_people (dependencies, mcv) ON annotator_id, project_id FROM annotator_queueitem"
NO_STATISTICS = "DROP STATISTICS IF EXISTS queue_item_people"

BACKFILL = """
INSERT INTO annotator_queueitem (annotator_id, project_id, prompt_id, trace_id, reviewed)
SELECT a.annotator_id, a.project_id, a.prompt_id, t.id,
       EXISTS (SELECT 1 FROM annotator_tracereview r WHERE r.trace_id = t.id AND r.annotator_id = a.annotator_id)
FROM annotator_assignment a JOIN annotator_trace t ON t.prompt_id = a.prompt_id
"""


class Migration(migrations.Migration):

    dependencies = [
        ('annotator', '0015_trace_totals'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='QueueItem',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('reviewed', models.BooleanField()),
                ('annotator', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('project', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='annotator.project')),
                ('prompt', models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='annotator.prompt')),
                ('trace', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='queue_items', to='annotator.trace')),
            ],
            options={
                'indexes': [models.Index(fields=['annotator', 'project', 'trace'], name='queue_item_mine'), models.Index(fields=['annotator', 'project', 'reviewed', 'trace'], name='queue_item_mine_reviewed')],
            },
        ),
        migrations.RunSQL(FUNCTIONS + TRIGGERS, NO_TRIGGERS),
        migrations.RunSQL(STATISTICS, NO_STATISTICS),
        migrations.RunSQL(BACKFILL, migrations.RunSQL.noop),
    ]
