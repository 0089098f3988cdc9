"""History pages for people: /runs/ (mounted in flexagents/urls.py)."""
from django.urls import path

from runs import pages

app_name = "run_pages"

urlpatterns = [
    path("", pages.run_list_page, name="list"),
    path("<str:run_id>/", pages.run_page, name="detail"),
]
