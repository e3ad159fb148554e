"""The paper broker's state: one cash book per paper account, its orders and positions, and the
global quote table every paper account trades against."""

from __future__ import annotations

from decimal import Decimal

from django.db import models

from ..adapters.base import OrderStatus

MONEY = {"max_digits": 20, "decimal_places": 6}

ORDER_STATUS_CHOICES = [(status.value, status.value) for status in OrderStatus]


class PaperBook(models.Model):
    """The cash ledger of one paper broker account; locked for every write to its orders."""

    broker_account = models.OneToOneField(
        "brokers.BrokerAccount", on_delete=models.CASCADE, related_name="paper_book"
    )
    cash = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=3, default="INR")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Paper book of account {self.broker_account_id}"


class PaperOrder(models.Model):
    """One order placed with the paper broker, in the standard order vocabulary."""

    book = models.ForeignKey(PaperBook, on_delete=models.CASCADE, related_name="orders")
    order_id = models.CharField(max_length=32, unique=True)
    client_order_id = models.CharField(max_length=64)
    symbol = models.CharField(max_length=64)
    exchange = models.CharField(max_length=20)
    side = models.CharField(max_length=4)
    quantity = models.DecimalField(**MONEY)
    order_type = models.CharField(max_length=20)
    product = models.CharField(max_length=20)
    validity = models.CharField(max_length=10, default="DAY")
    price = models.DecimalField(**MONEY, null=True, blank=True)
    trigger_price = models.DecimalField(**MONEY, null=True, blank=True)
    #: Stop orders show OPEN while they wait; this says whether the trigger has been hit.
    triggered = models.BooleanField(default=False)
    status = models.CharField(max_length=20, choices=ORDER_STATUS_CHOICES)
    filled_quantity = models.DecimalField(**MONEY, default=Decimal(0))
    average_price = models.DecimalField(**MONEY, null=True, blank=True)
    message = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    filled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["book", "client_order_id"], name="unique_paper_client_order_id"
            )
        ]
        indexes = [models.Index(fields=["exchange", "symbol", "status"])]

    def __str__(self) -> str:
        return f"{self.side} {self.quantity} {self.exchange}:{self.symbol} ({self.status})"


class PaperPosition(models.Model):
    """A paper account's net position in one instrument and product; quantity is signed."""

    book = models.ForeignKey(PaperBook, on_delete=models.CASCADE, related_name="positions")
    exchange = models.CharField(max_length=20)
    symbol = models.CharField(max_length=64)
    product = models.CharField(max_length=20)
    quantity = models.DecimalField(**MONEY, default=Decimal(0))
    average_price = models.DecimalField(**MONEY, default=Decimal(0))
    realised_pnl = models.DecimalField(**MONEY, default=Decimal(0))
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["exchange", "symbol", "product"]
        constraints = [
            models.UniqueConstraint(
                fields=["book", "exchange", "symbol", "product"],
                name="unique_paper_position",
            )
        ]

    def __str__(self) -> str:
        return f"{self.quantity} {self.exchange}:{self.symbol} {self.product}"


class PaperQuote(models.Model):
    """The last price of one instrument for every paper account; moved by ``paper_price_set``."""

    exchange = models.CharField(max_length=20)
    symbol = models.CharField(max_length=64)
    last_price = models.DecimalField(**MONEY)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["exchange", "symbol"]
        constraints = [
            models.UniqueConstraint(fields=["exchange", "symbol"], name="unique_paper_quote")
        ]

    def __str__(self) -> str:
        return f"{self.exchange}:{self.symbol} @ {self.last_price}"
