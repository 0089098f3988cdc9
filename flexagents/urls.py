from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from flexagents import views
from flexagents.docs_views import SwaggerView

urlpatterns = [
    path("admin/", admin.site.urls),
    # History pages for people (session login; clients are not admin staff).
    path("runs/", include("runs.page_urls")),
    path("accounts/login/", auth_views.LoginView.as_view(next_page="/runs/"), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(next_page="/accounts/login/"), name="logout"),
    path("api/health", views.health, name="health"),
    path("", include("runs.ops_urls")),  # /api/ready, /metrics
    path("api/v1/flex/", include("runs.urls")),
    path("api/hitl/", include("runs.hitl_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="openapi-schema"),
    path("api/docs/", SwaggerView.as_view(url_name="openapi-schema"), name="openapi-docs"),
]
