from rest_framework.routers import SimpleRouter

from .views import BrokerAccountViewSet, BrokerViewSet, InstrumentViewSet

router = SimpleRouter()
router.register("brokers", BrokerViewSet, basename="broker")
router.register("instruments", InstrumentViewSet, basename="instrument")
router.register("broker-accounts", BrokerAccountViewSet, basename="broker-account")

urlpatterns = router.urls
