from django import forms
from django.contrib import admin

from algoways.admin import TeamScopedAdmin

from .models import BrokerAccount, BrokerSession, Instrument


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
        return fields

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
