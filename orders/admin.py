from django.contrib import admin, messages

from algoways.admin import TeamScopedAdmin
from brokers.adapters.errors import BrokerError

from . import services
from .models import EventSource, Order, OrderEvent, OrderGroup, RiskLimits, TeamTradingState


class OrderEventInline(admin.TabularInline):
    """The order's event log: append-only, so read-only here."""

    model = OrderEvent
    extra = 0
    can_delete = False
    fields = ["created_at", "from_status", "to_status", "source", "broker_status", "message"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Order)
class OrderAdmin(TeamScopedAdmin):
    """Orders are read-only here: every change goes through the services (see the action)."""

    list_display = [
        "pk",
        "created_at",
        "team",
        "broker_account",
        "side",
        "quantity",
        "exchange",
        "symbol",
        "order_type",
        "status",
        "filled_quantity",
        "average_price",
    ]
    list_filter = ["status", "side", "order_type", "exchange", "broker_account__broker"]
    search_fields = ["client_order_id", "broker_order_id", "symbol"]
    date_hierarchy = "created_at"
    list_select_related = ["team", "broker_account"]
    inlines = [OrderEventInline]
    actions = ["cancel_selected_orders"]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in Order._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Cancel selected orders")
    def cancel_selected_orders(self, request, queryset):
        cancelled, failed = 0, []
        for order in queryset:
            try:
                services.order_cancel(order=order, source=EventSource.ADMIN)
                cancelled += 1
            except (services.OrderConflict, BrokerError) as exc:
                failed.append(f"#{order.pk}: {exc}")
        if cancelled:
            self.message_user(request, f"Cancel sent for {cancelled} order(s).")
        if failed:
            self.message_user(request, "Not cancelled: " + "; ".join(failed), messages.WARNING)


@admin.register(OrderGroup)
class OrderGroupAdmin(TeamScopedAdmin):
    list_display = ["pk", "team", "created_at"]
    readonly_fields = ["team", "specs", "placed_by_membership", "placed_by_api_key", "created_at"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(RiskLimits)
class RiskLimitsAdmin(TeamScopedAdmin):
    list_display = [
        "team",
        "broker_account",
        "max_quantity",
        "max_notional",
        "max_orders_per_minute",
        "updated_at",
    ]
    list_filter = ["team"]


@admin.register(TeamTradingState)
class TeamTradingStateAdmin(TeamScopedAdmin):
    """The team-wide kill switch."""

    list_display = ["team", "trading_halted", "halt_reason", "changed_at"]
    list_filter = ["trading_halted"]


from .schedule_admin import ScheduledOrderAdmin  # noqa: E402,F401
