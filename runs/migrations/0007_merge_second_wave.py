# Joins the migrations of work that landed side by side (agents and tasks,
# language-model usage,
# governance and notifications, facet rows).
from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("runs", "0005_i14_run_facets"),
        ("runs", "0006_i11_agent_role"),
        ("runs", "0006_i13_notifications"),
        ("runs", "0005_i12llm_node_usage"),
    ]

    operations = []
