from django.contrib import admin

from annotator import models as m


class MembershipInline(admin.TabularInline):
    model = m.Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(m.Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "step_rule", "serving_model", "created_at"]
    search_fields = ["name"]
    inlines = [MembershipInline]


@admin.register(m.Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "category", "created_at"]
    list_filter = ["category", "project"]


@admin.register(m.ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "name", "backend", "parent", "created_at"]
    list_filter = ["backend", "project"]


class StepInline(admin.TabularInline):
    model = m.Step
    extra = 0
    fields = ["index", "text", "origin"]
    readonly_fields = fields


@admin.register(m.Trace)
class TraceAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "prompt", "status", "parent", "branch_step_index", "version", "created_at"]
    list_filter = ["status", "project"]
    inlines = [StepInline]


@admin.register(m.StepLabel)
class StepLabelAdmin(admin.ModelAdmin):
    list_display = ["id", "step", "annotator", "rating", "updated_at"]


@admin.register(m.TraceReview)
class TraceReviewAdmin(admin.ModelAdmin):
    list_display = ["id", "trace", "annotator", "verdict", "safety_label", "value_label", "knowledge_label"]
    list_filter = ["verdict", "safety_label"]


@admin.register(m.Correction)
class CorrectionAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "original_trace", "corrected_trace", "step_index", "author", "created_at"]


@admin.register(m.Comparison)
class ComparisonAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "preferred", "other", "annotator"]


@admin.register(m.AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the log is append-only (and the database refuses changes)."""

    list_display = ["id", "created_at", "project", "actor", "action", "target_type", "target_id"]
    list_filter = ["action"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(m.DatasetSnapshot)
class DatasetSnapshotAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "kind", "status", "record_count", "sha256", "created_at"]


class MetricInline(admin.TabularInline):
    model = m.MetricPoint
    extra = 0


@admin.register(m.TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "stage", "status", "progress", "output_model", "created_at"]
    list_filter = ["stage", "status"]


@admin.register(m.EvalResult)
class EvalResultAdmin(admin.ModelAdmin):
    list_display = ["id", "model_version", "run", "metric", "value", "created_at"]


@admin.register(m.ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens can be looked at and revoked (deleted) here; keys cannot be read back: only hashes are kept."""

    list_display = ["prefix", "user", "created_at", "expires_at"]
    readonly_fields = ["user", "key_hash", "prefix", "password_fingerprint", "created_at", "expires_at"]

    def has_add_permission(self, request) -> bool:
        return False


# Django's admin login counts failures and refuses a throttled address, like the site's login.
from annotator.auth import ThrottledAdminAuthenticationForm  # noqa: E402

admin.site.login_form = ThrottledAdminAuthenticationForm
