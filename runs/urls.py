from django.urls import path

from runs import agent_apis, apis, grip

app_name = "runs"

urlpatterns = [
    path("run.stream", apis.RunStreamApi.as_view(), name="run-stream-submit"),
    path("runs", apis.RunListCreateApi.as_view(), name="runs"),
    path("run.resume", apis.RunResumeApi.as_view(), name="run-resume"),
    path("runs/<str:run_id>", apis.RunDebugApi.as_view(), name="run-debug"),
    path("runs/<str:run_id>/cancel", apis.RunCancelApi.as_view(), name="run-cancel"),
    path("runs/<str:run_id>/policies/<str:policy_id>/trigger", apis.PolicyTriggerApi.as_view(),
         name="policy-trigger"),
    # The stream is served on the event loop; its set-up from a short access cache, else on a bounded executor.
    path("runs/<str:run_id>/stream", apis.cached_stream_view(apis.RunStreamGetApi.as_view()), name="run-stream"),
    # Pushpin's next link for a held stream (FLEX_GRIP_URL; runs.grip): never called by clients.
    path("runs/<str:run_id>/stream/grip/<str:token>", grip.next_view, name="run-stream-grip-next"),
    path("runs/<str:run_id>/stream-ticket", apis.StreamTicketCreateApi.as_view(), name="stream-ticket"),
    path("runs/<str:run_id>/events", apis.RunEventsApi.as_view(), name="run-events"),
    path("capabilities", apis.CapabilitiesApi.as_view(), name="capabilities"),
    path("facets", apis.FacetsApi.as_view(), name="facets"),
    path("plan.preview", apis.PlanPreviewApi.as_view(), name="plan-preview"),
    path("agents", agent_apis.AgentListApi.as_view(), name="agents"),
    path("agents/register", agent_apis.AgentRegisterApi.as_view(), name="agent-register"),
    path("agents/<str:agent_id>/heartbeat", agent_apis.AgentHeartbeatApi.as_view(), name="agent-heartbeat"),
    path("agents/<str:agent_id>/tasks/claim", agent_apis.TaskClaimApi.as_view(), name="task-claim"),
    path("tasks", agent_apis.TaskListApi.as_view(), name="tasks"),
    path("tasks/<str:task_id>/heartbeat", agent_apis.TaskHeartbeatApi.as_view(), name="task-heartbeat"),
    path("tasks/<str:task_id>/complete", agent_apis.TaskCompleteApi.as_view(), name="task-complete"),
    path("tasks/<str:task_id>/fail", agent_apis.TaskFailApi.as_view(), name="task-fail"),
    path("tasks/<str:task_id>/clarify", agent_apis.TaskClarifyApi.as_view(), name="task-clarify"),
]
