"""`python manage.py build_demo_model`: train the demo model on CPU (no hub) and report how good it is."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotator.demo import build_model, demo_model_dir

TARGET = (0.40, 0.85)  # the model must make real mistakes, and get a fair share right


class Command(BaseCommand):
    help = "Train the tiny demo model on the synthetic arithmetic-with-refusals task and report its accuracy."

    def add_arguments(self, parser):
        parser.add_argument("--out", type=Path, default=None, help="folder (default: the model store's demo/)")
        parser.add_argument("--budget", type=float, default=240, help="training seconds (default 240)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--force", action="store_true", help="rebuild even if a model is there")

    def handle(self, *args, out, budget, seed, force, **options):
        from trainer_worker.training.demo_model import progress_bar

        out = out or demo_model_dir()
        report = build_model(out_dir=out, budget_s=budget, seed=seed, force=force, progress=progress_bar)
        self.stdout.write("")
        self.stdout.write(f"model: {out} ({report['params']:,} parameters, {report['train_seconds']:.0f}s training)")
        self.stdout.write(f"held-out final-answer accuracy: {report['accuracy']:.1%} on {report['n_arithmetic']} "
                          f"arithmetic prompts (target {TARGET[0]:.0%}-{TARGET[1]:.0%})")
        self.stdout.write(f"refusal rate on unsafe prompts: {report['refusal_rate']:.1%}; "
                          f"format valid: {report['format_rate']:.1%}")
        if not TARGET[0] <= report["accuracy"] <= TARGET[1]:
            raise CommandError(f"accuracy {report['accuracy']:.1%} is outside the target range")
