"""Log in to a broker account, print its balance, and close the session again.

The platform's version of the original brief's example program, for any broker:
``python manage.py broker_check <account id>``. Each kind of failure gets a clear message and a
non-zero exit status.
"""

from django.core.management.base import BaseCommand, CommandError

from brokers.adapters import errors
from brokers.models import BrokerAccount
from brokers.services import adapter_for_account

FAILURE_MESSAGES = [
    (errors.InvalidCredentials, "Invalid credentials: the broker refused the login"),
    (errors.AccountLocked, "Account locked at the broker"),
    (errors.SessionExpired, "Session expired"),
    (errors.RateLimited, "Rate limited by the broker"),
    (errors.BrokerUnavailable, "Broker unreachable or failing (network or server error)"),
    (errors.BrokerError, "The broker returned an error"),
]


class Command(BaseCommand):
    help = "Log in to a broker account, print its balance, and log out."

    def add_arguments(self, parser):
        parser.add_argument("account_id", type=int)

    def handle(self, *args, account_id: int, **options):
        account = BrokerAccount.objects.filter(pk=account_id).first()
        if account is None:
            raise CommandError(f"No broker account with id {account_id}.")
        adapter = adapter_for_account(account)
        adapter.session = None  # a fresh login, whatever the platform holds
        try:
            if not adapter.supports("credentials_login"):
                raise CommandError(
                    f"{adapter.name} needs an interactive login; connect it in the console."
                )
            adapter.session = adapter.login()
            funds = adapter.funds()
            self.stdout.write(f"Account:   {account.label} ({adapter.name})")
            self.stdout.write(f"Balance:   {funds.total} {funds.currency}")
            self.stdout.write(f"Available: {funds.available} {funds.currency}")
            self.stdout.write(f"Margin:    {funds.used_margin} {funds.currency}")
            if funds.equity is not None:
                self.stdout.write(f"Equity:    {funds.equity} {funds.currency}")
            if not adapter.supports("logout"):
                # Match-Trader documents no logout: dropping the token is all a client can do.
                adapter.session = None
                self.stdout.write(
                    f"Session closed ({adapter.name} has no logout; the token was dropped and "
                    "lapses by itself)."
                )
                return
            try:
                adapter.logout()
                self.stdout.write("Session closed.")
            except (errors.BrokerError, NotImplementedError) as exc:
                self.stderr.write(f"Logout failed: {exc}")
        except errors.BrokerError as exc:
            for error_class, message in FAILURE_MESSAGES:
                if isinstance(exc, error_class):
                    raise CommandError(f"{message}: {exc.message}") from exc
        finally:
            adapter.close()
