from django.urls import path

from annotator.api import views as v

P = "projects/<int:project_id>"
T = f"{P}/traces/<int:trace_id>"

urlpatterns = [
    path("auth/token/", v.TokenView.as_view(), name="api-token"),
    path("auth/logout/", v.LogoutView.as_view(), name="api-logout"),
    path("projects/", v.ProjectListView.as_view(), name="project-list"),
    path(f"{P}/", v.ProjectDetailView.as_view(), name="project-detail"),
    path(f"{P}/members/", v.MemberListView.as_view(), name="member-list"),
    path(f"{P}/members/<int:membership_id>/", v.MemberDetailView.as_view(), name="member-detail"),
    path(f"{P}/prompts/", v.PromptListView.as_view(), name="prompt-list"),
    path(f"{P}/prompts/import/", v.PromptImportView.as_view(), name="prompt-import"),
    path(f"{P}/prompts/<int:prompt_id>/", v.PromptDetailView.as_view(), name="prompt-detail"),
    path(f"{P}/prompts/<int:prompt_id>/images/", v.PromptImageUploadView.as_view(), name="prompt-image-upload"),
    path(
        f"{P}/prompts/<int:prompt_id>/images/<int:position>/", v.PromptImageFileView.as_view(), name="prompt-image-file"
    ),
    path(f"{P}/models/", v.ModelVersionListView.as_view(), name="model-version-list"),
    path(f"{P}/models/<int:version_id>/", v.ModelVersionDetailView.as_view(), name="model-version-detail"),
    path(f"{P}/traces/", v.TraceListView.as_view(), name="trace-list"),
    path(f"{T}/", v.TraceDetailView.as_view(), name="trace-detail"),
    path(f"{T}/stop/", v.TraceStopView.as_view(), name="trace-stop"),
    path(f"{T}/continue/", v.TraceContinueView.as_view(), name="trace-continue"),
    path(f"{T}/steps/", v.StepListView.as_view(), name="step-list"),
    path(f"{T}/steps/<int:index>/label/", v.StepLabelView.as_view(), name="step-label"),
    path(f"{T}/reviews/", v.TraceReviewView.as_view(), name="trace-reviews"),
    path(f"{T}/corrections/", v.TraceCorrectionView.as_view(), name="trace-corrections"),
    path(f"{T}/alternatives/", v.TraceAlternativesView.as_view(), name="trace-alternatives"),
    path(f"{T}/alternatives/<int:set_id>/", v.AlternativeSetView.as_view(), name="alternative-set"),
    path(f"{T}/alternatives/<int:set_id>/pick/", v.AlternativesPickView.as_view(), name="alternatives-pick"),
    path(f"{P}/corrections/", v.CorrectionListView.as_view(), name="correction-list"),
    path(f"{P}/audit/", v.AuditLogView.as_view(), name="audit-log"),
]

from annotator.api.datasets import urlpatterns as datasets_urlpatterns  # noqa: E402

urlpatterns += datasets_urlpatterns

from annotator.api.training import urlpatterns as training_urlpatterns  # noqa: E402

urlpatterns += training_urlpatterns

from annotator.api.accounts import urlpatterns as account_urlpatterns  # noqa: E402
from annotator.api.team import urlpatterns as team_urlpatterns  # noqa: E402
from annotator.api.webhooks import urlpatterns as webhook_urlpatterns  # noqa: E402

urlpatterns += team_urlpatterns + webhook_urlpatterns + account_urlpatterns
