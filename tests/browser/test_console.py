"""A desk's day in the browser."""

import pytest

from accounts.models import Role

pytestmark = pytest.mark.browser


@pytest.mark.django_db(transaction=True)
def test_a_member_signs_in_and_sees_the_team_dashboard(page, sign_in, screenshot, team, member):
    membership = member(team, Role.TRADER)
    page.goto("/")
    assert "/login/" in page.url  # the console needs a signed-in user
    screenshot("login")
    sign_in(membership.user.username)
    assert page.locator("h1").inner_text() == team.name
    screenshot("dashboard")
