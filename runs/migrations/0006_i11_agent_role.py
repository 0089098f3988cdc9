"""The `agent` role (API.md, Agents): a group whose only permission is to
register agents; what an agent may do beyond that is decided per object (its
own agent, the tasks of the capabilities it registered)."""
from django.db import migrations

AGENT_PERMISSIONS = [("planner", "agent", "add_agent", "Can add agent")]


def create_agent_role(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    db = schema_editor.connection.alias
    group, _ = Group.objects.using(db).get_or_create(name="agent")
    rows = []
    for app_label, model, codename, name in AGENT_PERMISSIONS:
        content_type, _ = ContentType.objects.using(db).get_or_create(app_label=app_label, model=model)
        permission, _ = Permission.objects.using(db).get_or_create(
            codename=codename, content_type=content_type, defaults={"name": name})
        rows.append(permission)
    group.permissions.set(rows)


def delete_agent_role(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Group.objects.using(schema_editor.connection.alias).filter(name="agent").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0005_i11_tasks"),
        ("runs", "0002_roles"),
        ("planner", "0001_i11_agents"),
    ]

    operations = [migrations.RunPython(create_agent_role, delete_agent_role)]
