"""The Swagger UI page of the OpenAPI description.

Kept apart from `flexagents.openapi`: that module is DRF's schema class
(`DEFAULT_SCHEMA_CLASS`), and drf-spectacular's views import DRF's settings,
which would import it back half-initialised."""
from __future__ import annotations

from drf_spectacular.views import SpectacularSwaggerView


class SwaggerView(SpectacularSwaggerView):
    """The Swagger UI page. It renders HTML through a template, so DRF's
    OPTIONS metadata (rendered with the same renderer, no template) failed
    with a 500: without a metadata class OPTIONS is a JSON 405."""

    metadata_class = None
