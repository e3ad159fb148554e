"""The paper broker in the contract suite: no simulator, state in the test database."""

from __future__ import annotations

import secrets
from pathlib import Path

from django.db import connection

from accounts.models import Team
from brokers.adapters.base import BrokerAdapter
from brokers.adapters.paper import PaperAdapter
from brokers.models import PaperOrder, PaperQuote
from brokers.paper import paper_account_ensure, paper_price_set
from brokers.services import adapter_for_account, broker_account_create

from .harness import BrokerHarness


class Harness(BrokerHarness):
    """Drives the paper broker in process: a team, a paper account, and the quote table."""

    code = "paper"
    adapter_class = PaperAdapter
    has_network = False

    # Lifecycle: there is no simulator to run --------------------------------------------------

    def start(self) -> None:
        self.team = None

    def stop(self) -> None:
        return None

    def reset(self) -> None:
        _refuse_unless_test_database()
        # Each test runs in its own rolled-back transaction; the quote is put back explicitly
        # too, so the suite does not depend on the seed migration's value.
        self.team = Team.objects.create(name="Paper desk", slug=f"paper-{secrets.token_hex(4)}")
        PaperQuote.objects.update_or_create(
            exchange=self.tradable[0],
            symbol=self.tradable[1],
            defaults={"last_price": self.tradable_price},
        )

    # Logins ------------------------------------------------------------------------------------

    def credentials(self) -> dict[str, str]:
        return {"starting_cash": "1000000"}

    def bad_credentials(self) -> dict[str, str]:
        return {"starting_cash": "-5"}

    def logged_in_adapter(self) -> BrokerAdapter:
        account = paper_account_ensure(team=self.team, label=f"Paper {secrets.token_hex(3)}")
        return adapter_for_account(account)

    def failed_login(self) -> None:
        account = broker_account_create(
            team=self.team,
            broker="paper",
            label=f"Bad paper {secrets.token_hex(3)}",
            credentials=self.bad_credentials(),
        )
        adapter_for_account(account).login()

    # Market controls ---------------------------------------------------------------------------

    def set_price(self, price) -> None:
        exchange, symbol = self.tradable
        paper_price_set(exchange=exchange, symbol=symbol, price=price)

    def ledger(self) -> list[dict]:
        return [
            {"order_id": o.order_id, "client_tag": o.client_order_id, "status": o.status}
            for o in PaperOrder.objects.all()
        ]


def _refuse_unless_test_database() -> None:
    """Stop before writing to the development database.

    pytest-django creates the test database only when a collected test asks for ``db`` by name;
    the contract suite asks for it at run time, so ``pytest tests/brokers/contract -k paper`` on
    its own would run against the real database (inside a rolled-back transaction, but still).
    """
    settings_dict = connection.settings_dict
    name = str(settings_dict["NAME"])
    test_name = (settings_dict.get("TEST") or {}).get("NAME")
    if name == test_name or "memorydb" in name or Path(name).name.startswith("test_"):
        return
    raise RuntimeError(
        "The paper harness is not on a test database. Run the contract suite together with a "
        "test that uses the db fixture (e.g. tests/brokers/test_paper_adapter.py)."
    )
