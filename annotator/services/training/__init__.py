"""Training runs: the closed loop from corrections to new model versions.

- ``runs``: the request side. ``run_create`` validates everything up front and enqueues the run on
  commit; ``run_cancel`` asks a run to stop.
- ``worker``: the train worker's side. ``run_execute`` claims a run, trains it through
  ``trainer_worker.training.runner.run_stage``, registers and evaluates the model version;
  ``runs_recover`` re-enqueues runs whose worker died.
- ``autotrain``: the project's auto-train policy (``autotrain_nudge`` after each correction,
  ``autotrain_check`` in the policy task).

Promotion to serving is a model-version decision: ``annotator.services.model_versions.model_promote``.
The pure ML work (training stages, adapter merging, dataset concatenation, held-out evaluation)
lives in ``trainer_worker.training``; these modules only move rows and files around it.
"""
