from django.apps import AppConfig


class AnnotatorConfig(AppConfig):
    name = "annotator"
    verbose_name = "SafeLadder annotator"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from annotator.services import corrections, generation

        # A new branch starts generating, and the original's viewers hear of it, once the edit commits.
        if generation.branch_created not in corrections.on_branch_created:
            corrections.on_branch_created.append(generation.branch_created)
        # Each committed correction lets the project's auto-train policy count it.
        from annotator.services import training

        if training.correction_added not in corrections.on_branch_created:
            corrections.on_branch_created.append(training.correction_added)
