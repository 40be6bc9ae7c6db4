"""The words both halves of the studio share, at the bottom of the house.

Django-free and dependency-free (standard library only): the ML package (``trainer_worker.training``)
reads and writes completions, trains verifiers on these labels and scores with these numbers; the
web app (``annotator``) stores the same labels, validates input against them and builds its Django
model choices from them. Both import from here; this package imports nothing of the project, which
the import contracts in pyproject.toml check.

- ``format``: how a chain of thought is written as text (``<think>`` steps ``</think>`` answer).
- ``steps``: the per-project rules that split the think block into steps.
- ``labels``: the SafeWork label taxonomy (categories, safety / value / knowledge labels, verdicts,
  step ratings, safety tags) and the scores SafeWork-R1's verifiers give the labels.
- ``stages``: the names of the training stages.
"""
