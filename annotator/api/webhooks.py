"""REST for a project's webhooks (owners): subscribe, change, test, and read the delivery log."""

from __future__ import annotations

from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.response import Response

from annotator import selectors
from annotator.api import serializers as s
from annotator.api.views import ProjectScoped
from annotator.errors import NotFound
from annotator.models import Role
from annotator.services import webhooks


class _OwnerScoped(ProjectScoped):
    read_role = Role.OWNER  # the URLs and the log are the owner's business
    write_role = Role.OWNER

    def webhook(self, webhook_id):
        return selectors.get_in_project(selectors.webhook_list(self.project), self.project, webhook_id,
                                        what="Webhook")


class WebhookListView(_OwnerScoped, generics.ListAPIView):
    """The project's webhooks. POST adds one; its answer carries the signing secret (`whsec_…`)."""

    serializer_class = s.WebhookSerializer
    pagination_class = None

    def get_queryset(self):
        return selectors.webhook_list(self.project)

    @extend_schema(request=s.WebhookInputSerializer, responses={201: s.WebhookCreatedSerializer})
    def post(self, request, project_id):
        data = s.WebhookInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        hook = webhooks.webhook_create(project=self.project, actor=request.user, **data.validated_data)
        return Response(s.WebhookCreatedSerializer(hook).data, status=status.HTTP_201_CREATED)


class WebhookDetailView(_OwnerScoped):
    serializer_class = s.WebhookSerializer

    def get(self, request, project_id, webhook_id):
        return Response(self.get_serializer(self.webhook(webhook_id)).data)

    @extend_schema(request=s.WebhookUpdateSerializer, responses={200: s.WebhookCreatedSerializer})
    def patch(self, request, project_id, webhook_id):
        data = s.WebhookUpdateSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        hook = webhooks.webhook_update(webhook=self.webhook(webhook_id), actor=request.user, **data.validated_data)
        return Response(s.WebhookCreatedSerializer(hook).data)

    def delete(self, request, project_id, webhook_id):
        webhooks.webhook_delete(webhook=self.webhook(webhook_id), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookTestView(_OwnerScoped):
    """Send a `webhook.test` message now; follow it in the delivery log."""

    serializer_class = s.WebhookDeliverySerializer

    @extend_schema(request=None, responses={202: s.WebhookDeliverySerializer})
    def post(self, request, project_id, webhook_id):
        delivery = webhooks.webhook_test(webhook=self.webhook(webhook_id), actor=request.user)
        return Response(self.get_serializer(delivery).data, status=status.HTTP_202_ACCEPTED)


class DeliveryListView(_OwnerScoped, generics.ListAPIView):
    """The webhook's delivery log, newest first: status, attempts, the last status code or error."""

    serializer_class = s.WebhookDeliverySerializer

    def get_queryset(self):
        return selectors.delivery_list(self.webhook(self.kwargs["webhook_id"]))


class DeliveryRetryView(_OwnerScoped):
    """Send a failed delivery again (same message id, fresh attempts)."""

    serializer_class = s.WebhookDeliverySerializer

    @extend_schema(request=None, responses={202: s.WebhookDeliverySerializer})
    def post(self, request, project_id, webhook_id, delivery_id):
        delivery = selectors.delivery_list(self.webhook(webhook_id)).filter(pk=delivery_id).first()
        if delivery is None:
            raise NotFound("Delivery not found.")
        done = webhooks.delivery_retry(delivery=delivery, actor=request.user)
        return Response(self.get_serializer(done).data, status=status.HTTP_202_ACCEPTED)


P = "projects/<int:project_id>"
W = f"{P}/webhooks/<int:webhook_id>"

urlpatterns = [
    path(f"{P}/webhooks/", WebhookListView.as_view(), name="webhook-list"),
    path(f"{W}/", WebhookDetailView.as_view(), name="webhook-detail"),
    path(f"{W}/test/", WebhookTestView.as_view(), name="webhook-test"),
    path(f"{W}/deliveries/", DeliveryListView.as_view(), name="webhook-deliveries"),
    path(f"{W}/deliveries/<int:delivery_id>/retry/", DeliveryRetryView.as_view(), name="webhook-delivery-retry"),
]
