"""`python manage.py build_demo_model`: train the demo model on CPU (no hub) and report how good it is."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand

from annotator.demo import build_model, demo_model_dir


class Command(BaseCommand):
    help = "Train the tiny demo model on the demo task's cold-start data and report its accuracy per class."

    def add_arguments(self, parser):
        parser.add_argument("--out", type=Path, default=None, help="folder (default: the model store's demo-task2/)")
        parser.add_argument("--steps", type=int, default=None, help="training steps (default: demo_model.MAX_STEPS)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--force", action="store_true", help="rebuild even if a model is there")

    def handle(self, *args, out, steps, seed, force, **options):
        from trainer_worker.training.demo_model import headline, progress_bar

        out = out or demo_model_dir()
        report = build_model(out_dir=out, steps=steps, seed=seed, force=force, progress=progress_bar)
        self.stdout.write("")
        self.stdout.write(f"model: {out} ({report['params']:,} parameters, {report['steps']} steps, "
                          f"{report['train_seconds']:.0f}s training)")
        self.stdout.write(f"held-out, per class: {headline(report)}; format valid: {report['format_rate']:.1%}")
