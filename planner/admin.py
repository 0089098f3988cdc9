"""Capabilities and facets in the console, read-only.

They are not models (the registry is code, the catalog a JSON file), so they
get two plain admin views, added to the default admin site's URLs by a small
hook, and linked from the admin index (templates/admin/index.html):
/admin/flex/capabilities/ and /admin/flex/facets/.
"""
from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.views.decorators.http import require_GET

from planner.facets import get_catalog
from planner.registry import get_registry


@require_GET
def capabilities_view(request: HttpRequest) -> HttpResponse:
    rows = sorted(get_registry().describe_all(), key=lambda c: c.get("capabilityId", ""))
    context = {**admin.site.each_context(request), "title": "Capabilities", "rows": rows}
    return TemplateResponse(request, "admin/planner/capabilities.html", context)


@require_GET
def facets_view(request: HttpRequest) -> HttpResponse:
    rows = [{**f.to_dict(), "schema_json": json.dumps(f.schema, indent=2)}
            for f in sorted(get_catalog().values(), key=lambda f: f.name)]
    context = {**admin.site.each_context(request), "title": "Facets", "rows": rows}
    return TemplateResponse(request, "admin/planner/facets.html", context)


def _hook_urls(site: admin.AdminSite) -> None:
    """Prepend the catalog views to the site's URLs (before its catch-all).
    admin_view: staff only, like every console page."""
    original = site.get_urls

    def get_urls() -> list[Any]:
        return [
            path("flex/capabilities/", site.admin_view(capabilities_view), name="flex_capabilities"),
            path("flex/facets/", site.admin_view(facets_view), name="flex_facets"),
        ] + original()

    site.get_urls = get_urls  # type: ignore[method-assign]


_hook_urls(admin.site)
