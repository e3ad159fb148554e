from django.urls import path

from . import views

urlpatterns = [
    path("brokers/callback/<str:broker>/", views.oauth_callback, name="broker-oauth-callback"),
]
