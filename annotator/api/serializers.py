from __future__ import annotations

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from annotator.models import (
    Adjudication,
    AlternativesStatus,
    Assignment,
    AuditEvent,
    Category,
    Correction,
    DatasetSnapshot,
    GoldLabel,
    Invite,
    KnowledgeLabel,
    Membership,
    ModelVersion,
    Project,
    Prompt,
    PromptImage,
    Role,
    SafetyLabel,
    Step,
    StepLabel,
    StepRule,
    StepScore,
    Trace,
    TraceMode,
    TraceReview,
    ValueLabel,
    Webhook,
    WebhookDelivery,
)
from trainer_worker.vocabulary.labels import SAFETY_TAGS

User = get_user_model()

# Size caps of free text and free-form JSON: what a reasonable client sends, with room to spare.
# Everything above is refused with 400 naming the field (the body itself is capped at 2 MiB).
MAX_GUIDELINES = 100_000
MAX_TEXT = 20_000  # reference answers, notes, reasons
MAX_JSON_BYTES = 64 * 1024  # label schema, generation defaults, policies, metadata, backend options, params
MAX_MESSAGES_BYTES = 1024 * 1024
ID_MAX = 2**63 - 1


def IdField(**kwargs):
    """A row id: PostgreSQL's bigint range (a larger number would reach the database as an error)."""
    return serializers.IntegerField(min_value=1, max_value=ID_MAX, **kwargs)


class BoundedJSONField(serializers.JSONField):
    """Free-form JSON with a size cap (compact UTF-8 bytes)."""

    def __init__(self, *args, max_bytes: int = MAX_JSON_BYTES, **kwargs) -> None:
        self.max_bytes = max_bytes
        super().__init__(*args, **kwargs)

    def to_internal_value(self, data):
        from annotator.input import json_size

        value = super().to_internal_value(data)
        if json_size(value) > self.max_bytes:
            raise serializers.ValidationError(f"Ensure this value is at most {self.max_bytes} bytes as JSON.")
        return value


class UserBriefSerializer(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "username"]


class ProjectSerializer(serializers.ModelSerializer):
    my_role = serializers.SerializerMethodField()

    class Meta:
        model = Project
        fields = [
            "id",
            "name",
            "guidelines",
            "label_schema",
            "generation_defaults",
            "step_rule",
            "serving_model",
            "autotrain_policy",
            "supervision",
            "created_at",
            "my_role",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.ChoiceField(choices=Role.choices, allow_null=True))
    def get_my_role(self, obj: Project) -> str | None:
        roles = self.context.get("roles", {})
        return roles.get(obj.pk)


class ProjectInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    guidelines = serializers.CharField(required=False, allow_blank=True, max_length=MAX_GUIDELINES)
    label_schema = BoundedJSONField(required=False)
    generation_defaults = BoundedJSONField(required=False)
    step_rule = serializers.ChoiceField(choices=StepRule.choices, required=False)
    autotrain_policy = BoundedJSONField(required=False)
    supervision = BoundedJSONField(
        required=False,
        help_text='{"mode": "live"|"paced"|"step", "pace_tps": 8, "scorers": ["rule:demo_task", "prm:<id>", '
        '"verifier:<id>"], "pause_below": 0.5 or null}',
    )


class ProjectUpdateSerializer(ProjectInputSerializer):
    name = serializers.CharField(max_length=200, required=False)
    # Accepted only to be refused with a clear 400 (code use_promote): the serving model changes
    # through POST models/{id}/promote/, never by an edit (a field left out would be ignored silently).
    serving_model = IdField(
        required=False, allow_null=True, help_text="Refused: promote a model version instead (models/{id}/promote/)."
    )


class MembershipSerializer(serializers.ModelSerializer):
    user = UserBriefSerializer(read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "user", "role", "created_at"]
        read_only_fields = fields


class MembershipInputSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=Role.choices)


class MembershipUpdateSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


# JSON columns whose shape the services fix: their schema says so (the generated frontend types
# read it), while the values pass through exactly as stored.
@extend_schema_field(
    {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "role": {"type": "string"},
                "content": {
                    "oneOf": [
                        {"type": "string"},
                        {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {"type": {"type": "string"}, "text": {"type": "string"}},
                                "required": ["type"],
                            },
                        },
                    ]
                },
            },
            "required": ["role", "content"],
        },
    }
)
class _ChatMessagesField(serializers.JSONField):
    pass


@extend_schema_field({"type": "array", "items": {"type": "string", "enum": SAFETY_TAGS}})
class _SafetyTagsField(serializers.JSONField):
    pass


class PromptImageSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()

    class Meta:
        model = PromptImage
        fields = ["id", "position", "content_type", "width", "height", "size_bytes", "sha256", "original_name", "url"]
        read_only_fields = fields

    def get_url(self, obj: PromptImage) -> str:
        return f"/api/projects/{obj.prompt.project_id}/prompts/{obj.prompt_id}/images/{obj.position}/"


class PromptSerializer(serializers.ModelSerializer):
    messages = _ChatMessagesField(read_only=True)
    images = PromptImageSerializer(many=True, read_only=True)
    trace_count = serializers.IntegerField(read_only=True, required=False)

    class Meta:
        model = Prompt
        fields = ["id", "messages", "category", "reference_answer", "metadata", "images", "trace_count", "created_at"]
        read_only_fields = fields


class PromptInputSerializer(serializers.Serializer):
    messages = BoundedJSONField(
        max_bytes=MAX_MESSAGES_BYTES, help_text="Chat messages: [{role, content}] (content: text or parts)"
    )
    category = serializers.ChoiceField(choices=Category.choices, required=False)
    reference_answer = serializers.CharField(required=False, allow_blank=True, max_length=MAX_TEXT)
    metadata = BoundedJSONField(required=False)


class PromptUpdateSerializer(PromptInputSerializer):
    messages = BoundedJSONField(max_bytes=MAX_MESSAGES_BYTES, required=False)


class ImageUploadSerializer(serializers.Serializer):
    file = serializers.FileField()


class PromptImportSerializer(serializers.Serializer):
    file = serializers.FileField(
        help_text="JSONL: one prompt per line ({messages} or {prompt}, images, category, reference)"
    )
    images = serializers.ListField(
        child=serializers.FileField(), required=False, help_text="Image files that lines name in their 'images' list"
    )


class PromptImportResultSerializer(serializers.Serializer):
    imported = serializers.IntegerField()
    prompt_ids = serializers.ListField(child=serializers.IntegerField())


class ModelVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "name",
            "base_model",
            "path",
            "adapter_path",
            "backend",
            "backend_options",
            "parent",
            "produced_by",
            "notes",
            "created_at",
        ]
        read_only_fields = ["id", "produced_by", "created_at"]
        extra_kwargs = {"notes": {"max_length": MAX_TEXT}}

    backend_options = BoundedJSONField(required=False)


class ModelVersionUpdateSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = ["name", "base_model", "path", "adapter_path", "backend", "backend_options", "parent", "notes"]
        extra_kwargs = {f: {"required": False} for f in fields} | {"notes": {"required": False, "max_length": MAX_TEXT}}

    backend_options = BoundedJSONField(required=False)


class StepLabelSerializer(serializers.ModelSerializer):
    annotator = UserBriefSerializer(read_only=True)
    safety_tags = _SafetyTagsField(read_only=True)

    class Meta:
        model = StepLabel
        fields = ["id", "annotator", "rating", "safety_tags", "note", "updated_at"]
        read_only_fields = fields


class GuideSerializer(serializers.Serializer):
    k = serializers.IntegerField(read_only=True, help_text="Candidates sampled per step")
    by = serializers.CharField(read_only=True, help_text='The scorer that picks: "rule:demo_task", "prm:<id>", ...')


class GuideCandidateSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["step", "end", "incomplete"], read_only=True,
                                   help_text="step; end: the sample would answer now; incomplete: cut by the budget")
    text = serializers.CharField(read_only=True)
    score = serializers.FloatField(read_only=True, allow_null=True)


class StepGuideSerializer(serializers.Serializer):
    seed = serializers.IntegerField(read_only=True, allow_null=True, help_text="This step's sampling seed")
    chosen = serializers.IntegerField(read_only=True, help_text="Index of the kept candidate")
    candidates = GuideCandidateSerializer(many=True, read_only=True)


class StepSerializer(serializers.ModelSerializer):
    labels = StepLabelSerializer(many=True, read_only=True)
    guide = StepGuideSerializer(read_only=True, allow_null=True,
                                help_text="A guided step: the candidates it was the best of (null: not guided)")

    class Meta:
        model = Step
        fields = ["id", "index", "text", "origin", "labels", "guide", "created_at"]
        read_only_fields = fields


class TraceReviewSerializer(serializers.ModelSerializer):
    annotator = UserBriefSerializer(read_only=True)
    # Declared so the schema says what is stored: a label left unset is "" (read-only model fields
    # would lose allow_blank, and the schema would claim one of the choices is always there).
    safety_label = serializers.ChoiceField(choices=SafetyLabel.choices, allow_blank=True, read_only=True)
    value_label = serializers.ChoiceField(choices=ValueLabel.choices, allow_blank=True, read_only=True)
    knowledge_label = serializers.ChoiceField(choices=KnowledgeLabel.choices, allow_blank=True, read_only=True)

    class Meta:
        model = TraceReview
        fields = ["id", "annotator", "verdict", "safety_label", "value_label", "knowledge_label", "note", "updated_at"]
        read_only_fields = fields


class TraceSerializer(serializers.ModelSerializer):
    step_count = serializers.SerializerMethodField()
    guide = GuideSerializer(read_only=True, allow_null=True, help_text="Guided generation (null: unguided)")

    class Meta:
        model = Trace
        fields = [
            "id",
            "prompt",
            "model_version",
            "parent",
            "branch_step_index",
            "sampling_params",
            "seed",
            "status",
            "finish_reason",
            "final_answer",
            "prompt_tokens",
            "completion_tokens",
            "version",
            "error",
            "mode",
            "pace_tps",
            "pause_reason",
            "guide",
            "step_count",
            "review_count",
            "verdict",
            "disputed",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_step_count(self, obj: Trace) -> int:
        # Lists annotate the count; a detail has its steps prefetched; anything else counts.
        annotated = getattr(obj, "step_count", None)
        if annotated is not None:
            return annotated
        cache = getattr(obj, "_prefetched_objects_cache", {})
        return len(cache["steps"]) if "steps" in cache else obj.steps.count()


class AdjudicationSerializer(serializers.ModelSerializer):
    adjudicator = UserBriefSerializer(read_only=True, allow_null=True)
    safety_label = serializers.ChoiceField(choices=SafetyLabel.choices, allow_blank=True, read_only=True)
    value_label = serializers.ChoiceField(choices=ValueLabel.choices, allow_blank=True, read_only=True)
    knowledge_label = serializers.ChoiceField(choices=KnowledgeLabel.choices, allow_blank=True, read_only=True)

    class Meta:
        model = Adjudication
        fields = ["verdict", "safety_label", "value_label", "knowledge_label", "note", "adjudicator", "updated_at"]
        read_only_fields = fields


class StepScoreSerializer(serializers.ModelSerializer):
    class Meta:
        model = StepScore
        fields = ["step_index", "scorer", "score", "detail", "model_version", "created_at"]
        read_only_fields = fields


class AlternativesRequestSerializer(serializers.Serializer):
    step_index = serializers.IntegerField(min_value=0, max_value=ID_MAX,
                                          help_text="The closed step to find alternatives for (its prefix is kept)")
    k = serializers.IntegerField(min_value=1, max_value=8, required=False, help_text="How many candidates (default 4)")
    temperature = serializers.FloatField(min_value=0.01, max_value=100, required=False,
                                         help_text="Sampling temperature (default: the trace's; 1.0 if it was greedy)")
    seed = serializers.IntegerField(min_value=0, max_value=2**53 - 1, required=False,
                                    help_text="Seed of the batched sample (default: random; stored)")


class CandidateScoreSerializer(serializers.Serializer):
    scorer = serializers.CharField()
    score = serializers.FloatField()
    detail = serializers.CharField()
    model_version = serializers.IntegerField(allow_null=True)


class CandidateSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=["step", "end", "incomplete"], help_text=(
        "step: one closed step; end: the model would close its reasoning here; incomplete: cut off "
        "by the token budget"))
    text = serializers.CharField(allow_blank=True)
    scores = CandidateScoreSerializer(many=True)


class AlternativeSetSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    trace = serializers.IntegerField()
    step_index = serializers.IntegerField()
    k = serializers.IntegerField()
    seed = serializers.IntegerField()
    params = serializers.DictField()
    status = serializers.ChoiceField(choices=AlternativesStatus.choices)
    error = serializers.CharField(allow_blank=True)
    candidates = CandidateSerializer(many=True)
    picked = serializers.IntegerField(allow_null=True, help_text="The picked candidate; null: none, or own text")
    picked_text = serializers.CharField(allow_blank=True, help_text="The picked step ('' until a pick)")
    picked_by = serializers.IntegerField(allow_null=True)
    branch = serializers.IntegerField(allow_null=True, help_text="The branch the pick started (null: none)")
    created_at = serializers.DateTimeField(allow_null=True)
    ready_at = serializers.DateTimeField(allow_null=True)


class AlternativesPickSerializer(serializers.Serializer):
    candidate = serializers.IntegerField(min_value=0, max_value=63, required=False,
                                         help_text="The index of the candidate you pick")
    text = serializers.CharField(max_length=4000, required=False, help_text="Or your own step (one line)")
    expected_version = serializers.IntegerField(min_value=0, max_value=ID_MAX,
                                                help_text="The trace version you saw; a stale one gets 409")


class TraceDetailSerializer(TraceSerializer):
    steps = StepSerializer(many=True, read_only=True)
    scores = StepScoreSerializer(many=True, read_only=True, help_text="Machine scores (step_index -1: the answer)")
    reviews = TraceReviewSerializer(many=True, read_only=True)
    branches = serializers.PrimaryKeyRelatedField(many=True, read_only=True)
    adjudication = serializers.SerializerMethodField()
    alternatives = serializers.SerializerMethodField(help_text="The trace's sets of alternatives, oldest first")

    class Meta(TraceSerializer.Meta):
        fields = [*TraceSerializer.Meta.fields, "steps", "scores", "reviews", "branches", "adjudication",
                  "alternatives"]
        read_only_fields = fields

    @extend_schema_field(AlternativeSetSerializer(many=True))
    def get_alternatives(self, obj: Trace) -> list[dict]:
        from annotator.services.alternatives import alternatives_json

        return [alternatives_json(a) for a in obj.alternative_sets.all()]

    @extend_schema_field(AdjudicationSerializer(allow_null=True))
    def get_adjudication(self, obj: Trace) -> dict | None:
        try:
            adj = obj.adjudication
        except Adjudication.DoesNotExist:
            return None
        return AdjudicationSerializer(adj).data


class StepLabelInputSerializer(serializers.Serializer):
    rating = serializers.JSONField(allow_null=True, help_text='1, 0, -1, or null / "unsure"')
    safety_tags = serializers.ListField(child=serializers.CharField(max_length=64), required=False, max_length=32)
    note = serializers.CharField(required=False, allow_blank=True, max_length=MAX_TEXT)


class TraceReviewInputSerializer(serializers.Serializer):
    verdict = serializers.CharField(max_length=32)
    safety_label = serializers.CharField(required=False, allow_blank=True, max_length=64)
    value_label = serializers.CharField(required=False, allow_blank=True, max_length=64)
    knowledge_label = serializers.CharField(required=False, allow_blank=True, max_length=64)
    note = serializers.CharField(required=False, allow_blank=True, max_length=MAX_TEXT)
    lead_time_s = serializers.FloatField(
        required=False, allow_null=True, min_value=0, max_value=7 * 24 * 3600,
        help_text="Seconds you spent on the item (the UI measures it)",
    )


class CorrectionSerializer(serializers.ModelSerializer):
    author = UserBriefSerializer(read_only=True)

    class Meta:
        model = Correction
        fields = [
            "id",
            "original_trace",
            "corrected_trace",
            "step_index",
            "old_text",
            "new_text",
            "reason",
            "author",
            "status",
            "adjudicated_by",
            "adjudicated_at",
            "adjudication_note",
            "created_at",
        ]
        read_only_fields = fields

    adjudicated_by = UserBriefSerializer(read_only=True, allow_null=True)


class CorrectionInputSerializer(serializers.Serializer):
    step_index = serializers.IntegerField(min_value=0, max_value=ID_MAX, help_text="Index of the step to replace")
    text = serializers.CharField(max_length=4000, help_text="The corrected step (one line)")
    expected_version = serializers.IntegerField(
        min_value=0, max_value=ID_MAX, help_text="The trace version you saw; a stale one gets 409"
    )
    reason = serializers.CharField(required=False, allow_blank=True, max_length=MAX_TEXT)


class AuditEventSerializer(serializers.ModelSerializer):
    actor = UserBriefSerializer(read_only=True, allow_null=True, help_text="null for system events")

    class Meta:
        model = AuditEvent
        fields = ["id", "actor", "action", "target_type", "target_id", "data", "created_at"]
        read_only_fields = fields


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, style={"input_type": "password"})


class TokenResponseSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="Send as `Authorization: Token <token>`; shown only once")
    expires_at = serializers.DateTimeField()


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    detail = serializers.CharField()
    errors = serializers.JSONField(required=False)


# --- dataset snapshots (annotator/api/datasets.py) --------------------------------------------


class DatasetKindSerializer(serializers.Serializer):
    kind = serializers.CharField()
    description = serializers.CharField()
    trainer = serializers.CharField(help_text="The TRL trainer (or recipe) the kind feeds")


def _inline_enum(choices: list[str]) -> dict:
    # An inline enum (wrapped in allOf, which drf-spectacular's enum hook leaves alone), not a
    # component: a second `status` / `category` choice set would make the hook rename (hash) the
    # existing TraceStatus and Category enums and warn. The lasting fix is ENUM_NAME_OVERRIDES.
    return {"allOf": [{"type": "string", "enum": list(choices)}]}


@extend_schema_field(_inline_enum(Category.values))
class _CategoryField(serializers.ChoiceField):
    pass


@extend_schema_field(_inline_enum(["pending", "building", "ready", "failed"]))
class _SnapshotStatusField(serializers.ChoiceField):
    pass


class DatasetFiltersSerializer(serializers.Serializer):
    """Which rows an export reads. Every filter is optional; unknown keys are refused."""

    categories = serializers.ListField(child=_CategoryField(choices=Category.choices), required=False)
    created_from = serializers.DateTimeField(required=False, help_text="Traces created at or after (ISO 8601)")
    created_to = serializers.DateTimeField(
        required=False, help_text="Traces created at or before (ISO 8601; a bare date covers the whole day)"
    )
    model_versions = serializers.ListField(
        child=IdField(), required=False, help_text="Ids of the generating model versions"
    )
    annotators = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Usernames whose labels and reviews count"
    )
    review_status = serializers.ChoiceField(choices=["any", "accepted", "rejected"], required=False)
    adjudicated_only = serializers.BooleanField(
        required=False, help_text="Only adjudicated traces and approved corrections (a reviewer resolved them)"
    )
    images = serializers.BooleanField(
        required=False, allow_null=True, help_text="null: images column when the project has image prompts"
    )
    redundant_steps = serializers.ChoiceField(
        choices=["keep", "drop", "exclude"],
        required=False,
        help_text="SFT kinds: steps rated 0 (redundant) stay (keep), leave the completion (drop), or leave out "
        "the trace (exclude)",
    )

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {key: ["Unknown filter; known: " + ", ".join(self.fields)] for key in unknown}
                )
            # A bare date is kept as given (the service reads it as the whole day), not as midnight.
            raw_dates = {k: data[k] for k in ("created_from", "created_to") if isinstance(data.get(k), str)}
        else:
            raw_dates = {}
        value = super().to_internal_value(data)
        value.update(raw_dates)
        return value


class DatasetSnapshotInputSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=[])  # choices filled from KINDS below, at import
    filters = DatasetFiltersSerializer(required=False)
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    seed = serializers.IntegerField(
        required=False, default=0, min_value=0, max_value=2**32 - 1, help_text="Seed of the train/eval split by prompt"
    )
    eval_fraction = serializers.FloatField(required=False, default=0.1, min_value=0.0, max_value=0.99)

    def __init__(self, *args, **kwargs):
        from annotator.datasets.materialise import KINDS

        super().__init__(*args, **kwargs)
        self.fields["kind"].choices = list(KINDS)


class DatasetFileSerializer(serializers.Serializer):
    format = serializers.ChoiceField(choices=["jsonl", "parquet", "hf"])
    bytes = serializers.IntegerField()
    url = serializers.CharField()


class DatasetSnapshotSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", allow_null=True, default=None)
    status = _SnapshotStatusField(choices=["pending", "building", "ready", "failed"], read_only=True)
    downloads = serializers.SerializerMethodField()

    class Meta:
        model = DatasetSnapshot
        fields = [
            "id",
            "name",
            "kind",
            "filters",
            "status",
            "record_count",
            "counts",
            "sha256",
            "seed",
            "eval_fraction",
            "error",
            "created_by",
            "created_at",
            "finished_at",
            "downloads",
        ]
        read_only_fields = fields

    @extend_schema_field(DatasetFileSerializer(many=True))
    def get_downloads(self, obj: DatasetSnapshot) -> list[dict]:
        from django.urls import reverse

        if obj.status != "ready":
            return []
        url = reverse("dataset-download", kwargs={"project_id": obj.project_id, "snapshot_id": obj.pk})
        files = obj.files or {}
        return [
            {"format": fmt, "bytes": files[fmt].get("bytes", 0), "url": f"{url}?format={fmt}"}
            for fmt in ("jsonl", "parquet", "hf")  # a fixed order: jsonb does not keep key order
            if fmt in files
        ]


class TraceCreateSerializer(serializers.Serializer):
    prompt = IdField(help_text="Prompt id in this project")
    model_version = IdField(required=False, allow_null=True, help_text="Defaults to the project's serving model")
    sampling_params = BoundedJSONField(
        required=False, help_text="temperature, top_p, max_new_tokens, seed (project defaults apply)"
    )
    mode = serializers.ChoiceField(
        choices=TraceMode.choices, required=False, help_text="live, paced or step (the project's default applies)"
    )
    pace_tps = serializers.FloatField(
        required=False, min_value=0.5, max_value=1000, help_text="paced mode: tokens per second viewers receive"
    )
    guide = BoundedJSONField(
        required=False, allow_null=True,
        help_text='Guided generation without a human: {"k": 1..16, "by": "rule:demo_task" | "prm:<id>" | '
        '"verifier:<id>"}: each step is the best of k sampled candidates by that scorer (live mode only)',
    )


class TraceContinueSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(
        choices=TraceMode.choices, required=False,
        help_text="Switch the trace's mode as it continues (e.g. live: let it run to the end)",
    )


# --- training runs, metrics, evals (annotator/api/training.py) --------------------------------

from annotator.models import EvalResult, Stage, TrainingRun  # noqa: E402 - this section's models


class TrainingRunSerializer(serializers.ModelSerializer):
    snapshots = serializers.PrimaryKeyRelatedField(many=True, read_only=True)

    class Meta:
        model = TrainingRun
        fields = [
            "id", "stage", "base_model", "snapshots", "config", "status", "progress", "worker", "output_model",
            "error", "log", "automatic", "created_by", "created_at", "started_at", "finished_at",
        ]
        read_only_fields = fields


class TrainingRunInputSerializer(serializers.Serializer):
    stage = serializers.ChoiceField(choices=Stage.choices)
    base_model = IdField(help_text="Model version id in this project to start from")
    snapshots = serializers.ListField(
        child=IdField(),
        max_length=32,
        min_length=1,
        help_text="Ready dataset snapshot ids of a kind that fits the stage",
    )
    config = BoundedJSONField(
        required=False, help_text="Trainer settings (StageConfig fields: max_steps, learning_rate, lora, ...) "
        "and optionally eval: {max_prompts, max_new_tokens}"
    )


class MetricPointSerializer(serializers.Serializer):
    step = serializers.IntegerField()
    name = serializers.CharField()
    value = serializers.FloatField()


class EvalResultSerializer(serializers.ModelSerializer):
    class Meta:
        model = EvalResult
        fields = ["id", "model_version", "run", "metric", "value", "details", "created_at"]
        read_only_fields = fields


# --- the team: queue, assignments, agreement, adjudication, gold (annotator/api/team.py) ------


class QueueItemSerializer(TraceSerializer):
    mine = serializers.BooleanField(read_only=True, help_text="The prompt is assigned to you")
    my_verdict = serializers.CharField(read_only=True, allow_null=True, help_text="Your review's verdict, if any")
    category = serializers.CharField(source="prompt.category", read_only=True)
    triage_score = serializers.FloatField(
        read_only=True, allow_null=True,
        help_text="What the queue's order sorts by: the lowest machine score (lowest_score), the largest "
        "spread between scorers (disagreement), the mean step score of a trace wrong against the reference "
        "(confident_wrong); null in arrival order and where the trace has none")

    class Meta(TraceSerializer.Meta):
        fields = [*TraceSerializer.Meta.fields, "mine", "my_verdict", "category", "triage_score"]
        read_only_fields = fields


class QueueNextSerializer(serializers.Serializer):
    trace = QueueItemSerializer(allow_null=True, help_text="The next trace to review, or null")
    prompt = PromptSerializer(allow_null=True, help_text="With no trace left: an assigned prompt with no trace yet")
    left = serializers.IntegerField(help_text="Your traces not reviewed yet (not failed)")


class QueueCountsSerializer(serializers.Serializer):
    assigned = serializers.IntegerField(help_text="Traces of prompts assigned to you")
    done = serializers.IntegerField(help_text="Of those, reviewed by you")
    left = serializers.IntegerField()
    prompts_without_trace = serializers.IntegerField()
    mine_exact = serializers.BooleanField(
        help_text="Whether assigned / done / left / prompts_without_trace are exact: always, since they are "
        "counters that PostgreSQL keeps")
    traces = serializers.IntegerField(help_text="All traces of the project")
    unreviewed = serializers.IntegerField()
    reviewed = serializers.IntegerField()
    disputed = serializers.IntegerField()
    totals_exact = serializers.BooleanField(
        help_text="Whether traces / unreviewed / reviewed / disputed are exact: always, since they are counters "
        "that PostgreSQL keeps")


class AssignmentSerializer(serializers.ModelSerializer):
    annotator = UserBriefSerializer(read_only=True)

    class Meta:
        model = Assignment
        fields = ["id", "prompt", "annotator", "due_at", "created_at"]
        read_only_fields = fields


class AssignInputSerializer(serializers.Serializer):
    annotators = serializers.ListField(child=serializers.CharField(max_length=150), min_length=1, max_length=500,
                                       help_text="Usernames")
    overlap = serializers.IntegerField(required=False, default=1, min_value=1, max_value=20,
                                       help_text="Annotators per prompt")
    strategy = serializers.ChoiceField(choices=["round_robin", "weighted", "category"], required=False,
                                       default="round_robin")
    prompts = serializers.ListField(child=serializers.IntegerField(), required=False, max_length=100000,
                                    help_text="Prompt ids (default: every prompt of the project)")
    category = serializers.ChoiceField(choices=Category.choices, required=False,
                                       help_text="Only prompts of this category")
    weights = serializers.DictField(child=serializers.FloatField(min_value=0.001), required=False,
                                    help_text="weighted: {username: weight}")
    categories = serializers.DictField(child=serializers.ListField(child=serializers.CharField(max_length=32)),
                                       required=False, help_text="category: {username: [categories they take]}")
    due_at = serializers.DateTimeField(required=False, allow_null=True)


class AssignResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()


class AssignmentProgressSerializer(serializers.Serializer):
    annotator = UserBriefSerializer()
    prompts = serializers.IntegerField()
    traces = serializers.IntegerField()
    done = serializers.IntegerField()
    left = serializers.IntegerField()


class _PairSerializer(serializers.Serializer):
    a = serializers.CharField()
    b = serializers.CharField()
    items = serializers.IntegerField()
    kappa = serializers.FloatField(allow_null=True)
    agreement = serializers.FloatField(allow_null=True)


class _AnnotatorAgreementSerializer(serializers.Serializer):
    annotator = serializers.CharField()
    labels = serializers.IntegerField()
    consensus_items = serializers.IntegerField()
    kappa_vs_consensus = serializers.FloatField(allow_null=True)
    agreement_vs_consensus = serializers.FloatField(allow_null=True)
    gold_items = serializers.IntegerField()
    gold_accuracy = serializers.FloatField(allow_null=True)


class _PeriodSerializer(serializers.Serializer):
    period = serializers.CharField()
    items = serializers.IntegerField()
    alpha = serializers.FloatField(allow_null=True)


class FamilyAgreementSerializer(serializers.Serializer):
    level = serializers.CharField()
    items = serializers.IntegerField(help_text="Items labelled by two annotators or more")
    labelled_items = serializers.IntegerField()
    annotators = serializers.ListField(child=serializers.CharField())
    alpha = serializers.FloatField(allow_null=True, help_text="Krippendorff's alpha over all annotators")
    pairs = _PairSerializer(many=True)
    per_annotator = _AnnotatorAgreementSerializer(many=True)
    over_time = _PeriodSerializer(many=True)


class _FamiliesSerializer(serializers.Serializer):
    verdict = FamilyAgreementSerializer()
    safety_label = FamilyAgreementSerializer()
    value_label = FamilyAgreementSerializer()
    knowledge_label = FamilyAgreementSerializer()
    step_rating = FamilyAgreementSerializer()


class _AnnotatorStatsSerializer(serializers.Serializer):
    annotator = serializers.CharField()
    items = serializers.IntegerField(help_text="Traces reviewed")
    median_seconds = serializers.FloatField(allow_null=True, help_text="Median time per item")
    agreement = serializers.FloatField(allow_null=True, help_text="Share of labels that match the others' consensus")


class AgreementSerializer(serializers.Serializer):
    bucket = serializers.CharField()
    families = _FamiliesSerializer()
    annotators = _AnnotatorStatsSerializer(many=True)


class AdjudicationInputSerializer(serializers.Serializer):
    verdict = serializers.CharField(max_length=32)
    safety_label = serializers.CharField(required=False, allow_blank=True, max_length=64)
    value_label = serializers.CharField(required=False, allow_blank=True, max_length=64)
    knowledge_label = serializers.CharField(required=False, allow_blank=True, max_length=64)
    note = serializers.CharField(required=False, allow_blank=True, max_length=MAX_TEXT)


class CorrectionAdjudicateSerializer(serializers.Serializer):
    decision = serializers.ChoiceField(choices=["approve", "reject"])
    note = serializers.CharField(required=False, allow_blank=True, max_length=MAX_TEXT)


class GoldSerializer(serializers.ModelSerializer):
    class Meta:
        model = GoldLabel
        fields = ["trace", "verdict", "safety_label", "value_label", "knowledge_label", "step_ratings", "updated_at"]
        read_only_fields = fields


class GoldInputSerializer(serializers.Serializer):
    verdict = serializers.CharField(required=False, allow_blank=True, max_length=32)
    safety_label = serializers.CharField(required=False, allow_blank=True, max_length=64)
    value_label = serializers.CharField(required=False, allow_blank=True, max_length=64)
    knowledge_label = serializers.CharField(required=False, allow_blank=True, max_length=64)
    step_ratings = serializers.DictField(child=serializers.IntegerField(), required=False,
                                         help_text="{step index: 1, 0 or -1}")


# --- webhooks (annotator/api/webhooks.py) -----------------------------------------------------


class WebhookSerializer(serializers.ModelSerializer):
    events = serializers.ListField(child=serializers.CharField())

    class Meta:
        model = Webhook
        fields = ["id", "url", "events", "active", "description", "created_at"]
        read_only_fields = fields


class WebhookCreatedSerializer(WebhookSerializer):
    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class WebhookInputSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=1000)
    events = serializers.ListField(child=serializers.CharField(max_length=40), required=False, max_length=20,
                                   help_text="Event types (default: all)")
    description = serializers.CharField(required=False, allow_blank=True, max_length=200)


class WebhookUpdateSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=1000, required=False)
    events = serializers.ListField(child=serializers.CharField(max_length=40), required=False, max_length=20)
    active = serializers.BooleanField(required=False)
    description = serializers.CharField(required=False, allow_blank=True, max_length=200)
    rotate_secret = serializers.BooleanField(required=False, default=False)


class WebhookDeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = ["id", "message_id", "event_type", "payload", "status", "attempts", "last_status_code",
                  "last_error", "next_attempt_at", "created_at", "finished_at"]
        read_only_fields = fields


# --- accounts and invites (annotator/api/accounts.py) -----------------------------------------


class MeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    is_site_admin = serializers.BooleanField()


class UserSerializer(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "username", "email", "is_staff", "date_joined", "last_login"]
        read_only_fields = fields


class UserInputSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(style={"input_type": "password"}, max_length=1000)
    email = serializers.EmailField(required=False, allow_blank=True)
    is_staff = serializers.BooleanField(required=False, default=False, help_text="A site administrator")


class InviteSerializer(serializers.ModelSerializer):
    project_name = serializers.CharField(source="project.name", read_only=True, allow_null=True)
    state = serializers.SerializerMethodField()
    used_by = UserBriefSerializer(read_only=True, allow_null=True)

    class Meta:
        model = Invite
        fields = ["id", "project", "project_name", "role", "note", "created_at", "expires_at", "used_at", "used_by",
                  "state"]
        read_only_fields = fields

    @extend_schema_field(serializers.ChoiceField(choices=["open", "used", "expired"]))
    def get_state(self, obj: Invite) -> str:
        from annotator.services.accounts import invite_state

        return invite_state(obj)


class InviteCreatedSerializer(InviteSerializer):
    link = serializers.CharField(read_only=True, help_text="The one-time link; shown this once")

    class Meta(InviteSerializer.Meta):
        fields = [*InviteSerializer.Meta.fields, "link"]
        read_only_fields = fields


class InviteInputSerializer(serializers.Serializer):
    project = serializers.IntegerField()
    role = serializers.ChoiceField(choices=Role.choices, required=False, default=Role.SUPERVISOR)
    note = serializers.CharField(required=False, allow_blank=True, max_length=200)


# --- model lineage (annotator/api/training.py) ------------------------------------------------


class PromotionSerializer(serializers.Serializer):
    by = serializers.CharField(allow_null=True)
    at = serializers.DateTimeField()
    previous = serializers.IntegerField(allow_null=True)


class LineageSerializer(serializers.Serializer):
    model = ModelVersionSerializer()
    parent = ModelVersionSerializer(allow_null=True)
    run = TrainingRunSerializer(allow_null=True)
    snapshots = DatasetSnapshotSerializer(many=True)
    evals = EvalResultSerializer(many=True)
    promotions = PromotionSerializer(many=True)
    serving = serializers.BooleanField()


class ControllerSerializer(serializers.Serializer):
    user = UserBriefSerializer()
    expires_at = serializers.DateTimeField()
