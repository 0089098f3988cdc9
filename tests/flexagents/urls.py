"""Test-only routes: tiny views that exercise the platform layer (auth,
parser, error handling) before the real endpoints exist."""
from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from flexagents.urls import urlpatterns as project_urlpatterns


class EchoApi(APIView):
    """Authenticated; answers with the parsed body."""

    def post(self, request: Request) -> Response:
        return Response({"data": request.data, "user": request.user.get_username()})


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("database password=hunter2 leaked in a traceback")


def plain_form(request: HttpRequest) -> HttpResponse:
    # Not csrf_exempt: an unsafe method without a token fails the CSRF check.
    return JsonResponse({"ok": True})


urlpatterns = [
    *project_urlpatterns,
    path("api/test/echo", EchoApi.as_view()),
    path("api/test/boom", boom),
    path("api/test/form", plain_form),
    path("test/form", plain_form),
]
