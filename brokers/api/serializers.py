from __future__ import annotations

import dataclasses
from datetime import datetime

from rest_framework import serializers

from algoways.api.serializers import StrictSerializerMixin
from brokers.adapters import registry
from brokers.models import BrokerAccount


class CredentialFieldSerializer(serializers.Serializer):
    name = serializers.CharField()
    label = serializers.CharField()
    secret = serializers.BooleanField()
    required = serializers.BooleanField()
    help_text = serializers.CharField()


class BrokerSerializer(serializers.Serializer):
    """A registered broker, described so a client can render its connect form."""

    code = serializers.CharField()
    name = serializers.CharField()
    auth_flow = serializers.CharField()
    credential_fields = CredentialFieldSerializer(many=True)
    capabilities = serializers.DictField(child=serializers.BooleanField(), source="has")
    order_types = serializers.SerializerMethodField()
    base_url_required = serializers.BooleanField()
    production_base_url = serializers.CharField()
    rate_limits = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))

    def get_order_types(self, adapter_class) -> list[str]:
        return sorted(str(t) for t in adapter_class.order_types)

    def to_representation(self, adapter_class):
        data = super().to_representation(adapter_class)
        data["credential_fields"] = [dataclasses.asdict(f) for f in adapter_class.credential_fields]
        return data


class BrokerAccountSerializer(StrictSerializerMixin, serializers.ModelSerializer):
    """A broker account. Credentials are write-only for secret fields: they are never returned."""

    credentials = serializers.DictField(
        child=serializers.CharField(allow_blank=True, max_length=4096),
        # required on create; a partial update (PATCH) may leave it out
        help_text="Credential fields of the broker (see /api/brokers/). Secret ones are "
        "write-only; on update, omitted secrets keep their stored value.",
    )
    secrets_set = serializers.SerializerMethodField(
        help_text="Names of the secret credential fields that have a stored value."
    )
    session_expires_at = serializers.SerializerMethodField()

    class Meta:
        model = BrokerAccount
        fields = [
            "id",
            "broker",
            "label",
            "base_url",
            "credentials",
            "secrets_set",
            "connection_state",
            "last_error",
            "last_error_at",
            "trading_halted",
            "session_expires_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "id",
            "connection_state",
            "last_error",
            "last_error_at",
            "trading_halted",
            "created_at",
            "updated_at",
        ]

    def validate_broker(self, value: str) -> str:
        try:
            registry.get(value)
        except registry.UnknownBroker as exc:
            raise serializers.ValidationError(str(exc))
        if self.instance is not None and value != self.instance.broker:
            raise serializers.ValidationError("The broker of an account cannot change.")
        return value

    def get_secrets_set(self, account) -> list[str]:
        return sorted(name for name, value in account.secrets().items() if value)

    def get_session_expires_at(self, account) -> datetime | None:
        session = getattr(account, "session", None) if account.pk else None
        try:
            return session.expires_at if session else None
        except BrokerAccount.session.RelatedObjectDoesNotExist:
            return None

    def to_representation(self, account):
        data = super().to_representation(account)
        data["credentials"] = dict(account.credentials)  # plain (non-secret) fields only
        return data


class LoginUrlSerializer(serializers.Serializer):
    login_url = serializers.URLField()


class OAuthCompleteSerializer(StrictSerializerMixin, serializers.Serializer):
    state = serializers.CharField()
    params = serializers.DictField(child=serializers.CharField(allow_blank=True))


class FundsSerializer(serializers.Serializer):
    total = serializers.DecimalField(max_digits=24, decimal_places=6)
    available = serializers.DecimalField(max_digits=24, decimal_places=6)
    used_margin = serializers.DecimalField(max_digits=24, decimal_places=6)
    equity = serializers.DecimalField(max_digits=24, decimal_places=6, allow_null=True)
    currency = serializers.CharField()


def dataclass_rows(rows) -> list[dict]:
    """Broker dataclasses as JSON-ready dicts, Decimals as strings."""
    return [
        {
            k: (str(v) if v is not None and not isinstance(v, (str, bool, int)) else v)
            for k, v in dataclasses.asdict(row).items()
        }
        for row in rows
    ]


class InstrumentSerializer(serializers.ModelSerializer):
    class Meta:
        from brokers.models import Instrument

        model = Instrument
        fields = [
            "broker",
            "exchange",
            "symbol",
            "broker_symbol",
            "broker_token",
            "name",
            "instrument_type",
            "lot_size",
            "tick_size",
            "expiry",
            "strike",
        ]
