from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("teams/switch/", views.team_switch, name="team-switch"),
    path("keys/", views.api_keys, name="api-keys"),
    path("keys/<str:prefix>/revoke/", views.api_key_revoke, name="api-key-revoke"),
    path("members/", views.members, name="members"),
    path("members/<int:pk>/role/", views.member_role, name="member-role"),
    path("members/<int:pk>/remove/", views.member_remove, name="member-remove"),
    path("", views.dashboard, name="dashboard"),
]
