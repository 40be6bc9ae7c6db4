from __future__ import annotations

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from annotator.models import (
    AuditEvent,
    Category,
    Correction,
    DatasetSnapshot,
    Membership,
    ModelVersion,
    Project,
    Prompt,
    PromptImage,
    Role,
    Step,
    StepLabel,
    StepRule,
    Trace,
    TraceReview,
)

User = get_user_model()


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
    guidelines = serializers.CharField(required=False, allow_blank=True)
    label_schema = serializers.JSONField(required=False)
    generation_defaults = serializers.JSONField(required=False)
    step_rule = serializers.ChoiceField(choices=StepRule.choices, required=False)
    autotrain_policy = serializers.JSONField(required=False)


class ProjectUpdateSerializer(ProjectInputSerializer):
    name = serializers.CharField(max_length=200, required=False)
    serving_model = serializers.IntegerField(required=False, allow_null=True)


class MembershipSerializer(serializers.ModelSerializer):
    user = UserBriefSerializer(read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "user", "role", "created_at"]
        read_only_fields = fields


class MembershipInputSerializer(serializers.Serializer):
    username = serializers.CharField()
    role = serializers.ChoiceField(choices=Role.choices)


class MembershipUpdateSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


class PromptImageSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()

    class Meta:
        model = PromptImage
        fields = ["id", "position", "content_type", "width", "height", "size_bytes", "sha256", "original_name", "url"]
        read_only_fields = fields

    def get_url(self, obj: PromptImage) -> str:
        return f"/api/projects/{obj.prompt.project_id}/prompts/{obj.prompt_id}/images/{obj.position}/"


class PromptSerializer(serializers.ModelSerializer):
    images = PromptImageSerializer(many=True, read_only=True)
    trace_count = serializers.IntegerField(read_only=True, required=False)

    class Meta:
        model = Prompt
        fields = ["id", "messages", "category", "reference_answer", "metadata", "images", "trace_count", "created_at"]
        read_only_fields = fields


class PromptInputSerializer(serializers.Serializer):
    messages = serializers.JSONField(help_text="Chat messages: [{role, content}] (content: text or parts)")
    category = serializers.ChoiceField(choices=Category.choices, required=False)
    reference_answer = serializers.CharField(required=False, allow_blank=True)
    metadata = serializers.JSONField(required=False)


class PromptUpdateSerializer(PromptInputSerializer):
    messages = serializers.JSONField(required=False)


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


class ModelVersionUpdateSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = ["name", "base_model", "path", "adapter_path", "backend", "backend_options", "parent", "notes"]
        extra_kwargs = {f: {"required": False} for f in fields}


class StepLabelSerializer(serializers.ModelSerializer):
    annotator = UserBriefSerializer(read_only=True)

    class Meta:
        model = StepLabel
        fields = ["id", "annotator", "rating", "safety_tags", "note", "updated_at"]
        read_only_fields = fields


class StepSerializer(serializers.ModelSerializer):
    labels = StepLabelSerializer(many=True, read_only=True)

    class Meta:
        model = Step
        fields = ["id", "index", "text", "origin", "labels", "created_at"]
        read_only_fields = fields


class TraceReviewSerializer(serializers.ModelSerializer):
    annotator = UserBriefSerializer(read_only=True)

    class Meta:
        model = TraceReview
        fields = ["id", "annotator", "verdict", "safety_label", "value_label", "knowledge_label", "note", "updated_at"]
        read_only_fields = fields


class TraceSerializer(serializers.ModelSerializer):
    step_count = serializers.IntegerField(read_only=True, required=False)

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
            "step_count",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class TraceDetailSerializer(TraceSerializer):
    steps = StepSerializer(many=True, read_only=True)
    reviews = TraceReviewSerializer(many=True, read_only=True)
    branches = serializers.PrimaryKeyRelatedField(many=True, read_only=True)

    class Meta(TraceSerializer.Meta):
        fields = [*TraceSerializer.Meta.fields, "steps", "reviews", "branches"]
        read_only_fields = fields


class StepLabelInputSerializer(serializers.Serializer):
    rating = serializers.JSONField(help_text='1, 0, -1, or null / "unsure"')
    safety_tags = serializers.ListField(child=serializers.CharField(), required=False)
    note = serializers.CharField(required=False, allow_blank=True)


class TraceReviewInputSerializer(serializers.Serializer):
    verdict = serializers.CharField()
    safety_label = serializers.CharField(required=False, allow_blank=True)
    value_label = serializers.CharField(required=False, allow_blank=True)
    knowledge_label = serializers.CharField(required=False, allow_blank=True)
    note = serializers.CharField(required=False, allow_blank=True)


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
            "created_at",
        ]
        read_only_fields = fields


class CorrectionInputSerializer(serializers.Serializer):
    step_index = serializers.IntegerField(min_value=0, help_text="Index of the step to replace")
    text = serializers.CharField(max_length=4000, help_text="The corrected step (one line)")
    expected_version = serializers.IntegerField(help_text="The trace version you saw; a stale one gets 409")
    reason = serializers.CharField(required=False, allow_blank=True)


class AuditEventSerializer(serializers.ModelSerializer):
    actor = UserBriefSerializer(read_only=True)

    class Meta:
        model = AuditEvent
        fields = ["id", "actor", "action", "target_type", "target_id", "data", "created_at"]
        read_only_fields = fields


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(style={"input_type": "password"})


class TokenResponseSerializer(serializers.Serializer):
    token = serializers.CharField()


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    detail = serializers.CharField()
    errors = serializers.JSONField(required=False)


# --- dataset snapshots (annotator/api/datasets.py) --------------------------------------------


class TraceCreateSerializer(serializers.Serializer):
    prompt = serializers.IntegerField(help_text="Prompt id in this project")
    model_version = serializers.IntegerField(
        required=False, allow_null=True, help_text="Defaults to the project's serving model"
    )
    sampling_params = serializers.JSONField(
        required=False, help_text="temperature, top_p, max_new_tokens, seed (project defaults apply)"
    )
