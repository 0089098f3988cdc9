"""The role groups of API.md and their model permissions.

Permissions are normally created by a post_migrate signal, after every
migration has run, so this migration creates the rows it needs itself
(get_or_create: the signal later finds them and adds nothing).
"""
from django.db import migrations

SUPPORT = [
    ("runs", "run", "view_run", "Can view run"),
    ("runs", "planversion", "view_planversion", "Can view plan version"),
    ("runs", "noderun", "view_noderun", "Can view node run"),
    ("runs", "runevent", "view_runevent", "Can view run event"),
    ("runs", "auditentry", "view_auditentry", "Can view audit entry"),
    ("hitl", "hitlrequest", "view_hitlrequest", "Can view hitl request"),
    ("hitl", "hitlresponse", "view_hitlresponse", "Can view hitl response"),
]
ADD_RUN = ("runs", "run", "add_run", "Can add run")
ROLE_PERMISSIONS = {
    "client": [ADD_RUN],
    "support": SUPPORT,
    "operator": SUPPORT + [
        ("runs", "run", "operate_run", "Can resume, answer and cancel a run"),
        ADD_RUN,
        ("hitl", "hitlresponse", "add_hitlresponse", "Can add hitl response"),
        ("hitl", "hitlrequest", "change_hitlrequest", "Can change hitl request"),
    ],
}


def create_roles(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    db = schema_editor.connection.alias
    for role, perms in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.using(db).get_or_create(name=role)
        rows = []
        for app_label, model, codename, name in perms:
            # get_for_model does not work with historical models.
            content_type, _ = ContentType.objects.using(db).get_or_create(app_label=app_label, model=model)
            permission, _ = Permission.objects.using(db).get_or_create(
                codename=codename, content_type=content_type, defaults={"name": name})
            rows.append(permission)
        group.permissions.set(rows)


def delete_roles(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Group.objects.using(schema_editor.connection.alias).filter(name__in=list(ROLE_PERMISSIONS)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0001_initial"),
        ("hitl", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("guardian", "0003_remove_groupobjectpermission_guardian_gr_content_ae6aec_idx_and_more"),
    ]

    operations = [migrations.RunPython(create_roles, delete_roles)]
