"""Create (idempotently) a demo team, its owner, an API key and a connected paper account."""

import json

from django.core.management.base import BaseCommand
from django.db import transaction

from accounts import services
from accounts.models import Membership, Role, Team, TeamAPIKey, User

DEMO_TEAM_SLUG = "demo"
DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-password"  # a local demo login, printed to the operator on purpose
DEMO_KEY_NAME = "demo key"


class Command(BaseCommand):
    help = "Create a demo team, an owner with a password and an API key, and print them."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print the result as JSON")

    def handle(self, *args, **options):
        with transaction.atomic():
            user, created = User.objects.get_or_create(
                username=DEMO_USERNAME,
                defaults={"email": "demo@example.com", "is_staff": True},
            )
            if created:
                user.set_password(DEMO_PASSWORD)
                user.save()
            team = Team.objects.filter(slug=DEMO_TEAM_SLUG).first()
            if team is None:
                team = services.team_create(name="Demo desk", owner=user, slug=DEMO_TEAM_SLUG)
            membership = Membership.objects.get(user=user, team=team)
            # A key's plain value is shown once, so each run mints a fresh one and revokes the
            # previous demo key: the printed key always works.
            for old in TeamAPIKey.objects.filter(
                membership=membership, name=DEMO_KEY_NAME, revoked=False
            ):
                services.api_key_revoke(acting=membership, api_key=old)
            _, key = services.api_key_create(membership=membership, name=DEMO_KEY_NAME)
            paper_account = self._paper_account(team)
        result = {
            "team": team.slug,
            "username": DEMO_USERNAME,
            "password": DEMO_PASSWORD,
            "api_key": key,
            "paper_account_id": paper_account.pk if paper_account else None,
            "role": Role.OWNER,
        }
        if options["json"]:
            self.stdout.write(json.dumps(result))
        else:
            for name, value in result.items():
                self.stdout.write(f"{name:>16}: {value}")

    def _paper_account(self, team):
        from brokers.adapters import registry

        try:
            registry.get("paper")
        except registry.UnknownBroker:
            return None
        from brokers.paper import paper_account_ensure

        return paper_account_ensure(team=team, label="Paper")
