"""Broker accounts, their encrypted credentials and sessions."""

from __future__ import annotations

import json

from django.core.exceptions import ValidationError
from django.db import models
from fernet_fields import EncryptedTextField

from algoways.tenancy import TeamScopedQuerySet

from ..adapters import registry
from ..adapters.base import SessionData


class ConnectionState(models.TextChoices):
    DISCONNECTED = "disconnected", "Disconnected"
    CONNECTED = "connected", "Connected"
    NEEDS_LOGIN = "needs_login", "Needs login"
    ERROR = "error", "Error"


class BrokerAccountQuerySet(TeamScopedQuerySet):
    def connected(self):
        return self.filter(connection_state=ConnectionState.CONNECTED)


class BrokerAccount(models.Model):
    """A team's account at one broker: credentials (secret ones encrypted) and connection state."""

    team = models.ForeignKey(
        "accounts.Team", on_delete=models.CASCADE, related_name="broker_accounts"
    )
    broker = models.CharField(max_length=30, help_text="Broker code, e.g. zerodha")
    label = models.CharField(max_length=100)
    base_url = models.URLField(
        blank=True,
        help_text="Empty means the broker's production URL; required for white-label "
        "platforms (DXtrade, Match-Trader).",
    )
    #: Non-secret credential fields (API key, client code, username...), in plain text.
    credentials = models.JSONField(default=dict, blank=True)
    #: Secret credential fields as an encrypted JSON object; never rendered back.
    secret_credentials = EncryptedTextField(default="{}", blank=True)
    connection_state = models.CharField(
        max_length=20, choices=ConnectionState.choices, default=ConnectionState.DISCONNECTED
    )
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    #: Consecutive failed automatic logins; after a few the platform stops trying (brokers lock
    #: accounts after repeated bad logins) until a person reconnects the account.
    login_failures = models.PositiveSmallIntegerField(default=0)
    login_retry_at = models.DateTimeField(null=True, blank=True)
    trading_halted = models.BooleanField(
        default=False, help_text="Kill switch: no new orders on this account while set."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = BrokerAccountQuerySet.as_manager()

    class Meta:
        ordering = ["team", "label"]
        constraints = [
            models.UniqueConstraint(fields=["team", "label"], name="unique_account_label_per_team")
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.broker})"

    @property
    def adapter_class(self):
        return registry.get(self.broker)

    def secrets(self) -> dict[str, str]:
        return json.loads(self.secret_credentials or "{}")

    def set_secrets(self, values: dict[str, str]) -> None:
        self.secret_credentials = json.dumps(values)

    def all_credentials(self) -> dict[str, str]:
        return {**self.credentials, **self.secrets()}

    def clean(self) -> None:
        try:
            adapter_class = registry.get(self.broker)
        except registry.UnknownBroker as exc:
            raise ValidationError({"broker": [str(exc)]}) from exc
        if adapter_class.base_url_required and not self.base_url:
            raise ValidationError(
                {"base_url": ["This broker runs on each firm's own host: give its base URL."]}
            )
        secret_names = adapter_class.secret_field_names()
        leaked = sorted(set(self.credentials) & secret_names)
        if leaked:
            raise ValidationError({"credentials": [f"Secret fields belong in secrets: {leaked}"]})


class BrokerSession(models.Model):
    """The live session of a broker account; every token is encrypted at rest."""

    broker_account = models.OneToOneField(
        BrokerAccount, on_delete=models.CASCADE, related_name="session"
    )
    access_token = EncryptedTextField()
    refresh_token = EncryptedTextField(blank=True, default="")
    feed_token = EncryptedTextField(blank=True, default="")
    extra = EncryptedTextField(blank=True, default="{}")
    issued_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    TEAM_FIELD = "broker_account__team"
    objects = TeamScopedQuerySet.as_manager()

    def __str__(self) -> str:
        return f"Session of {self.broker_account}"

    def to_session_data(self) -> SessionData:
        return SessionData(
            access_token=self.access_token,
            refresh_token=self.refresh_token,
            feed_token=self.feed_token,
            issued_at=self.issued_at,
            expires_at=self.expires_at,
            extra=json.loads(self.extra or "{}"),
        )
