"""The confident_wrong order's keys on Trace (annotator/answers.py): ``answer_verdict`` (the Python
answer check, written by ``answers.verdicts_fill``), and ``answer_rank`` / ``wrong_confidence``, kept
from it, the status and ``mean_step_score`` by a row trigger; the index the order reads, and a
partial index of the finished traces not checked yet.

The triggers: BEFORE INSERT OR UPDATE of a trace, a changed answer (or prompt) voids its verdict
and the rank and confidence are recomputed (so even a full ``save()`` of a stale instance cannot
leave them wrong); AFTER UPDATE of prompts (per statement, transition tables), a changed
``messages`` or ``reference_answer`` voids the verdicts of the prompt's traces. A void verdict is
checked again by the next ``verdicts_fill`` (the prompt edit's own, or the queue's).

Not atomic: the backfill runs the Python check in batches of ``answers.BATCH`` traces, each its own
transaction, and the indexes are built CONCURRENTLY (as in 0009, 0010). The columns are nullable
without a default (no table rewrite); the triggers exist before the backfill, so a trace ending
meanwhile gets its rank."""

from django.conf import settings
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models

from annotator import answers

TRIGGERS = """
CREATE OR REPLACE FUNCTION annotator_trace_answer_rank() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND (NEW.final_answer IS DISTINCT FROM OLD.final_answer
                             OR NEW.prompt_id IS DISTINCT FROM OLD.prompt_id) THEN
        NEW.answer_verdict := NULL;
    END IF;
    NEW.answer_rank := CASE WHEN NEW.status <> 'finished' THEN 1 ELSE NEW.answer_verdict END;
    NEW.wrong_confidence := CASE WHEN NEW.answer_rank = 0 THEN NEW.mean_step_score END;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER annotator_trace_answer_rank
    BEFORE INSERT OR UPDATE OF status, final_answer, prompt_id, answer_verdict, mean_step_score, answer_rank,
        wrong_confidence
    ON annotator_trace FOR EACH ROW EXECUTE FUNCTION annotator_trace_answer_rank();

CREATE OR REPLACE FUNCTION annotator_prompt_answer_verdicts() RETURNS trigger AS $$
BEGIN
    UPDATE annotator_trace t SET answer_verdict = NULL
    FROM (SELECT n.id FROM new_rows n JOIN old_rows o ON o.id = n.id
          WHERE n.messages IS DISTINCT FROM o.messages
             OR n.reference_answer IS DISTINCT FROM o.reference_answer) changed
    WHERE t.prompt_id = changed.id AND t.answer_verdict IS NOT NULL;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER annotator_prompt_answer_verdicts AFTER UPDATE ON annotator_prompt
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION annotator_prompt_answer_verdicts();
"""

NO_TRIGGERS = """
DROP TRIGGER IF EXISTS annotator_trace_answer_rank ON annotator_trace;
DROP FUNCTION IF EXISTS annotator_trace_answer_rank();
DROP TRIGGER IF EXISTS annotator_prompt_answer_verdicts ON annotator_prompt;
DROP FUNCTION IF EXISTS annotator_prompt_answer_verdicts();
"""


def backfill(apps, schema_editor) -> None:
    # Every trace (the unfinished ones too: they are ready when they finish with this answer).
    answers.verdicts_fill(using=schema_editor.connection.alias)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('annotator', '0012_trace_in_flight'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='trace',
            name='answer_verdict',
            field=models.SmallIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name='trace',
            name='answer_rank',
            field=models.SmallIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name='trace',
            name='wrong_confidence',
            field=models.FloatField(blank=True, editable=False, null=True),
        ),
        migrations.RunSQL(TRIGGERS, NO_TRIGGERS),
        migrations.RunPython(backfill, migrations.RunPython.noop),
        AddIndexConcurrently(
            model_name='trace',
            index=models.Index(models.F('project'), models.F('answer_rank'),
                               models.OrderBy(models.F('wrong_confidence'), descending=True, nulls_last=True),
                               models.F('id'), name='trace_project_answer_rank'),
        ),
        AddIndexConcurrently(
            model_name='trace',
            index=models.Index(condition=models.Q(('answer_rank__isnull', True)), fields=['project', 'id'],
                               name='trace_project_unranked'),
        ),
    ]
