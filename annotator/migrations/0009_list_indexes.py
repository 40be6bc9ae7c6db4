"""Indexes for keyset pages of the lists and the review queue: (project, filter columns…, id).

Built CONCURRENTLY (outside a transaction): on a large production table a plain CREATE INDEX
would block every write to traces while it builds."""

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('annotator', '0008_guide'),
    ]

    operations = [
        RemoveIndexConcurrently(
            model_name='prompt',
            name='annotator_p_project_3faf63_idx',
        ),
        RemoveIndexConcurrently(
            model_name='trace',
            name='annotator_t_project_b43d8d_idx',
        ),
        RemoveIndexConcurrently(
            model_name='trace',
            name='annotator_t_project_869706_idx',
        ),
        RemoveIndexConcurrently(
            model_name='trace',
            name='annotator_t_project_bdda9d_idx',
        ),
        AddIndexConcurrently(
            model_name='correction',
            index=models.Index(fields=['project', 'id'], name='correction_project_id'),
        ),
        AddIndexConcurrently(
            model_name='prompt',
            index=models.Index(fields=['project', 'id'], name='prompt_project_id'),
        ),
        AddIndexConcurrently(
            model_name='prompt',
            index=models.Index(fields=['project', 'category', 'id'], name='prompt_project_category_id'),
        ),
        AddIndexConcurrently(
            model_name='trace',
            index=models.Index(fields=['project', 'id'], name='trace_project_id'),
        ),
        AddIndexConcurrently(
            model_name='trace',
            index=models.Index(fields=['project', 'status', 'id'], name='trace_project_status_id'),
        ),
        AddIndexConcurrently(
            model_name='trace',
            index=models.Index(fields=['project', 'prompt', 'id'], name='trace_project_prompt_id'),
        ),
        AddIndexConcurrently(
            model_name='trace',
            index=models.Index(fields=['project', 'disputed', 'id'], name='trace_project_disputed_id'),
        ),
        AddIndexConcurrently(
            model_name='trace',
            index=models.Index(fields=['project', 'verdict', 'id'], name='trace_project_verdict_id'),
        ),
        AddIndexConcurrently(
            model_name='trace',
            index=models.Index(condition=models.Q(('review_count', 0)), fields=['project', 'id'],
                               name='trace_project_unreviewed'),
        ),
    ]
