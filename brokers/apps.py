from django.apps import AppConfig
from django.conf import settings


class BrokersConfig(AppConfig):
    name = "brokers"
    verbose_name = "Brokers"

    def ready(self):
        from .adapters import registry

        registry.load(settings.BROKER_ADAPTERS)
