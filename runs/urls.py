from django.urls import path

from runs import apis

app_name = "runs"

urlpatterns = [
    path("run.stream", apis.RunStreamApi.as_view(), name="run-stream-submit"),
    path("runs", apis.RunListCreateApi.as_view(), name="runs"),
    path("run.resume", apis.RunResumeApi.as_view(), name="run-resume"),
    path("runs/<str:run_id>", apis.RunDebugApi.as_view(), name="run-debug"),
    path("runs/<str:run_id>/cancel", apis.RunCancelApi.as_view(), name="run-cancel"),
    # Offloaded: the stream is served on the event loop, its set-up on a bounded executor.
    path("runs/<str:run_id>/stream", apis.offloaded(apis.RunStreamGetApi.as_view()), name="run-stream"),
    path("runs/<str:run_id>/stream-ticket", apis.StreamTicketCreateApi.as_view(), name="stream-ticket"),
    path("runs/<str:run_id>/events", apis.RunEventsApi.as_view(), name="run-events"),
    path("capabilities", apis.CapabilitiesApi.as_view(), name="capabilities"),
    path("facets", apis.FacetsApi.as_view(), name="facets"),
    path("plan.preview", apis.PlanPreviewApi.as_view(), name="plan-preview"),
]
