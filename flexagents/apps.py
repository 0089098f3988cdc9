from django.apps import AppConfig


class FlexagentsConfig(AppConfig):
    name = "flexagents"
    verbose_name = "Flex Agents"

    def ready(self) -> None:
        from flexagents import openapi  # noqa: F401  (registers schema extensions)
