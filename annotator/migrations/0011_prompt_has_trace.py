"""Prompt.has_trace, kept by per-statement triggers on annotator_trace (an INSERT sets it for the
new traces' prompts; a DELETE recomputes it for theirs), backfilled by one UPDATE, and a partial
index of the untraced prompts: the queue's "prompts still to generate" and the next item's
fallback read those few prompts, not a trace lookup for every assigned prompt (bench/lists.py).

Not atomic: the index is built CONCURRENTLY. The triggers exist before the backfill, so no trace
written meanwhile is missed."""

from django.conf import settings
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models

TRIGGERS = """
CREATE OR REPLACE FUNCTION annotator_prompt_has_trace() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE annotator_prompt p SET has_trace = true
        WHERE p.id IN (SELECT DISTINCT prompt_id FROM new_rows) AND NOT p.has_trace;
    ELSE
        UPDATE annotator_prompt p
        SET has_trace = EXISTS (SELECT 1 FROM annotator_trace t WHERE t.prompt_id = p.id)
        WHERE p.id IN (SELECT DISTINCT prompt_id FROM old_rows) AND p.has_trace;
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER annotator_trace_has_trace_insert AFTER INSERT ON annotator_trace
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION annotator_prompt_has_trace();
CREATE TRIGGER annotator_trace_has_trace_delete AFTER DELETE ON annotator_trace
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION annotator_prompt_has_trace();
"""

NO_TRIGGERS = """
DROP TRIGGER IF EXISTS annotator_trace_has_trace_insert ON annotator_trace;
DROP TRIGGER IF EXISTS annotator_trace_has_trace_delete ON annotator_trace;
DROP FUNCTION IF EXISTS annotator_prompt_has_trace();
"""

BACKFILL = """
UPDATE annotator_prompt p SET has_trace = true
WHERE NOT p.has_trace AND EXISTS (SELECT 1 FROM annotator_trace t WHERE t.prompt_id = p.id)
"""


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('annotator', '0010_triage_keys'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='prompt',
            name='has_trace',
            field=models.BooleanField(db_default=False, default=False, editable=False),
        ),
        migrations.RunSQL(TRIGGERS, NO_TRIGGERS),
        migrations.RunSQL(BACKFILL, migrations.RunSQL.noop),
        AddIndexConcurrently(
            model_name='prompt',
            index=models.Index(condition=models.Q(('has_trace', False)), fields=['project', 'id'],
                               name='prompt_project_untraced'),
        ),
    ]
