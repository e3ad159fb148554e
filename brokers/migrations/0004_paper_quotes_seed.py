"""Seed the paper broker's quote table with a few liquid NSE equities."""

from decimal import Decimal

from django.db import migrations

DEFAULT_QUOTES = {
    ("NSE", "INFY"): Decimal("1500"),
    ("NSE", "SBIN"): Decimal("800"),
    ("NSE", "RELIANCE"): Decimal("2900"),
    ("NSE", "TCS"): Decimal("4000"),
    ("NSE", "HDFCBANK"): Decimal("1650"),
}


def seed_quotes(apps, schema_editor):
    PaperQuote = apps.get_model("brokers", "PaperQuote")
    for (exchange, symbol), last_price in DEFAULT_QUOTES.items():
        # get_or_create: a quote someone already moved keeps its price.
        PaperQuote.objects.get_or_create(
            exchange=exchange, symbol=symbol, defaults={"last_price": last_price}
        )


def unseed_quotes(apps, schema_editor):
    PaperQuote = apps.get_model("brokers", "PaperQuote")
    for exchange, symbol in DEFAULT_QUOTES:
        PaperQuote.objects.filter(exchange=exchange, symbol=symbol).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("brokers", "0003_paper_broker"),
    ]

    operations = [
        migrations.RunPython(seed_quotes, unseed_quotes),
    ]
