import logging

from django import forms
from django.contrib import admin
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe

from algoways.admin import TeamScopedAdmin

from . import services
from .adapters.errors import BrokerError
from .models import BrokerAccount, BrokerSession, ConnectionState, Instrument

logger = logging.getLogger(__name__)


class BrokerAccountForm(forms.ModelForm):
    """Secret credentials are entered here and never shown again (left blank = unchanged)."""

    new_secrets = forms.JSONField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "autocomplete": "off"}),
        help_text='Secret credential fields as JSON, e.g. {"api_secret": "…"}. Stored encrypted; '
        "never displayed. Leave empty to keep the stored secrets.",
    )

    class Meta:
        model = BrokerAccount
        fields = ["team", "broker", "label", "base_url", "credentials", "trading_halted"]


@admin.register(BrokerAccount)
class BrokerAccountAdmin(TeamScopedAdmin):
    form = BrokerAccountForm
    list_display = [
        "label",
        "broker",
        "team",
        "connection_state",
        "trading_halted",
        "last_error_at",
    ]
    list_filter = ["broker", "connection_state", "trading_halted"]
    search_fields = ["label"]
    readonly_fields = ["connection_state", "last_error", "last_error_at", "secrets_set"]
    actions = ["halt_trading", "resume_trading"]

    @admin.display(description="Secrets stored")
    def secrets_set(self, obj):
        return ", ".join(sorted(obj.secrets())) or "none"

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            fields += ["team", "broker"]  # an account never moves to another team or broker
            fields += ["live_funds", "live_positions"]
        return fields

    @admin.display(description="Funds (live from the broker)")
    def live_funds(self, obj):
        live = self._live(obj)
        if "error" in live:
            return live["error"]
        funds = live["funds"]
        text = (
            f"Total {funds.total} {funds.currency} · Available {funds.available} "
            f"{funds.currency} · Used margin {funds.used_margin} {funds.currency}"
        )
        if funds.equity is not None:
            text += f" · Equity {funds.equity} {funds.currency}"
        return text

    @admin.display(description="Positions (live from the broker)")
    def live_positions(self, obj):
        live = self._live(obj)
        if "error" in live:
            return live["error"]
        if not live["positions"]:
            return "No positions."
        return format_html_join(
            mark_safe("<br>"),
            "{}:{} {} qty {} avg {} (P&amp;L {})",
            (
                (p.exchange, p.symbol, p.product, p.quantity, p.average_price, p.pnl)
                for p in live["positions"]
            ),
        )

    def _live(self, obj) -> dict:
        """Funds and positions, asked of the broker once per page; any failure becomes text.

        A broker that is down or a session that expired must never break the admin page.
        """
        if not hasattr(obj, "_admin_live"):
            if obj.connection_state != ConnectionState.CONNECTED:
                obj._admin_live = {
                    "error": f"Not connected ({obj.get_connection_state_display()}): connect "
                    "the account to see its funds and positions."
                }
            else:
                try:
                    funds, positions = services.broker_call(
                        obj, lambda adapter: (adapter.funds(), adapter.positions())
                    )
                    obj._admin_live = {"funds": funds, "positions": positions}
                except BrokerError as exc:
                    obj._admin_live = {"error": f"The broker did not answer: {exc}"}
                except Exception:
                    logger.exception("Reading funds and positions of account %s failed", obj.pk)
                    obj._admin_live = {"error": "Could not read them (an internal error, logged)."}
        return obj._admin_live

    def save_model(self, request, obj, form, change):
        secrets = form.cleaned_data.get("new_secrets") or {}
        if secrets:
            merged = {**obj.secrets(), **{k: str(v) for k, v in secrets.items()}}
            obj.set_secrets(merged)
        super().save_model(request, obj, form, change)

    @admin.action(description="Halt trading (kill switch)")
    def halt_trading(self, request, queryset):
        queryset.update(trading_halted=True)

    @admin.action(description="Resume trading")
    def resume_trading(self, request, queryset):
        queryset.update(trading_halted=False)


@admin.register(BrokerSession)
class BrokerSessionAdmin(TeamScopedAdmin):
    """Sessions show only when they were issued and expire; tokens are never displayed."""

    list_display = ["broker_account", "issued_at", "expires_at", "updated_at"]
    fields = ["broker_account", "issued_at", "expires_at", "updated_at"]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Instrument)
class InstrumentAdmin(admin.ModelAdmin):
    list_display = ["broker", "exchange", "symbol", "broker_symbol", "broker_token", "lot_size"]
    list_filter = ["broker", "exchange", "instrument_type"]
    search_fields = ["symbol", "broker_symbol", "name"]

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request, obj=None):
        return self.has_module_permission(request)
