"""A partial index of the traces in flight (queued, running, stopping), for the sweeps that read
them every few seconds (annotator/services/generation.py TraceSweep, annotator/services/waiting.py).
Built CONCURRENTLY, as 0009's: no lock on the traces' writes while it builds."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('annotator', '0011_prompt_has_trace'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='trace',
            index=models.Index(condition=models.Q(('status__in', ['queued', 'running', 'stopping'])),
                               fields=['updated_at'], name='trace_in_flight'),
        ),
    ]
