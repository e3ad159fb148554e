from rest_framework.routers import SimpleRouter

from .schedule_views import ScheduledOrderViewSet
from .views import OrderGroupViewSet, OrderViewSet, RiskLimitsViewSet, TradingHaltViewSet

router = SimpleRouter()
router.register("orders", OrderViewSet, basename="order")
router.register("order-groups", OrderGroupViewSet, basename="order-group")
router.register("risk-limits", RiskLimitsViewSet, basename="risk-limits")
router.register("trading-halt", TradingHaltViewSet, basename="trading-halt")
router.register("schedules", ScheduledOrderViewSet, basename="scheduled-order")

urlpatterns = router.urls
