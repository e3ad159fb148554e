from django.urls import path

from . import views

urlpatterns = [
    path("brokers/callback/<str:broker>/", views.oauth_callback, name="broker-oauth-callback"),
    path("accounts/new/", views.account_new, name="account-new"),
    path("accounts/<int:pk>/", views.account_detail, name="account-detail"),
    path("accounts/<int:pk>/funds/", views.account_funds, name="account-funds"),
    path("accounts/<int:pk>/login/", views.account_login, name="account-login"),
    path("accounts/<int:pk>/connect/", views.account_connect, name="account-connect"),
    path("accounts/<int:pk>/disconnect/", views.account_disconnect, name="account-disconnect"),
]
