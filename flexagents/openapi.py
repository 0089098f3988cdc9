"""drf-spectacular descriptions of our authentication classes."""
from drf_spectacular.extensions import OpenApiAuthenticationExtension


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


class StreamTicketScheme(OpenApiAuthenticationExtension):
    target_class = "runs.tickets.StreamTicketAuthentication"
    name = "streamTicket"

    def get_security_definition(self, auto_schema):  # noqa: ANN001, ANN201
        return {"type": "apiKey", "in": "query", "name": "ticket",
                "description": "Single-use stream ticket (POST …/stream-ticket) for EventSource, which cannot "
                               "send Authorization"}
