"""The queue's personal counters, kept by PostgreSQL: exact and read in one row whatever the size
(issue 14; bench/lists.py). Per assignment, the counts of its prompt's traces (not failed / failed)
and of those the annotator reviewed, and whether the prompt has any trace; per (project, annotator),
the sums of those (``annotator_queuecounter``). ``queue/counts/`` and the ``mine`` queue page read
that row instead of counting the person's traces through the assignments (a hash join of every
assigned prompt's traces and reviews: 0.5-1 s exact at 90k traces, hence the caps and estimates
before).

Two levels, so that every count is recomputed, never patched by deltas whose order matters (a
cascade may delete a trace's reviews before or after the trace): whenever a trace is inserted or
deleted, a trace moves in or out of ``failed`` or to another prompt, or a review is inserted,
deleted or moved, the assignments of the prompts concerned are counted again from the tables
(``annotator_queue_recount``: one UPDATE, a few index reads per assignment). A per-statement
trigger on the assignments then adds each statement's difference (new rows - old rows) to the
counters, so a counter is always the sum of its assignments, whoever writes (the services, a bulk
INSERT, a cascade, a shell). The ORM cannot write the assignment's counts (a guard puts them back).

Concurrency: two writers of the same prompt (say an assignment created while a trace of its prompt
is inserted, neither seeing the other's uncommitted row) would each count without the other. So
each recount first takes a transaction advisory lock of the prompt's bucket (prompt id mod 1024:
bounded locks even for a bulk statement of 200k prompts), in order, and only then reads, in a new
statement, hence a new snapshot (READ COMMITTED): the writer who comes second waits for the first
to commit and sees its rows. A review's recount locks the review's traces first (the review
service then updates the trace; a generation failing that trace holds the trace, then wants the
bucket: the same order, no deadlock).

Meaning (the selectors as they were, annotator/selectors.py ``_mine``): assigned = the traces not
failed of the prompts assigned to the person; done = of those, the ones they reviewed; left =
assigned - done; prompts still to generate = their assigned prompts with no trace at all. The
services keep an assignment, its prompt and the prompt's traces in one project.

Atomic: the columns (constant defaults, no table rewrite), the triggers and the backfill commit
together, so no write in between is missed or counted twice."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


BUCKETS = 1024
LOCK_CLASS = 1414  # the advisory lock space of these counts: pg_advisory_xact_lock(LOCK_CLASS, bucket)

COUNTS = "trace_count, done_count, failed_count, failed_done_count"

FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION annotator_queue_recount(prompt_ids bigint[]) RETURNS void AS $$
DECLARE
    b int;
BEGIN
    IF prompt_ids IS NULL OR cardinality(prompt_ids) = 0 THEN
        RETURN;
    END IF;
    FOR b IN SELECT DISTINCT (p % {BUCKETS})::int FROM unnest(prompt_ids) p WHERE p IS NOT NULL ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock({LOCK_CLASS}, b);
    END LOOP;
    PERFORM set_config('annotator.queue_recount', 'on', true);
    UPDATE annotator_assignment a
    SET trace_count = v.traces, done_count = v.done, failed_count = v.failed,
        failed_done_count = v.failed_done, prompt_traced = v.traced
    FROM (
        SELECT a2.id,
               count(t.id) FILTER (WHERE t.status <> 'failed') AS traces,
               count(r.id) FILTER (WHERE t.status <> 'failed') AS done,
               count(t.id) FILTER (WHERE t.status = 'failed') AS failed,
               count(r.id) FILTER (WHERE t.status = 'failed') AS failed_done,
               count(t.id) > 0 AS traced
        FROM annotator_assignment a2
        LEFT JOIN annotator_trace t ON t.prompt_id = a2.prompt_id
        LEFT JOIN annotator_tracereview r ON r.trace_id = t.id AND r.annotator_id = a2.annotator_id
        WHERE a2.prompt_id IN (SELECT unnest(prompt_ids))
        GROUP BY a2.id
    ) v
    WHERE a.id = v.id
      AND ({COUNTS}, a.prompt_traced) IS DISTINCT FROM (v.traces, v.done, v.failed, v.failed_done, v.traced);
    PERFORM set_config('annotator.queue_recount', 'off', true);
END;
$$ LANGUAGE plpgsql;

-- The assignment's counts are the recount's alone: the ORM's save() of a stale instance keeps them.
CREATE OR REPLACE FUNCTION annotator_assignment_counts_guard() RETURNS trigger AS $$
BEGIN
    IF current_setting('annotator.queue_recount', true) IS DISTINCT FROM 'on' THEN
        NEW.trace_count := OLD.trace_count;
        NEW.done_count := OLD.done_count;
        NEW.failed_count := OLD.failed_count;
        NEW.failed_done_count := OLD.failed_done_count;
        NEW.prompt_traced := OLD.prompt_traced;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

-- New assignments are counted from their prompts (per statement); so is one moved to another prompt
-- or annotator (per row: rare).
CREATE OR REPLACE FUNCTION annotator_assignment_recount() RETURNS trigger AS $$
BEGIN
    IF TG_LEVEL = 'ROW' THEN
        PERFORM annotator_queue_recount(ARRAY[NEW.prompt_id]);
    ELSE
        PERFORM annotator_queue_recount(ARRAY(SELECT DISTINCT prompt_id FROM new_rows));
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

-- Traces: inserted, deleted (per statement), moved in or out of failed or to another prompt (per row,
-- the WHEN of the trigger picks those few updates; every other update of a trace costs nothing).
CREATE OR REPLACE FUNCTION annotator_trace_queue_recount() RETURNS trigger AS $$
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

-- Reviews: the traces are locked first (see the module's docstring), then their prompts recounted.
-- A review whose trace is gone (deleted earlier in the transaction) was counted out with the trace.
CREATE OR REPLACE FUNCTION annotator_review_queue_recount() RETURNS trigger AS $$
DECLARE
    ids bigint[];
BEGIN
    IF TG_LEVEL = 'ROW' THEN
        ids := ARRAY[OLD.trace_id, NEW.trace_id];
    ELSIF TG_OP = 'INSERT' THEN
        ids := ARRAY(SELECT DISTINCT trace_id FROM new_rows);
    ELSE
        ids := ARRAY(SELECT DISTINCT trace_id FROM old_rows);
    END IF;
    PERFORM 1 FROM annotator_trace WHERE id = ANY(ids) ORDER BY id FOR NO KEY UPDATE;
    PERFORM annotator_queue_recount(ARRAY(SELECT DISTINCT prompt_id FROM annotator_trace WHERE id = ANY(ids)));
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
"""

# Prompt.has_trace (migration 0011) followed inserts and deletes of traces only; a trace moved to
# another prompt (an UPDATE) now moves it too, so "prompts still to generate" agrees with the counters.
HAS_TRACE_MOVED = """
CREATE OR REPLACE FUNCTION annotator_prompt_has_trace_moved() RETURNS trigger AS $$
BEGIN
    UPDATE annotator_prompt SET has_trace = true WHERE id = NEW.prompt_id AND NOT has_trace;
    UPDATE annotator_prompt p SET has_trace = EXISTS (SELECT 1 FROM annotator_trace t WHERE t.prompt_id = p.id)
    WHERE p.id = OLD.prompt_id AND p.has_trace;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER annotator_trace_has_trace_move AFTER UPDATE ON annotator_trace FOR EACH ROW
    WHEN (OLD.prompt_id <> NEW.prompt_id) EXECUTE FUNCTION annotator_prompt_has_trace_moved();
"""
NO_HAS_TRACE_MOVED = """
DROP TRIGGER IF EXISTS annotator_trace_has_trace_move ON annotator_trace;
DROP FUNCTION IF EXISTS annotator_prompt_has_trace_moved();
"""

# The counters: a statement's assignment rows, new minus old, summed per (project, annotator) and
# added in key order. A row whose counts all come back to zero goes (no row reads as zeros).
DELTA = """
    INSERT INTO annotator_queuecounter AS c
        (project_id, annotator_id, assigned, done, failed, failed_done, untraced)
    SELECT project_id, annotator_id, sum(a), sum(d), sum(f), sum(fd), sum(u)
    FROM ({rows}) x(project_id, annotator_id, a, d, f, fd, u)
    GROUP BY project_id, annotator_id
    HAVING sum(a) <> 0 OR sum(d) <> 0 OR sum(f) <> 0 OR sum(fd) <> 0 OR sum(u) <> 0
    ORDER BY project_id, annotator_id
    ON CONFLICT (project_id, annotator_id) DO UPDATE
    SET assigned = c.assigned + EXCLUDED.assigned, done = c.done + EXCLUDED.done,
        failed = c.failed + EXCLUDED.failed, failed_done = c.failed_done + EXCLUDED.failed_done,
        untraced = c.untraced + EXCLUDED.untraced;
"""
PLUS = f"SELECT project_id, annotator_id, {COUNTS}, (NOT prompt_traced)::int FROM new_rows"
MINUS = ("SELECT project_id, annotator_id, -trace_count, -done_count, -failed_count, -failed_done_count, "
         "-(NOT prompt_traced)::int FROM old_rows")

COUNTER_APPLY = """
CREATE OR REPLACE FUNCTION annotator_queue_counter_apply() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN""" + DELTA.format(rows=PLUS) + """
    ELSIF TG_OP = 'UPDATE' THEN""" + DELTA.format(rows=PLUS + " UNION ALL " + MINUS) + """
    ELSE""" + DELTA.format(rows=MINUS) + """
        DELETE FROM annotator_queuecounter c
        WHERE (c.project_id, c.annotator_id) IN (SELECT project_id, annotator_id FROM old_rows)
          AND c.assigned = 0 AND c.done = 0 AND c.failed = 0 AND c.failed_done = 0 AND c.untraced = 0;
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
"""

TRIGGERS = f"""
CREATE TRIGGER annotator_assignment_counts_guard BEFORE UPDATE ON annotator_assignment FOR EACH ROW
    WHEN ((OLD.trace_count, OLD.done_count, OLD.failed_count, OLD.failed_done_count, OLD.prompt_traced)
          IS DISTINCT FROM
          (NEW.trace_count, NEW.done_count, NEW.failed_count, NEW.failed_done_count, NEW.prompt_traced))
    EXECUTE FUNCTION annotator_assignment_counts_guard();
CREATE TRIGGER annotator_assignment_recount_insert AFTER INSERT ON annotator_assignment
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION annotator_assignment_recount();
CREATE TRIGGER annotator_assignment_recount_move AFTER UPDATE ON annotator_assignment FOR EACH ROW
    WHEN (OLD.prompt_id <> NEW.prompt_id OR OLD.annotator_id <> NEW.annotator_id)
    EXECUTE FUNCTION annotator_assignment_recount();
CREATE TRIGGER annotator_assignment_counter_insert AFTER INSERT ON annotator_assignment
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION annotator_queue_counter_apply();
CREATE TRIGGER annotator_assignment_counter_update AFTER UPDATE ON annotator_assignment
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION annotator_queue_counter_apply();
CREATE TRIGGER annotator_assignment_counter_delete AFTER DELETE ON annotator_assignment
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION annotator_queue_counter_apply();

CREATE TRIGGER annotator_trace_queue_insert AFTER INSERT ON annotator_trace
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION annotator_trace_queue_recount();
CREATE TRIGGER annotator_trace_queue_delete AFTER DELETE ON annotator_trace
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION annotator_trace_queue_recount();
CREATE TRIGGER annotator_trace_queue_update AFTER UPDATE ON annotator_trace FOR EACH ROW
    WHEN ((OLD.status = 'failed') <> (NEW.status = 'failed') OR OLD.prompt_id <> NEW.prompt_id)
    EXECUTE FUNCTION annotator_trace_queue_recount();

CREATE TRIGGER annotator_tracereview_queue_insert AFTER INSERT ON annotator_tracereview
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION annotator_review_queue_recount();
CREATE TRIGGER annotator_tracereview_queue_delete AFTER DELETE ON annotator_tracereview
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION annotator_review_queue_recount();
CREATE TRIGGER annotator_tracereview_queue_update AFTER UPDATE ON annotator_tracereview FOR EACH ROW
    WHEN (OLD.trace_id <> NEW.trace_id OR OLD.annotator_id <> NEW.annotator_id)
    EXECUTE FUNCTION annotator_review_queue_recount();
"""

NO_TRIGGERS = """
DROP TRIGGER IF EXISTS annotator_assignment_counts_guard ON annotator_assignment;
DROP TRIGGER IF EXISTS annotator_assignment_recount_insert ON annotator_assignment;
DROP TRIGGER IF EXISTS annotator_assignment_recount_move ON annotator_assignment;
DROP TRIGGER IF EXISTS annotator_assignment_counter_insert ON annotator_assignment;
DROP TRIGGER IF EXISTS annotator_assignment_counter_update ON annotator_assignment;
DROP TRIGGER IF EXISTS annotator_assignment_counter_delete ON annotator_assignment;
DROP TRIGGER IF EXISTS annotator_trace_queue_insert ON annotator_trace;
DROP TRIGGER IF EXISTS annotator_trace_queue_delete ON annotator_trace;
DROP TRIGGER IF EXISTS annotator_trace_queue_update ON annotator_trace;
DROP TRIGGER IF EXISTS annotator_tracereview_queue_insert ON annotator_tracereview;
DROP TRIGGER IF EXISTS annotator_tracereview_queue_delete ON annotator_tracereview;
DROP TRIGGER IF EXISTS annotator_tracereview_queue_update ON annotator_tracereview;
DROP FUNCTION IF EXISTS annotator_queue_counter_apply();
DROP FUNCTION IF EXISTS annotator_review_queue_recount();
DROP FUNCTION IF EXISTS annotator_trace_queue_recount();
DROP FUNCTION IF EXISTS annotator_assignment_recount();
DROP FUNCTION IF EXISTS annotator_assignment_counts_guard();
DROP FUNCTION IF EXISTS annotator_queue_recount(bigint[]);
"""

# The counters start as the sums of the assignments as they are (counts 0, prompt not traced), then
# one recount of every assigned prompt brings both levels to the truth (through the triggers above).
BACKFILL = """
INSERT INTO annotator_queuecounter (project_id, annotator_id, assigned, done, failed, failed_done, untraced)
SELECT project_id, annotator_id, 0, 0, 0, 0, count(*) FROM annotator_assignment GROUP BY project_id, annotator_id;
SELECT annotator_queue_recount(ARRAY(SELECT DISTINCT prompt_id FROM annotator_assignment));
"""


class Migration(migrations.Migration):

    dependencies = [
        ('annotator', '0013_answer_rank'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='assignment',
            name='done_count',
            field=models.IntegerField(db_default=0, default=0, editable=False),
        ),
        migrations.AddField(
            model_name='assignment',
            name='failed_count',
            field=models.IntegerField(db_default=0, default=0, editable=False),
        ),
        migrations.AddField(
            model_name='assignment',
            name='failed_done_count',
            field=models.IntegerField(db_default=0, default=0, editable=False),
        ),
        migrations.AddField(
            model_name='assignment',
            name='prompt_traced',
            field=models.BooleanField(db_default=False, default=False, editable=False),
        ),
        migrations.AddField(
            model_name='assignment',
            name='trace_count',
            field=models.IntegerField(db_default=0, default=0, editable=False),
        ),
        migrations.CreateModel(
            name='QueueCounter',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('assigned', models.IntegerField(default=0)),
                ('done', models.IntegerField(default=0)),
                ('failed', models.IntegerField(default=0)),
                ('failed_done', models.IntegerField(default=0)),
                ('untraced', models.IntegerField(default=0)),
                ('annotator', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('project', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='annotator.project')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('project', 'annotator'), name='queue_counter_unique')],
            },
        ),
        migrations.RunSQL(FUNCTIONS + COUNTER_APPLY + TRIGGERS, NO_TRIGGERS),
        migrations.RunSQL(HAS_TRACE_MOVED, NO_HAS_TRACE_MOVED),
        migrations.RunSQL(BACKFILL, migrations.RunSQL.noop),
    ]
