"""REST for dataset snapshots: list/create, detail, kinds, and streaming download of frozen files.

Roles: every member may list snapshots, read one and list the kinds (they show what was exported
and when); creating a snapshot and downloading its data take the owner role, because a download
hands the project's labelled data out of the studio.
"""

from __future__ import annotations

from django.http import FileResponse
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.response import Response

from annotator import selectors
from annotator.api import serializers as s
from annotator.api.views import ProjectScoped
from annotator.datasets.materialise import KINDS
from annotator.datasets.writers import SPLITS
from annotator.errors import Conflict, NotFound
from annotator.models import Role, SnapshotStatus
from annotator.services import snapshots


class _FirstRenderer(BaseContentNegotiation):
    """The download's `?format=` names a file format, not one of DRF's renderers (DRF reads that
    query parameter for content negotiation and would answer 404). Errors render as JSON."""

    def select_parser(self, request, parsers):
        return parsers[0]

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class DatasetListView(ProjectScoped, generics.ListAPIView):
    """The project's dataset snapshots, newest first. POST starts a new one (built in the background;
    poll the detail until `status` is `ready`)."""

    serializer_class = s.DatasetSnapshotSerializer
    read_role = Role.VIEWER
    write_role = Role.OWNER

    def get_queryset(self):
        return selectors.snapshot_list(self.project)

    @extend_schema(
        request=s.DatasetSnapshotInputSerializer,
        responses={201: s.DatasetSnapshotSerializer, 400: s.ErrorSerializer},
    )
    def post(self, request, project_id):
        data = s.DatasetSnapshotInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        snapshot = snapshots.snapshot_create(
            project=self.project,
            actor=request.user,
            kind=v["kind"],
            filters=v.get("filters"),
            name=v.get("name", ""),
            seed=v["seed"],
            eval_fraction=v["eval_fraction"],
        )
        return Response(self.get_serializer(snapshot).data, status=status.HTTP_201_CREATED)


class DatasetKindsView(ProjectScoped):
    """The dataset kinds an export can have, with the trainer each feeds (docs/datasets.md)."""

    serializer_class = s.DatasetKindSerializer
    pagination_class = None

    @extend_schema(responses=s.DatasetKindSerializer(many=True))
    def get(self, request, project_id):
        rows = [{"kind": k, "description": info.description, "trainer": info.trainer} for k, info in KINDS.items()]
        return Response(self.get_serializer(rows, many=True).data)


class DatasetDetailView(ProjectScoped):
    serializer_class = s.DatasetSnapshotSerializer

    def get(self, request, project_id, snapshot_id):
        snapshot = selectors.get_in_project(
            selectors.snapshot_list(self.project), self.project, snapshot_id, what="Dataset"
        )
        return Response(self.get_serializer(snapshot).data)


class DatasetDownloadView(ProjectScoped):
    """A ready snapshot's frozen file, streamed from disk: `jsonl` (JSON Lines), `parquet`, or `hf`
    (a zipped folder that `datasets.load_dataset(folder)` reads). Every record has a `split` column
    (`train` or `eval`); `?split=train` or `?split=eval` downloads that split only (jsonl and
    parquet; without it, all records). 409 while it is not ready."""

    serializer_class = s.DatasetSnapshotSerializer
    read_role = Role.OWNER
    content_negotiation_class = _FirstRenderer

    @extend_schema(
        parameters=[
            OpenApiParameter("format", str, enum=list(snapshots.FORMATS), default="jsonl"),
            OpenApiParameter(
                "split",
                str,
                enum=list(SPLITS),
                required=False,
                description="Only this split's records (jsonl and parquet); absent: all records",
            ),
        ],
        responses={
            (200, "application/jsonl"): OpenApiResponse(OpenApiTypes.BINARY, description="JSON Lines"),
            (200, "application/vnd.apache.parquet"): OpenApiResponse(OpenApiTypes.BINARY, description="Parquet"),
            (200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, description="Hugging Face dataset folder"),
            (404, "application/json"): s.ErrorSerializer,
            (409, "application/json"): s.ErrorSerializer,
        },
    )
    def get(self, request, project_id, snapshot_id):
        snapshot = selectors.get_in_project(
            selectors.snapshot_list(self.project), self.project, snapshot_id, what="Dataset"
        )
        fmt = request.query_params.get("format", "jsonl")
        split = request.query_params.get("split") or None
        file_path, filename, content_type = snapshots.snapshot_file(snapshot, fmt, split)
        if snapshot.status != SnapshotStatus.READY:
            raise Conflict(
                f"Dataset {snapshot.pk} is {snapshot.status}; it can be downloaded once it is ready.",
                code="not_ready",
                details={"status": snapshot.status},
            )
        try:
            handle = open(file_path, "rb")  # noqa: SIM115 - FileResponse closes it when the stream ends
        except FileNotFoundError:
            if split and snapshots.snapshot_file(snapshot, fmt)[0].exists():
                raise NotFound(
                    f"Dataset {snapshot.pk} was built before per-split downloads; download it whole, "
                    "or create a new snapshot to download one split."
                ) from None
            raise NotFound(f"The files of dataset {snapshot.pk} are missing on the server.") from None
        # FileResponse streams in blocks (constant memory) and sets Content-Length.
        response = FileResponse(handle, as_attachment=True, filename=filename, content_type=content_type)
        response.block_size = 256 * 1024  # Django's 4 KiB default costs a Python round trip per page
        # frozen: same snapshot, format and split, same bytes
        response["ETag"] = f'"{snapshot.sha256}-{fmt}-{split}"' if split else f'"{snapshot.sha256}-{fmt}"'
        response["X-Dataset-SHA256"] = snapshot.sha256  # of the whole snapshot, also for one split
        if split:
            response["X-Dataset-Split"] = split
        response["X-Content-Type-Options"] = "nosniff"
        return response


P = "projects/<int:project_id>/datasets"

urlpatterns = [
    path(f"{P}/", DatasetListView.as_view(), name="dataset-list"),
    path(f"{P}/kinds/", DatasetKindsView.as_view(), name="dataset-kinds"),
    path(f"{P}/<int:snapshot_id>/", DatasetDetailView.as_view(), name="dataset-detail"),
    path(f"{P}/<int:snapshot_id>/download/", DatasetDownloadView.as_view(), name="dataset-download"),
]
