"""drf-spectacular descriptions of our authentication classes."""
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.views import SpectacularSwaggerView


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "flexagents.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):  # noqa: ANN001, ANN201
        return {"type": "http", "scheme": "bearer", "description": "API token: `Authorization: Bearer <token>`"}


class SessionScheme(OpenApiAuthenticationExtension):
    target_class = "flexagents.authentication.CsrfSessionAuthentication"
    name = "cookieAuth"

    def get_security_definition(self, auto_schema):  # noqa: ANN001, ANN201
        return {"type": "apiKey", "in": "cookie", "name": "sessionid",
                "description": "Django session (browser pages); unsafe methods need the CSRF token"}


class SwaggerView(SpectacularSwaggerView):
    """The Swagger UI page. It renders HTML through a template, so DRF's
    OPTIONS metadata (rendered with the same renderer, no template) failed
    with a 500: without a metadata class OPTIONS is a JSON 405."""

    metadata_class = None
