"""REST for accounts: who am I, and for site admins: users and one-time invite links.

An invite is opened in the browser at /accounts/invite/<token>/ (webapp/views.py), which sets a
password and joins the project; the JSON side of the same is here for scripts.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from annotator.access import access_project, access_site_admin
from annotator.api import serializers as s
from annotator.errors import NotFound
from annotator.models import Invite, Role
from annotator.services import accounts


def invite_link(request, token: str) -> str:
    return request.build_absolute_uri(f"/accounts/invite/{token}/")


class MeView(APIView):
    @extend_schema(responses={200: s.MeSerializer})
    def get(self, request):
        user = request.user
        return Response({"id": user.pk, "username": user.username,
                         "is_site_admin": bool(user.is_staff or user.is_superuser)})


class _SiteAdmin(generics.GenericAPIView):
    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        access_site_admin(request.user)


class UserListView(_SiteAdmin, generics.ListAPIView):
    """Every account (site admins). POST creates one with a password."""

    serializer_class = s.UserSerializer

    def get_queryset(self):
        return get_user_model().objects.order_by("username")

    @extend_schema(request=s.UserInputSerializer, responses={201: s.UserSerializer})
    def post(self, request):
        data = s.UserInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = accounts.user_create(actor=request.user, **data.validated_data)
        return Response(self.get_serializer(user).data, status=status.HTTP_201_CREATED)


class InviteListView(_SiteAdmin, generics.ListAPIView):
    """Invite links (site admins). POST makes one: the answer's `link` is shown this once."""

    serializer_class = s.InviteSerializer

    def get_queryset(self):
        return Invite.objects.select_related("project", "used_by").order_by("-id")

    @extend_schema(request=s.InviteInputSerializer, responses={201: s.InviteCreatedSerializer})
    def post(self, request):
        data = s.InviteInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        from annotator.models import Project

        project = Project.objects.filter(pk=v["project"]).first()
        if project is None:
            raise NotFound("Project not found.")
        invite, token = accounts.invite_create(actor=request.user, project=project, role=v["role"],
                                               note=v.get("note", ""))
        body = s.InviteSerializer(invite).data
        body["link"] = invite_link(request, token)
        return Response(body, status=status.HTTP_201_CREATED)


class InviteDetailView(_SiteAdmin):
    serializer_class = s.InviteSerializer

    def delete(self, request, invite_id):
        invite = Invite.objects.filter(pk=invite_id).first()
        if invite is None:
            raise NotFound("Invite not found.")
        accounts.invite_revoke(invite=invite, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class _AcceptSerializer(serializers.Serializer):
    username = serializers.CharField(required=False, max_length=150)
    password = serializers.CharField(required=False, max_length=1000, style={"input_type": "password"})


class _InvitePublicSerializer(serializers.Serializer):
    project = serializers.IntegerField()
    project_name = serializers.CharField()
    role = serializers.ChoiceField(choices=Role.choices)
    expires_at = serializers.DateTimeField()


class InvitePublicView(APIView):
    """What an invite link offers (anyone with the link), and using it: with a username and a
    password a new account joins; a logged-in caller joins with their own account."""

    permission_classes = [AllowAny]

    @extend_schema(responses={200: _InvitePublicSerializer})
    def get(self, request, token):
        invite = accounts.invite_lookup(token)
        return Response({"project": invite.project_id, "project_name": invite.project.name, "role": invite.role,
                         "expires_at": invite.expires_at})

    @extend_schema(request=_AcceptSerializer, responses={201: s.MembershipSerializer})
    def post(self, request, token):
        data = _AcceptSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = request.user if request.user.is_authenticated else None
        user, membership = accounts.invite_accept(token=token, user=user, **data.validated_data)
        access_project(user, membership.project_id)  # the gate agrees: the account is a member now
        return Response(s.MembershipSerializer(membership).data, status=status.HTTP_201_CREATED)


urlpatterns = [
    path("me/", MeView.as_view(), name="me"),
    path("users/", UserListView.as_view(), name="user-list"),
    path("invites/", InviteListView.as_view(), name="invite-list"),
    path("invites/<int:invite_id>/", InviteDetailView.as_view(), name="invite-detail"),
    path("invites/accept/<str:token>/", InvitePublicView.as_view(), name="invite-public"),
]
