"""The studio's data model. Writes go through annotator.services; reads through annotator.selectors."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from trainer_worker.vocabulary import labels, stages, steps


def _choices(name: str, titles: dict[str, str]) -> type[models.TextChoices]:
    """Django choices built from a mapping of the shared vocabulary (value -> title), so the label
    taxonomy is written once: members are the upper-cased values (``SafetyLabel.UNSAFE``)."""
    return models.TextChoices(name, [(value.upper(), (value, title)) for value, title in titles.items()])


class Role(models.TextChoices):
    """A member's role in one project. Ordered: each role may do what the ones below it may."""

    VIEWER = "viewer", "Viewer"  # reads everything in the project
    SUPERVISOR = "supervisor", "Supervisor"  # + generates, labels, reviews, corrects
    REVIEWER = "reviewer", "Reviewer"  # + adjudicates: approves corrections, resolves conflicting labels, gold
    OWNER = "owner", "Owner"  # + members, prompts, models, datasets, training, audit log, webhooks

    @classmethod
    def rank(cls, role: str) -> int:
        return [cls.VIEWER, cls.SUPERVISOR, cls.REVIEWER, cls.OWNER].index(role)


Category = _choices("Category", labels.CATEGORIES)
StepRule = _choices("StepRule", steps.STEP_RULES)


class Project(models.Model):
    name = models.CharField(max_length=200)
    guidelines = models.TextField(blank=True, default="")
    label_schema = models.JSONField(default=dict, blank=True)
    generation_defaults = models.JSONField(default=dict, blank=True)
    step_rule = models.CharField(max_length=20, choices=StepRule.choices, default=StepRule.LINE)
    serving_model = models.ForeignKey(
        "ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    autotrain_policy = models.JSONField(default=dict, blank=True)
    # A supervisor's control of a live trace lapses after this many idle seconds (annotator/services/claims.py).
    claim_idle_s = models.PositiveIntegerField(default=120)
    # How traces are supervised (annotator/supervision.py): the default mode and pace, the scorers
    # that rate each closed step live, and the score below which a trace pauses itself.
    supervision = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="projects")

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="membership_unique_user"),
            models.CheckConstraint(condition=Q(role__in=Role.values), name="membership_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} as {self.role}"


class Prompt(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="prompts")
    # Chat messages: [{"role": "user", "content": "text" | [{"type": "text", "text": ...}, {"type": "image"}]}]
    # Image parts are matched, in order, to the prompt's images.
    messages = models.JSONField()
    category = models.CharField(max_length=20, choices=Category.choices, default=Category.GENERAL)
    reference_answer = models.TextField(blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    # Whether the prompt has a trace: kept by triggers on the traces table (migration 0011), so the
    # queue's "prompts still to generate" reads the few untraced prompts, not every assignment's traces.
    has_trace = models.BooleanField(default=False, db_default=False, editable=False)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["project", "id"], name="prompt_project_id"),
            models.Index(fields=["project", "category", "id"], name="prompt_project_category_id"),
            models.Index(fields=["project", "id"], condition=Q(has_trace=False), name="prompt_project_untraced"),
        ]
        constraints = [models.CheckConstraint(condition=Q(category__in=Category.values), name="prompt_category_valid")]

    def __str__(self) -> str:
        return f"Prompt {self.pk}"


def _image_path(instance: PromptImage, filename: str) -> str:
    return f"prompts/{instance.prompt.project_id}/{instance.sha256[:2]}/{instance.sha256}{instance.extension}"


class PromptImage(models.Model):
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="images")
    position = models.PositiveIntegerField()
    file = models.FileField(upload_to=_image_path, max_length=300)
    content_type = models.CharField(max_length=50)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    size_bytes = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    original_name = models.CharField(max_length=255, blank=True, default="")

    EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "image/gif": ".gif"}

    class Meta:
        ordering = ["prompt", "position"]
        constraints = [models.UniqueConstraint(fields=["prompt", "position"], name="prompt_image_unique_position")]

    def __str__(self) -> str:
        return f"Image {self.position} of prompt {self.prompt_id}"

    @property
    def extension(self) -> str:
        return self.EXTENSIONS.get(self.content_type, ".bin")


class Backend(models.TextChoices):
    LOCAL = "local", "Local (transformers)"
    VLLM = "vllm", "vLLM server"


class ModelVersion(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_versions")
    name = models.CharField(max_length=200)
    base_model = models.CharField(max_length=500, help_text="Hugging Face checkpoint path or served model name")
    path = models.CharField(max_length=1000, blank=True, default="", help_text="Full checkpoint folder")
    adapter_path = models.CharField(max_length=1000, blank=True, default="", help_text="LoRA adapter folder")
    backend = models.CharField(max_length=20, choices=Backend.choices, default=Backend.LOCAL)
    backend_options = models.JSONField(default=dict, blank=True)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    produced_by = models.ForeignKey("TrainingRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    notes = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="model_version_unique_name"),
            models.CheckConstraint(condition=Q(backend__in=Backend.values), name="model_version_backend_valid"),
        ]

    def __str__(self) -> str:
        return self.name


class TraceStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    # A stop was taken and the worker is winding down (within half a second); then `stopped`.
    STOPPING = "stopping", "Stopping"
    STOPPED = "stopped", "Stopped"
    FINISHED = "finished", "Finished"
    FAILED = "failed", "Failed"


class TraceMode(models.TextChoices):
    LIVE = "live", "Live (full speed)"
    PACED = "paced", "Paced (at most pace_tps tokens per second reach the viewers)"
    STEP = "step", "Step (pauses at the end of every step)"


class Trace(models.Model):
    """One generation: a node in a branch tree. A branch shares its parent's steps before
    `branch_step_index`, has a human-written step there, and the model's continuation after it."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="traces")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="traces")
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="traces"
    )
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="branches")
    branch_step_index = models.PositiveIntegerField(null=True, blank=True)
    sampling_params = models.JSONField(default=dict, blank=True)
    seed = models.BigIntegerField(null=True, blank=True)
    status = models.CharField(max_length=20, choices=TraceStatus.choices, default=TraceStatus.QUEUED)
    finish_reason = models.CharField(max_length=40, blank=True, default="")
    final_answer = models.TextField(null=True, blank=True)  # noqa: DJ001 - None: the think block never closed
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    # Optimistic concurrency: every change to the steps bumps it; an edit names the version it saw.
    version = models.PositiveIntegerField(default=1)
    error = models.TextField(blank=True, default="")
    mode = models.CharField(max_length=10, choices=TraceMode.choices, default=TraceMode.LIVE)
    pace_tps = models.FloatField(null=True, blank=True)  # paced mode: tokens per second viewers receive
    # Why a stopped trace paused itself: the end of a step (step mode) or a score below the threshold.
    pause_reason = models.TextField(blank=True, default="")
    # Guided generation (annotator/generation/guided.py): {"k": K, "by": scorer}; null: unguided.
    guide = models.JSONField(null=True, blank=True, default=None)
    # The review summary, kept by the review and adjudication services in their transactions so the
    # queue filters on columns, not on aggregates over 100k traces (bench/team.py).
    review_count = models.PositiveIntegerField(default=0)
    # "accept" / "reject": the adjudicated verdict, else the reviewers' when they agree; "" otherwise.
    verdict = models.CharField(max_length=10, blank=True, default="")
    # Reviewers disagree (on the verdict or a label) and no reviewer has adjudicated.
    disputed = models.BooleanField(default=False)
    # The queue's triage keys, from the trace's StepScores (null: none; definitions in
    # selectors.queue_list), kept by triggers on the scores table in the statement that writes them
    # (migration 0010), so the triage orders read an index, not every trace's scores (bench/lists.py).
    lowest_score = models.FloatField(null=True, blank=True)
    scorer_spread = models.FloatField(null=True, blank=True)
    mean_step_score = models.FloatField(null=True, blank=True)
    # The confident_wrong order's keys (annotator/answers.py): the final answer checked against the
    # prompt's reference (0 wrong, 1 nothing to check against, 2 right; null: not checked yet), written
    # by answers.verdicts_fill; and, kept by a row trigger from it, the status and mean_step_score
    # (migration 0013), the rank (0 wrong, 1 unfinished or uncheckable, 2 right; null: finished, not
    # checked yet) and the mean step score of the wrong ones, which the order sorts by.
    answer_verdict = models.SmallIntegerField(null=True, blank=True, editable=False)
    answer_rank = models.SmallIntegerField(null=True, blank=True, editable=False)
    wrong_confidence = models.FloatField(null=True, blank=True, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        # The lists and the queue page by (filter columns…, id) with keyset cursors: each index puts a
        # filter's rows in id order, so a page is an index range scan however deep it is (bench/lists.py).
        indexes = [
            models.Index(fields=["project", "id"], name="trace_project_id"),
            models.Index(fields=["project", "status", "id"], name="trace_project_status_id"),
            models.Index(fields=["project", "prompt", "id"], name="trace_project_prompt_id"),
            models.Index(fields=["project", "disputed", "id"], name="trace_project_disputed_id"),
            models.Index(fields=["project", "verdict", "id"], name="trace_project_verdict_id"),
            # The queue's default view: what nobody has reviewed yet, oldest first.
            models.Index(fields=["project", "id"], condition=Q(review_count=0), name="trace_project_unreviewed"),
            # The triage orders (selectors.queue_list): the key as the order sorts it, then id.
            models.Index("project", F("lowest_score").asc(nulls_last=True), "id", name="trace_project_lowest"),
            models.Index("project", F("scorer_spread").desc(nulls_last=True), "id", name="trace_project_spread"),
            models.Index("project", "answer_rank", F("wrong_confidence").desc(nulls_last=True), "id",
                         name="trace_project_answer_rank"),
            # The finished traces not checked yet (what queue_list fills in before the order): normally none.
            models.Index(fields=["project", "id"], condition=Q(answer_rank__isnull=True),
                         name="trace_project_unranked"),
            # The sweeps' reads (lost and waiting generations) every few seconds: only the traces in
            # flight, whatever the table's size (without it, two seq scans of ~200 ms at 1M traces).
            models.Index(fields=["updated_at"], condition=Q(status__in=["queued", "running", "stopping"]),
                         name="trace_in_flight"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=TraceStatus.values), name="trace_status_valid"),
            models.CheckConstraint(
                condition=Q(parent__isnull=True, branch_step_index__isnull=True)
                | Q(parent__isnull=False, branch_step_index__isnull=False),
                name="trace_branch_has_parent_and_index",
            ),
        ]

    def __str__(self) -> str:
        return f"Trace {self.pk}"


class StepOrigin(models.TextChoices):
    MODEL = "model", "Model"
    HUMAN = "human", "Human"


class Step(models.Model):
    trace = models.ForeignKey(Trace, on_delete=models.CASCADE, related_name="steps")
    index = models.PositiveIntegerField()
    text = models.TextField()
    origin = models.CharField(max_length=10, choices=StepOrigin.choices, default=StepOrigin.MODEL)
    # For steps a branch shares with its parent: the parent's step it copies.
    copied_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # A guided step: {"seed", "chosen", "candidates": [{"kind", "text", "score"}]}, the K it was picked from.
    guide = models.JSONField(null=True, blank=True, default=None)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["trace", "index"]
        constraints = [
            models.UniqueConstraint(fields=["trace", "index"], name="step_unique_index"),
            models.CheckConstraint(condition=Q(origin__in=StepOrigin.values), name="step_origin_valid"),
        ]

    def __str__(self) -> str:
        return f"Step {self.index} of trace {self.trace_id}"


class StepScore(models.Model):
    """A machine's score of a closed step (or, with ``step`` null, of the final answer), in [0, 1]
    (1: good). Kept apart from the supervisors' StepLabels: a score is never a human label."""

    trace = models.ForeignKey(Trace, on_delete=models.CASCADE, related_name="scores")
    step = models.ForeignKey(Step, null=True, blank=True, on_delete=models.CASCADE, related_name="scores")
    step_index = models.IntegerField(help_text="The step's index; -1 for the final answer")
    scorer = models.CharField(max_length=100, help_text='"rule:demo_task", "prm:<model version id>", ...')
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    score = models.FloatField()
    detail = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["trace", "step_index", "scorer"]
        constraints = [
            models.UniqueConstraint(fields=["trace", "step_index", "scorer"], name="step_score_unique"),
        ]
        indexes = [models.Index(fields=["trace", "score"])]

    def __str__(self) -> str:
        return f"{self.scorer} {self.score:.2f} on step {self.step_index} of trace {self.trace_id}"


class AlternativesStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Sampling"
    READY = "ready", "Ready (candidates scored)"
    FAILED = "failed", "Failed"


class AlternativeSet(models.Model):
    """K candidate next steps sampled from the prefix before step ``step_index`` of a trace, each
    scored by the project's scorers, for a supervisor to pick from (issue 12).

    ``candidates``: ``[{"index", "kind": "step"|"end"|"incomplete", "text", "scores": [{"scorer",
    "score", "detail", "model_version"}]}]``; all ``n`` rows of one batched sample with ``seed``.
    ``picked`` is the chosen candidate's index, or null with ``picked_text`` set when the supervisor
    wrote their own step; ``branch`` is the trace the pick started (null when the pick equals the
    trace's own step). The pick's preference records (the picked step against each candidate not
    picked) are materialised from this row: export kind ``preference_step``, source ``alternatives``."""

    trace = models.ForeignKey(Trace, on_delete=models.CASCADE, related_name="alternative_sets")
    step_index = models.PositiveIntegerField()
    k = models.PositiveSmallIntegerField()
    seed = models.BigIntegerField()
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=AlternativesStatus.choices, default=AlternativesStatus.QUEUED)
    error = models.TextField(blank=True, default="")
    candidates = models.JSONField(default=list, blank=True)
    picked = models.SmallIntegerField(null=True, blank=True)
    picked_text = models.TextField(blank=True, default="")
    picked_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="+")
    picked_at = models.DateTimeField(null=True, blank=True)
    branch = models.ForeignKey(Trace, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    ready_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["trace", "step_index"])]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=AlternativesStatus.values), name="alternatives_status_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.k} alternatives for step {self.step_index} of trace {self.trace_id}"

    @property
    def is_picked(self) -> bool:
        return self.picked is not None or bool(self.picked_text)


class StepLabel(models.Model):
    """A supervisor's rating of one step: +1 good, 0 neutral, -1 wrong (PRM800K); null = unsure."""

    step = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="labels")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="step_labels")
    rating = models.SmallIntegerField(null=True, blank=True)
    safety_tags = models.JSONField(default=list, blank=True)
    note = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["step", "annotator"]
        constraints = [
            models.UniqueConstraint(fields=["step", "annotator"], name="step_label_one_per_annotator"),
            models.CheckConstraint(
                condition=Q(rating__isnull=True) | Q(rating__in=sorted(labels.STEP_RATINGS)),
                name="step_label_rating_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.rating} on step {self.step_id} by {self.annotator_id}"


Verdict = _choices("Verdict", labels.VERDICTS)
SafetyLabel = _choices("SafetyLabel", labels.SAFETY_LABELS)  # scores: labels.SAFETY_SCORES
ValueLabel = _choices("ValueLabel", labels.VALUE_LABELS)
KnowledgeLabel = _choices("KnowledgeLabel", labels.KNOWLEDGE_LABELS)


class TraceReview(models.Model):
    trace = models.ForeignKey(Trace, on_delete=models.CASCADE, related_name="reviews")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="trace_reviews")
    verdict = models.CharField(max_length=10, choices=Verdict.choices)
    safety_label = models.CharField(max_length=30, choices=SafetyLabel.choices, blank=True, default="")
    value_label = models.CharField(max_length=10, choices=ValueLabel.choices, blank=True, default="")
    knowledge_label = models.CharField(max_length=10, choices=KnowledgeLabel.choices, blank=True, default="")
    note = models.TextField(blank=True, default="")
    # Seconds the annotator spent on the item, as the browser measured it (None: not measured).
    lead_time_s = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["trace", "annotator"]
        indexes = [models.Index(fields=["annotator", "trace"])]
        constraints = [
            models.UniqueConstraint(fields=["trace", "annotator"], name="trace_review_one_per_annotator"),
            models.CheckConstraint(condition=Q(verdict__in=Verdict.values), name="trace_review_verdict_valid"),
            models.CheckConstraint(
                condition=Q(safety_label="") | Q(safety_label__in=SafetyLabel.values), name="trace_review_safety_valid"
            ),
            models.CheckConstraint(
                condition=Q(value_label="") | Q(value_label__in=ValueLabel.values), name="trace_review_value_valid"
            ),
            models.CheckConstraint(
                condition=Q(knowledge_label="") | Q(knowledge_label__in=KnowledgeLabel.values),
                name="trace_review_knowledge_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.verdict} on trace {self.trace_id} by {self.annotator_id}"


class CorrectionStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"


class Correction(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="corrections")
    original_trace = models.ForeignKey(Trace, on_delete=models.CASCADE, related_name="corrections")
    corrected_trace = models.OneToOneField(Trace, on_delete=models.CASCADE, related_name="correction")
    step_index = models.PositiveIntegerField()
    old_text = models.TextField()
    new_text = models.TextField()
    reason = models.TextField(blank=True, default="")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="corrections"
    )
    # A reviewer approves or rejects it; rejected corrections never become training pairs.
    status = models.CharField(max_length=10, choices=CorrectionStatus.choices, default=CorrectionStatus.PENDING)
    adjudicated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    adjudicated_at = models.DateTimeField(null=True, blank=True)
    adjudication_note = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["project", "id"], name="correction_project_id")]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=CorrectionStatus.values), name="correction_status_valid")
        ]

    def __str__(self) -> str:
        return f"Correction of step {self.step_index} in trace {self.original_trace_id}"


class Adjudication(models.Model):
    """A reviewer's resolution of a trace's reviews: it wins over the annotators' labels in the queue's
    verdict and in datasets. A blank label leaves that family to the annotators' consensus."""

    trace = models.OneToOneField(Trace, on_delete=models.CASCADE, related_name="adjudication")
    adjudicator = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    verdict = models.CharField(max_length=10, choices=Verdict.choices)
    safety_label = models.CharField(max_length=30, choices=SafetyLabel.choices, blank=True, default="")
    value_label = models.CharField(max_length=10, choices=ValueLabel.choices, blank=True, default="")
    knowledge_label = models.CharField(max_length=10, choices=KnowledgeLabel.choices, blank=True, default="")
    note = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(verdict__in=Verdict.values), name="adjudication_verdict_valid")
        ]

    def __str__(self) -> str:
        return f"Adjudication of trace {self.trace_id}"


class GoldLabel(models.Model):
    """The known-correct review of a trace (a gold item): annotators who review it get an accuracy."""

    trace = models.OneToOneField(Trace, on_delete=models.CASCADE, related_name="gold")
    verdict = models.CharField(max_length=10, choices=Verdict.choices, blank=True, default="")
    safety_label = models.CharField(max_length=30, choices=SafetyLabel.choices, blank=True, default="")
    value_label = models.CharField(max_length=10, choices=ValueLabel.choices, blank=True, default="")
    knowledge_label = models.CharField(max_length=10, choices=KnowledgeLabel.choices, blank=True, default="")
    # {"<step index>": rating}: the correct rating of the steps that have one.
    step_ratings = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"Gold review of trace {self.trace_id}"


class Assignment(models.Model):
    """A prompt given to an annotator: its traces are in their queue. N assignments per prompt = overlap N."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="assignments")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments")
    due_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    # Kept by PostgreSQL (triggers, migration 0014), never by the ORM (a save() cannot change them):
    # the prompt's traces not failed / failed, and of each how many the annotator reviewed; whether
    # the prompt has any trace. Their sums per (project, annotator) are the QueueCounter row.
    trace_count = models.IntegerField(default=0, db_default=0, editable=False)
    done_count = models.IntegerField(default=0, db_default=0, editable=False)
    failed_count = models.IntegerField(default=0, db_default=0, editable=False)
    failed_done_count = models.IntegerField(default=0, db_default=0, editable=False)
    prompt_traced = models.BooleanField(default=False, db_default=False, editable=False)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["project", "annotator", "prompt"])]
        constraints = [models.UniqueConstraint(fields=["prompt", "annotator"], name="assignment_unique")]

    def __str__(self) -> str:
        return f"Prompt {self.prompt_id} to {self.annotator_id}"


class QueueCounter(models.Model):
    """A person's queue in a project, counted by PostgreSQL (triggers on assignments, traces and
    reviews, migration 0014): the sums of their assignments' counts. ``assigned``: traces not failed
    of the prompts assigned to them; ``done``: of those, reviewed by them; ``failed`` /
    ``failed_done``: the same for the failed traces (the queue page's ``mine`` lists those too);
    ``untraced``: their assigned prompts with no trace yet. No row: all zero. Read-only here.

    No foreign key constraints: the row goes when its last assignment goes (a cascade may delete
    the user or project first, in the same transaction)."""

    project = models.ForeignKey(Project, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False,
                                related_name="+")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.DO_NOTHING, db_constraint=False,
                                  db_index=False, related_name="+")
    assigned = models.IntegerField(default=0)
    done = models.IntegerField(default=0)
    failed = models.IntegerField(default=0)
    failed_done = models.IntegerField(default=0)
    untraced = models.IntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "annotator"], name="queue_counter_unique")]

    def __str__(self) -> str:
        return f"Queue of {self.annotator_id} in project {self.project_id}"


class QueueItem(models.Model):
    """A trace in a person's queue (its prompt is assigned to them), kept by PostgreSQL with the
    counters (migration 0016): the ``mine`` queue pages read the person's items in trace order from
    an index, a page's rows and no more, wherever in the project their traces lie. Read-only here."""

    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.DO_NOTHING, db_constraint=False,
                                  db_index=False, related_name="+")
    project = models.ForeignKey(Project, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False,
                                related_name="+")
    prompt = models.ForeignKey(Prompt, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")
    trace = models.ForeignKey(Trace, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False,
                              related_name="queue_items")
    reviewed = models.BooleanField()  # by the annotator

    class Meta:
        indexes = [
            models.Index(fields=["annotator", "project", "trace"], name="queue_item_mine"),
            models.Index(fields=["annotator", "project", "reviewed", "trace"], name="queue_item_mine_reviewed"),
        ]

    def __str__(self) -> str:
        return f"Trace {self.trace_id} in the queue of {self.annotator_id}"


class TraceTotals(models.Model):
    """A project's trace totals, counted by PostgreSQL (triggers on annotator_trace, migration 0015):
    ``traces``, ``unreviewed`` (review_count 0) and ``disputed``; reviewed = traces - unreviewed. A
    project's totals are the sums of its rows, one per ``shard`` (the writing backend's pid mod 16),
    so that concurrent writers of one project rarely wait on one row. Read-only here."""

    project = models.ForeignKey(Project, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False,
                                related_name="+")
    shard = models.SmallIntegerField()
    traces = models.IntegerField(default=0)
    unreviewed = models.IntegerField(default=0)
    disputed = models.IntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "shard"], name="trace_totals_unique")]

    def __str__(self) -> str:
        return f"Trace totals of project {self.project_id} ({self.shard})"


class Comparison(models.Model):
    """An explicit preference between two sibling traces of one prompt."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="comparisons")
    preferred = models.ForeignKey(Trace, on_delete=models.CASCADE, related_name="+")
    other = models.ForeignKey(Trace, on_delete=models.CASCADE, related_name="+")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    note = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["preferred", "other", "annotator"], name="comparison_unique"),
            models.CheckConstraint(condition=~Q(preferred=models.F("other")), name="comparison_distinct_traces"),
        ]

    def __str__(self) -> str:
        return f"Trace {self.preferred_id} over {self.other_id}"


class AuditEvent(models.Model):
    """Append-only: a database trigger (migration 0002) refuses UPDATE and DELETE."""

    project = models.ForeignKey(
        Project, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    action = models.CharField(max_length=80)
    target_type = models.CharField(max_length=80)
    target_id = models.CharField(max_length=64, blank=True, default="")
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["project", "id"])]

    def __str__(self) -> str:
        return f"{self.action} {self.target_type}:{self.target_id}"


class SnapshotStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    BUILDING = "building", "Building"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class DatasetSnapshot(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="snapshots")
    name = models.CharField(max_length=200, blank=True, default="")
    kind = models.CharField(max_length=40)
    filters = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=SnapshotStatus.choices, default=SnapshotStatus.PENDING)
    record_count = models.PositiveIntegerField(default=0)
    counts = models.JSONField(default=dict, blank=True)
    sha256 = models.CharField(max_length=64, blank=True, default="")
    files = models.JSONField(default=dict, blank=True)
    seed = models.IntegerField(default=0)
    eval_fraction = models.FloatField(default=0.1)
    error = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.kind} snapshot {self.pk}"


Stage = _choices("Stage", stages.STAGES)


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    CANCELLING = "cancelling", "Cancelling"
    CANCELLED = "cancelled", "Cancelled"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class TrainingRun(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="training_runs")
    stage = models.CharField(max_length=20, choices=Stage.choices)
    base_model = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="training_runs")
    snapshots = models.ManyToManyField(DatasetSnapshot, related_name="training_runs", blank=True)
    config = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.QUEUED)
    progress = models.FloatField(default=0.0)
    worker = models.CharField(max_length=200, blank=True, default="")
    output_model = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    error = models.TextField(blank=True, default="")
    log = models.TextField(blank=True, default="")
    automatic = models.BooleanField(default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=RunStatus.values), name="training_run_status_valid"),
            models.CheckConstraint(
                condition=Q(progress__gte=0) & Q(progress__lte=1), name="training_run_progress_range"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.stage} run {self.pk}"


class MetricPoint(models.Model):
    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="metrics")
    step = models.PositiveIntegerField()
    name = models.CharField(max_length=100)
    value = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "step", "name"]
        constraints = [models.UniqueConstraint(fields=["run", "step", "name"], name="metric_point_unique")]

    def __str__(self) -> str:
        return f"{self.name}={self.value} at {self.step}"


class EvalResult(models.Model):
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="eval_results")
    run = models.ForeignKey(TrainingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="eval_results")
    metric = models.CharField(max_length=100)
    value = models.FloatField()
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["model_version", "run", "metric"], name="eval_result_unique")]

    def __str__(self) -> str:
        return f"{self.metric}={self.value} for model {self.model_version_id}"


class ApiToken(models.Model):
    """An API token for scripts (annotator/auth.py): only the SHA-256 of the key is kept."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    key_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=8, help_text="The key's first characters, to tell tokens apart")
    password_fingerprint = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"


class Webhook(models.Model):
    """A project's subscription: signed POSTs of the chosen events to ``url`` (Standard Webhooks)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="webhooks")
    url = models.CharField(max_length=1000)
    events = models.JSONField(default=list, blank=True)  # event types; see annotator/services/webhooks.py
    secret = models.CharField(max_length=100)  # "whsec_" + base64 of the signing key
    active = models.BooleanField(default=True)
    description = models.CharField(max_length=200, blank=True, default="")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"Webhook {self.pk} to {self.url}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"  # waiting for its (next) attempt
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"  # every attempt failed, or the target is no longer allowed


class WebhookDelivery(models.Model):
    """One message to one webhook, with its attempts. Ends delivered or failed, with the reason."""

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    message_id = models.CharField(max_length=40, unique=True)  # the webhook-id header: the same on every retry
    event_type = models.CharField(max_length=40)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=DeliveryStatus.values), name="webhook_delivery_status_valid")
        ]

    def __str__(self) -> str:
        return f"{self.event_type} to webhook {self.webhook_id}"


class Invite(models.Model):
    """A one-time link a site admin hands out: set a password, then join ``project`` as ``role``.

    Only the SHA-256 of the token is stored; the link is shown once, to the admin who made it."""

    token_hash = models.CharField(max_length=64, unique=True)
    project = models.ForeignKey(Project, null=True, blank=True, on_delete=models.CASCADE, related_name="invites")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.SUPERVISOR)
    note = models.CharField(max_length=200, blank=True, default="")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    used_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="+")

    class Meta:
        ordering = ["-id"]
        constraints = [models.CheckConstraint(condition=Q(role__in=Role.values), name="invite_role_valid")]

    def __str__(self) -> str:
        return f"Invite {self.pk} to project {self.project_id} as {self.role}"
