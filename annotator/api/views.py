"""REST views: thin. Each checks access through access_project, calls one service, renders output."""

from __future__ import annotations

from django.contrib.auth import authenticate
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics, status
from rest_framework.exceptions import Throttled
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from annotator import auth, selectors
from annotator.access import access_project
from annotator.api import serializers as s
from annotator.api.pagination import KeysetPagination
from annotator.api.parsers import StrictJSONParser
from annotator.errors import InvalidInput, NotFound
from annotator.models import AlternativeSet, ApiToken, Category, Role, Trace, TraceStatus
from annotator.services import alternatives, claims, corrections, generation, labels, model_versions, projects, prompts


def _read_upload(upload, *, limit: int, what: str) -> bytes:
    if upload.size > limit:
        raise InvalidInput(
            f"{what} {upload.name!r} is {upload.size} bytes; the limit is {limit} bytes.", code="too_large"
        )
    return upload.read()


class ProjectScoped(generics.GenericAPIView):
    """Base: resolves self.project / self.membership through the permission gate before the handler."""

    read_role = Role.VIEWER
    write_role = Role.OWNER
    parser_classes = [StrictJSONParser]

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        needed = self.read_role if request.method in ("GET", "HEAD", "OPTIONS") else self.write_role
        self.membership = access_project(request.user, kwargs["project_id"], role=needed)
        self.project = self.membership.project

    def get_serializer_context(self):
        ctx = super().get_serializer_context()
        if hasattr(self, "membership"):
            ctx["roles"] = {self.project.pk: self.membership.role}
        return ctx

    # Not `trace`: a method of that name is Django's handler for the HTTP TRACE verb.
    def get_trace(self, trace_id, queryset=None):
        return selectors.get_in_project(
            queryset or selectors.trace_detail_queryset(), self.project, trace_id, what="Trace"
        )


# --- auth -----------------------------------------------------------------------------------------


class TokenView(APIView):
    """Exchange a username and password for a new API token (for scripts). The key is shown only here;
    it expires at `expires_at`, on logout, or when the password changes. Failed attempts are throttled
    per account and address (429 with Retry-After)."""

    permission_classes = [AllowAny]
    authentication_classes = []

    @extend_schema(
        request=s.TokenRequestSerializer,
        responses={200: s.TokenResponseSerializer, 400: s.ErrorSerializer, 429: s.ErrorSerializer},
    )
    def post(self, request):
        data = s.TokenRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        username = data.validated_data["username"]
        try:
            auth.login_check(request, username)
        except auth.LoginThrottled as exc:
            raise Throttled(wait=exc.retry_after, detail=str(exc)) from None
        user = authenticate(request, **data.validated_data)
        if user is None:
            auth.login_failed(request, username)
            raise InvalidInput("Wrong username or password.", code="bad_credentials")
        auth.login_succeeded(request, username)
        key, token = auth.token_issue(user=user)
        return Response({"token": key, "expires_at": token.expires_at})


class LogoutView(APIView):
    """Revoke the token this request carries (and end the browser session, if any)."""

    @extend_schema(request=None, responses={204: None, 401: s.ErrorSerializer})
    def post(self, request):
        from django.contrib.auth import logout

        if isinstance(request.auth, ApiToken):
            auth.token_revoke(token=request.auth)
        logout(request._request)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- projects -------------------------------------------------------------------------------------


class ProjectListView(generics.ListAPIView):
    serializer_class = s.ProjectSerializer

    def get_queryset(self):
        return selectors.projects_for_user(self.request.user)

    def get_serializer_context(self):
        ctx = super().get_serializer_context()
        ctx["roles"] = selectors.roles_of_user(self.request.user)
        return ctx

    @extend_schema(request=s.ProjectInputSerializer, responses={201: s.ProjectSerializer})
    def post(self, request):
        data = s.ProjectInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        project = projects.project_create(owner=request.user, **data.validated_data)
        return Response(self.get_serializer(project).data, status=status.HTTP_201_CREATED)


class ProjectDetailView(ProjectScoped):
    serializer_class = s.ProjectSerializer

    def get(self, request, project_id):
        return Response(self.get_serializer(self.project).data)

    @extend_schema(request=s.ProjectUpdateSerializer)
    def patch(self, request, project_id):
        data = s.ProjectUpdateSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        project = projects.project_update(project=self.project, actor=request.user, **data.validated_data)
        return Response(self.get_serializer(project).data)

    def delete(self, request, project_id):
        projects.project_delete(project=self.project, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MemberListView(ProjectScoped, generics.ListAPIView):
    serializer_class = s.MembershipSerializer
    pagination_class = None

    def get_queryset(self):
        return selectors.member_list(self.project)

    @extend_schema(request=s.MembershipInputSerializer, responses={201: s.MembershipSerializer})
    def post(self, request, project_id):
        data = s.MembershipInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership = projects.membership_add(project=self.project, actor=request.user, **data.validated_data)
        return Response(self.get_serializer(membership).data, status=status.HTTP_201_CREATED)


class MemberDetailView(ProjectScoped):
    serializer_class = s.MembershipSerializer

    def _membership(self, membership_id):
        return selectors.get_in_project(
            selectors.member_list(self.project), self.project, membership_id, what="Membership"
        )

    @extend_schema(request=s.MembershipUpdateSerializer)
    def patch(self, request, project_id, membership_id):
        data = s.MembershipUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership = projects.membership_update(
            membership=self._membership(membership_id), actor=request.user, role=data.validated_data["role"]
        )
        return Response(self.get_serializer(membership).data)

    def delete(self, request, project_id, membership_id):
        projects.membership_remove(membership=self._membership(membership_id), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- prompts --------------------------------------------------------------------------------------


@extend_schema_view(
    get=extend_schema(
        parameters=[
            OpenApiParameter("category", str, enum=Category.values),
            OpenApiParameter("search", str, description="Text contained in the messages"),
            OpenApiParameter("has_images", bool),
        ]
    )
)
class PromptListView(ProjectScoped, generics.ListAPIView):
    serializer_class = s.PromptSerializer
    pagination_class = KeysetPagination

    def get_queryset(self):
        q = self.request.query_params
        category = q.get("category")
        if category and category not in Category.values:
            raise InvalidInput(f"category must be one of {', '.join(Category.values)}.")
        has_images = q.get("has_images")
        return selectors.prompt_list(
            self.project,
            category=category,
            search=q.get("search"),
            has_images=None if has_images is None else has_images.lower() in ("1", "true", "yes"),
        )

    @extend_schema(request=s.PromptInputSerializer, responses={201: s.PromptSerializer})
    def post(self, request, project_id):
        data = s.PromptInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        prompt = prompts.prompt_create(
            project=self.project,
            actor=request.user,
            messages=v["messages"],
            category=v.get("category"),
            reference=v.get("reference_answer"),
            metadata=v.get("metadata"),
        )
        return Response(self.get_serializer(prompt).data, status=status.HTTP_201_CREATED)


class PromptDetailView(ProjectScoped):
    serializer_class = s.PromptSerializer

    def _prompt(self, prompt_id):
        return selectors.get_in_project(selectors.prompt_list(self.project), self.project, prompt_id, what="Prompt")

    def get(self, request, project_id, prompt_id):
        return Response(self.get_serializer(self._prompt(prompt_id)).data)

    @extend_schema(request=s.PromptUpdateSerializer)
    def patch(self, request, project_id, prompt_id):
        data = s.PromptUpdateSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        prompts.prompt_update(prompt=self._prompt(prompt_id), actor=request.user, **data.validated_data)
        return Response(self.get_serializer(self._prompt(prompt_id)).data)

    def delete(self, request, project_id, prompt_id):
        prompts.prompt_delete(prompt=self._prompt(prompt_id), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class PromptImageUploadView(ProjectScoped):
    """Attach an image to a prompt (PNG, JPEG, WebP or GIF; checked by content; size-limited)."""

    serializer_class = s.PromptImageSerializer
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(request={"multipart/form-data": s.ImageUploadSerializer}, responses={201: s.PromptImageSerializer})
    def post(self, request, project_id, prompt_id):
        from django.conf import settings

        prompt = selectors.get_in_project(selectors.prompt_list(self.project), self.project, prompt_id, what="Prompt")
        upload = request.FILES.get("file")
        if upload is None:
            raise InvalidInput("Send the image as the multipart field 'file'.")
        data = _read_upload(upload, limit=settings.MAX_IMAGE_BYTES, what="Image")
        image = prompts.image_check(name=upload.name, data=data)
        row = prompts.prompt_image_add(prompt=prompt, actor=request.user, image=image)
        return Response(self.get_serializer(row).data, status=status.HTTP_201_CREATED)


class PromptImageFileView(ProjectScoped):
    """The image file itself (members only)."""

    serializer_class = s.PromptImageSerializer

    @extend_schema(responses={(200, "image/*"): OpenApiTypes.BINARY})
    def get(self, request, project_id, prompt_id, position):
        prompt = selectors.get_in_project(selectors.prompt_list(self.project), self.project, prompt_id, what="Prompt")
        image = prompt.images.filter(position=position).first()
        if image is None:
            raise NotFound("Image not found.")
        response = FileResponse(image.file.open("rb"), content_type=image.content_type)
        response["X-Content-Type-Options"] = "nosniff"
        return response


class PromptImportView(ProjectScoped):
    """Bulk import from JSONL in one transaction: a bad line answers 400 naming the line; nothing is imported.

    Each line: {"messages": [...]} (TRL conversational) or {"prompt": "..."}, optional "images" (names of files
    uploaded in the same request, or data: URLs), "category", "reference", "metadata", "id".
    """

    serializer_class = s.PromptImportResultSerializer
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        request={"multipart/form-data": s.PromptImportSerializer},
        responses={201: s.PromptImportResultSerializer, 400: s.ErrorSerializer},
    )
    def post(self, request, project_id):
        from django.conf import settings

        upload = request.FILES.get("file")
        if upload is None:
            raise InvalidInput("Send the JSONL as the multipart field 'file'.")
        if upload.size > settings.MAX_IMPORT_BYTES:
            raise InvalidInput(
                f"File {upload.name!r} is {upload.size} bytes; the limit is {settings.MAX_IMPORT_BYTES} bytes.",
                code="too_large",
            )
        uploads = {}
        for image in request.FILES.getlist("images"):
            raw = _read_upload(image, limit=settings.MAX_IMAGE_BYTES, what="Image")
            uploads[image.name] = prompts.image_check(name=image.name, data=raw)
        # The upload is passed as a file (on disk when large): the import reads it line by line.
        created = prompts.prompts_import_jsonl(project=self.project, actor=request.user, data=upload, uploads=uploads)
        return Response({"imported": len(created), "prompt_ids": created}, status=status.HTTP_201_CREATED)


# --- model versions -------------------------------------------------------------------------------


class ModelVersionListView(ProjectScoped, generics.ListAPIView):
    serializer_class = s.ModelVersionSerializer
    pagination_class = None

    def get_queryset(self):
        return selectors.model_version_list(self.project)

    @extend_schema(request=s.ModelVersionSerializer, responses={201: s.ModelVersionSerializer})
    def post(self, request, project_id):
        data = s.ModelVersionSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = model_versions.model_version_create(project=self.project, actor=request.user, **data.validated_data)
        return Response(self.get_serializer(version).data, status=status.HTTP_201_CREATED)


class ModelVersionDetailView(ProjectScoped):
    serializer_class = s.ModelVersionSerializer

    def get(self, request, project_id, version_id):
        version = selectors.get_in_project(
            selectors.model_version_list(self.project), self.project, version_id, what="Model version"
        )
        return Response(self.get_serializer(version).data)

    @extend_schema(request=s.ModelVersionUpdateSerializer)
    def patch(self, request, project_id, version_id):
        version = selectors.get_in_project(
            selectors.model_version_list(self.project), self.project, version_id, what="Model version"
        )
        data = s.ModelVersionUpdateSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        version = model_versions.model_version_update(version=version, actor=request.user, **data.validated_data)
        return Response(self.get_serializer(version).data)


# --- traces, steps, labels, reviews, corrections --------------------------------------------------


@extend_schema_view(
    get=extend_schema(
        parameters=[
            OpenApiParameter("status", str, enum=TraceStatus.values),
            OpenApiParameter("prompt", int),
            OpenApiParameter("model_version", int),
            OpenApiParameter("parent", int),
            OpenApiParameter("category", str, enum=Category.values, description="The prompt's category"),
            OpenApiParameter("started_by", str, description="Username of who started the generation"),
        ]
    )
)
class TraceListView(ProjectScoped, generics.ListAPIView):
    """Traces of the project; POST creates one for a prompt and starts generating (supervisors)."""

    serializer_class = s.TraceSerializer
    write_role = Role.SUPERVISOR
    pagination_class = KeysetPagination

    def get_queryset(self):
        q = self.request.query_params
        st = q.get("status")
        if st and st not in TraceStatus.values:
            raise InvalidInput(f"status must be one of {', '.join(TraceStatus.values)}.")
        try:
            ids = {k: int(q[k]) if q.get(k) else None for k in ("prompt", "model_version", "parent")}
        except ValueError:
            raise InvalidInput("prompt, model_version and parent filters take integer ids.") from None
        category = q.get("category")
        if category and category not in Category.values:
            raise InvalidInput(f"category must be one of {', '.join(Category.values)}.")
        return selectors.trace_list(
            self.project,
            status=st,
            prompt_id=ids["prompt"],
            model_version_id=ids["model_version"],
            parent_id=ids["parent"],
            category=category,
            started_by=q.get("started_by"),
        )

    @extend_schema(request=s.TraceCreateSerializer, responses={201: s.TraceSerializer})
    def post(self, request, project_id):
        data = s.TraceCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        prompt = selectors.get_in_project(selectors.prompt_list(self.project), self.project, v["prompt"], what="Prompt")
        model = None
        if v.get("model_version") is not None:
            model = selectors.get_in_project(
                selectors.model_version_list(self.project), self.project, v["model_version"], what="Model version"
            )
        trace = generation.trace_create(
            project=self.project,
            prompt=prompt,
            actor=request.user,
            model_version=model,
            sampling_params=v.get("sampling_params"),
            mode=v.get("mode"),
            pace_tps=v.get("pace_tps"),
            guide=v.get("guide"),
        )
        claims.control_check(trace=trace, user=request.user)  # who starts a generation controls it
        return Response(self.get_serializer(trace).data, status=status.HTTP_201_CREATED)


class TraceActionView(ProjectScoped):
    """Base for POST-only trace actions (supervisors)."""

    serializer_class = s.TraceSerializer
    write_role = Role.SUPERVISOR
    service = None

    @extend_schema(request=None, responses={200: s.TraceSerializer, 409: s.ErrorSerializer})
    def post(self, request, project_id, trace_id):
        trace = self.get_trace(trace_id, Trace.objects.select_related("project"))
        claims.control_check(trace=trace, user=request.user)
        trace = type(self).service(trace=trace, actor=request.user)
        return Response(self.get_serializer(trace).data)


class TraceStopView(TraceActionView):
    """Stop generation (within half a second); the step being written is dropped. The answer is the
    trace as the stop leaves it: `stopping` while its worker winds down (then `stopped`, or
    `finished` if the model had finished first), or `stopped` for a trace that had not started."""

    service = staticmethod(generation.trace_stop)


class TraceContinueView(TraceActionView):
    """Continue a stopped (or paused) trace from its saved steps; in step mode this accepts the step.
    A body `{"mode": "live"}` switches the mode as it continues (let it run to the end)."""

    service = staticmethod(generation.trace_continue)

    @extend_schema(request=s.TraceContinueSerializer, responses={200: s.TraceSerializer, 409: s.ErrorSerializer})
    def post(self, request, project_id, trace_id):
        data = s.TraceContinueSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        trace = self.get_trace(trace_id, Trace.objects.select_related("project"))
        claims.control_check(trace=trace, user=request.user)
        trace = generation.trace_continue(trace=trace, actor=request.user, mode=data.validated_data.get("mode"))
        return Response(self.get_serializer(trace).data)


class TraceDetailView(ProjectScoped):
    serializer_class = s.TraceDetailSerializer

    def get(self, request, project_id, trace_id):
        return Response(self.get_serializer(self.get_trace(trace_id)).data)


class StepListView(ProjectScoped, generics.ListAPIView):
    serializer_class = s.StepSerializer
    pagination_class = None

    def get_queryset(self):
        return self.get_trace(self.kwargs["trace_id"]).steps.all()


class StepLabelView(ProjectScoped):
    """Your label for one step (one per supervisor; PUT replaces it)."""

    serializer_class = s.StepLabelSerializer
    pagination_class = None  # GET answers a plain list; without this the schema says paginated
    write_role = Role.SUPERVISOR

    @extend_schema(responses=s.StepLabelSerializer(many=True))
    def get(self, request, project_id, trace_id, index):
        step = labels.step_get(trace=self.get_trace(trace_id), index=index)
        return Response(self.get_serializer(step.labels.select_related("annotator"), many=True).data)

    @extend_schema(request=s.StepLabelInputSerializer, responses={200: s.StepLabelSerializer})
    def put(self, request, project_id, trace_id, index):
        step = labels.step_get(trace=self.get_trace(trace_id), index=index)
        data = s.StepLabelInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        label = labels.step_label_set(step=step, annotator=request.user, **data.validated_data)
        return Response(self.get_serializer(label).data)

    def delete(self, request, project_id, trace_id, index):
        """Remove your label of this step (204 also when you had none)."""
        step = labels.step_get(trace=self.get_trace(trace_id), index=index)
        labels.step_label_clear(step=step, annotator=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TraceReviewView(ProjectScoped):
    """Reviews of a trace; PUT sets yours (verdict + SafeWork safety / value / knowledge labels)."""

    serializer_class = s.TraceReviewSerializer
    pagination_class = None  # GET answers a plain list; without this the schema says paginated
    write_role = Role.SUPERVISOR

    @extend_schema(responses=s.TraceReviewSerializer(many=True))
    def get(self, request, project_id, trace_id):
        return Response(self.get_serializer(self.get_trace(trace_id).reviews.all(), many=True).data)

    @extend_schema(request=s.TraceReviewInputSerializer, responses={200: s.TraceReviewSerializer})
    def put(self, request, project_id, trace_id):
        data = s.TraceReviewInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        review = labels.trace_review_set(trace=self.get_trace(trace_id), annotator=request.user, **data.validated_data)
        return Response(self.get_serializer(review).data)

    def delete(self, request, project_id, trace_id):
        """Remove your review of this trace (204 also when you had none)."""
        labels.trace_review_clear(trace=self.get_trace(trace_id), annotator=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TraceCorrectionView(ProjectScoped):
    """Correct step k: creates a branch trace (steps before k shared, step k yours) queued to continue."""

    serializer_class = s.CorrectionSerializer
    pagination_class = None  # GET answers a plain list; without this the schema says paginated
    write_role = Role.SUPERVISOR

    @extend_schema(responses=s.CorrectionSerializer(many=True))
    def get(self, request, project_id, trace_id):
        trace = self.get_trace(trace_id)
        return Response(
            self.get_serializer(selectors.correction_list(self.project).filter(original_trace=trace), many=True).data
        )

    @extend_schema(
        request=s.CorrectionInputSerializer,
        responses={201: s.CorrectionSerializer, 404: s.ErrorSerializer, 409: s.ErrorSerializer},
    )
    def post(self, request, project_id, trace_id):
        data = s.CorrectionInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        trace = self.get_trace(trace_id)
        claims.control_check(trace=trace, user=request.user)
        correction = corrections.correction_create(trace=trace, author=request.user, **data.validated_data)
        return Response(self.get_serializer(correction).data, status=status.HTTP_201_CREATED)


class TraceAlternativesView(ProjectScoped):
    """K candidate steps for step k, sampled from the prefix before it and scored by the project's
    scorers. POST queues a set (202); it is sampled by the generate worker and its viewers get
    `trace.alternatives` events as it becomes ready. GET lists the trace's sets, newest first."""

    serializer_class = s.AlternativeSetSerializer
    pagination_class = None
    write_role = Role.SUPERVISOR

    @extend_schema(responses=s.AlternativeSetSerializer(many=True))
    def get(self, request, project_id, trace_id):
        trace = self.get_trace(trace_id, Trace.objects.all())
        sets = AlternativeSet.objects.filter(trace=trace).order_by("-id")[:50]
        return Response([alternatives.alternatives_json(a) for a in sets])

    @extend_schema(request=s.AlternativesRequestSerializer,
                   responses={202: s.AlternativeSetSerializer, 404: s.ErrorSerializer, 409: s.ErrorSerializer})
    def post(self, request, project_id, trace_id):
        data = s.AlternativesRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        trace = self.get_trace(trace_id, Trace.objects.select_related("project"))
        claims.control_check(trace=trace, user=request.user)
        alt = alternatives.alternatives_request(trace=trace, actor=request.user, **data.validated_data)
        return Response(alternatives.alternatives_json(alt), status=status.HTTP_202_ACCEPTED)


class AlternativeSetView(ProjectScoped):
    serializer_class = s.AlternativeSetSerializer

    def get_set(self, trace_id, set_id) -> AlternativeSet:
        trace = self.get_trace(trace_id, Trace.objects.select_related("project"))
        alt = AlternativeSet.objects.filter(pk=set_id, trace=trace).first() if set_id < 2**63 else None
        if alt is None:
            raise NotFound("Alternatives not found.")
        return alt

    def get(self, request, project_id, trace_id, set_id):
        return Response(alternatives.alternatives_json(self.get_set(trace_id, set_id)))


class AlternativesPickView(AlternativeSetView):
    """Pick a candidate (or write your own step): a step that differs from the trace's becomes a
    branch that continues from it; the choice is stored as step-level preference data."""

    write_role = Role.SUPERVISOR

    @extend_schema(request=s.AlternativesPickSerializer,
                   responses={200: s.AlternativeSetSerializer, 404: s.ErrorSerializer, 409: s.ErrorSerializer})
    def post(self, request, project_id, trace_id, set_id):
        data = s.AlternativesPickSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        alt = self.get_set(trace_id, set_id)
        claims.control_check(trace=alt.trace, user=request.user)
        alt = alternatives.alternatives_pick(alt_set=alt, actor=request.user, **data.validated_data)
        return Response(alternatives.alternatives_json(alt))


class CorrectionListView(ProjectScoped, generics.ListAPIView):
    serializer_class = s.CorrectionSerializer
    pagination_class = KeysetPagination

    def get_queryset(self):
        return selectors.correction_list(self.project)


class AuditLogView(ProjectScoped, generics.ListAPIView):
    """The project's append-only audit log, newest first (owners)."""

    serializer_class = s.AuditEventSerializer
    read_role = Role.OWNER
    pagination_class = KeysetPagination

    def get_queryset(self):
        return selectors.audit_list(self.project)
