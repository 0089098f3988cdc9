"""/api/hitl/ (its views: runs.hitl_apis); URL names keep the `hitl` namespace."""
from django.urls import path

from runs import hitl_apis as apis

app_name = "hitl"

urlpatterns = [
    path("pending", apis.HitlPendingApi.as_view(), name="pending"),
    path("respond", apis.HitlRespondApi.as_view(), name="respond"),
    path("resume", apis.HitlResumeApi.as_view(), name="resume"),
    path("remove", apis.HitlRemoveApi.as_view(), name="remove"),
]
