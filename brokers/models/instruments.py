"""The instrument master: every broker's tradable instruments in one standard table."""

from django.db import models


class Instrument(models.Model):
    """One instrument at one broker, with the broker's own symbol and token for it."""

    broker = models.CharField(max_length=30)
    exchange = models.CharField(max_length=20)
    symbol = models.CharField(max_length=64, help_text="Common symbol, e.g. INFY")
    broker_symbol = models.CharField(max_length=96)
    broker_token = models.CharField(max_length=64, blank=True)
    name = models.CharField(max_length=200, blank=True)
    instrument_type = models.CharField(max_length=20, blank=True)
    lot_size = models.DecimalField(max_digits=20, decimal_places=6, default=1)
    tick_size = models.DecimalField(max_digits=20, decimal_places=6, default="0.05")
    expiry = models.DateField(null=True, blank=True)
    strike = models.DecimalField(max_digits=20, decimal_places=6, null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["broker", "exchange", "symbol"]
        constraints = [
            models.UniqueConstraint(
                fields=["broker", "exchange", "symbol"], name="unique_instrument_per_broker"
            )
        ]
        indexes = [
            models.Index(fields=["broker", "exchange", "broker_symbol"]),
            models.Index(fields=["broker", "symbol"]),
        ]

    def __str__(self) -> str:
        return f"{self.exchange}:{self.symbol} ({self.broker})"
