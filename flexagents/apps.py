from django.apps import AppConfig


class FlexagentsConfig(AppConfig):
    name = "flexagents"
    verbose_name = "Flex Agents"
