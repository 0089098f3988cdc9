"""History pages for people: /runs/ (mounted in flexagents/urls.py), and the
human-task inbox for the people who may act (/runs/tasks/)."""
from django.urls import path

from runs import pages, task_pages

app_name = "run_pages"

urlpatterns = [
    path("", pages.run_list_page, name="list"),
    path("tasks/", task_pages.task_list_page, name="tasks"),
    path("tasks/<str:task_id>/", task_pages.task_page, name="task"),
    path("tasks/<str:task_id>/claim/", task_pages.task_claim_page, name="task-claim"),
    path("tasks/<str:task_id>/complete/", task_pages.task_complete_page, name="task-complete"),
    path("tasks/<str:task_id>/extend/", task_pages.task_extend_page, name="task-extend"),
    path("<str:run_id>/", pages.run_page, name="detail"),
]
