"""Probes and scrapers: readiness and Prometheus metrics (API.md, "Operations").

Outside /api/v1/flex/, so included at the root by flexagents/urls.py.
"""
from django.urls import path

from runs import apis

urlpatterns = [
    path("api/ready", apis.ReadyApi.as_view(), name="ready"),
    path("metrics", apis.MetricsApi.as_view(), name="metrics"),
]
