from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import ensure_csrf_cookie

from annotator.models import Membership


def _frontend_index():
    return settings.BASE_DIR / "frontend" / "dist" / "index.html"


@login_required
@ensure_csrf_cookie  # the SPA sends it back as X-CSRFToken on writes
def app(request: HttpRequest) -> HttpResponse:
    """The browser UI (frontend/dist); its router handles every path under /app/."""
    index = _frontend_index()
    if not index.exists():
        return HttpResponse(
            "The frontend is not built: run `make run` (it builds it) or `cd frontend && npm ci && npm run build`.",
            status=503,
            content_type="text/plain",
        )
    response = HttpResponse(index.read_bytes(), content_type="text/html; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    return response


@login_required
def home(request: HttpRequest) -> HttpResponse:
    if _frontend_index().exists():
        return redirect("/app/")
    memberships = Membership.objects.filter(user=request.user).select_related("project").order_by("project_id")
    return render(request, "home.html", {"memberships": memberships})


def healthz(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"ok": True})


def invite(request: HttpRequest, token: str) -> HttpResponse:
    """A one-time invite link: set a username and password (or use the logged-in account), then join
    the invite's project with its role. CSRF-protected like every form; the token is never logged."""
    from django.contrib.auth import login

    from annotator.errors import StudioError
    from annotator.services import accounts

    try:
        found = accounts.invite_lookup(token)
    except StudioError as exc:
        return render(request, "invite.html", {"problem": exc.message}, status=exc.status)
    context = {"project_name": found.project.name, "role": found.role, "expires_at": found.expires_at,
               "errors": [], "username": ""}
    if request.method == "POST":
        user = request.user if request.user.is_authenticated else None
        username, password = request.POST.get("username", ""), request.POST.get("password", "")
        context["username"] = username
        if user is None and password != request.POST.get("password2", ""):
            context["errors"] = ["The two passwords differ."]
            return render(request, "invite.html", context, status=400)
        try:
            user, membership = accounts.invite_accept(token=token, user=user, username=username, password=password)
        except StudioError as exc:
            context["errors"] = [exc.message]
            return render(request, "invite.html", context, status=exc.status)
        if not request.user.is_authenticated:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect(f"/app/projects/{membership.project_id}/")
    return render(request, "invite.html", context)
