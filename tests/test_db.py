"""PrecompiledQuery: the reads on every order's path, with their SQL built once per connection."""

import threading

import pytest
from django.db import connection, transaction
from django.db.transaction import TransactionManagementError

from accounts.authentication import UNREVOKED_KEY
from accounts.models import Role
from accounts.services import api_key_create
from algoways.db import PrecompiledQuery
from brokers import paper
from brokers.models import BrokerAccount
from orders import services
from orders.models import RiskLimits, TeamTradingState

pytestmark = pytest.mark.django_db


def field_values(instance) -> dict:
    return {
        field.attname: getattr(instance, field.attname)
        for field in instance._meta.concrete_fields
        if field.attname not in instance.get_deferred_fields()
    }


@pytest.fixture
def accounts(team):
    return [paper.paper_account_ensure(team=team, label=f"Paper {n}") for n in (1, 2)]


def test_gives_the_instances_the_queryset_gives_with_related_rows_and_annotations(
    team, accounts, django_assert_num_queries
):
    TeamTradingState.objects.create(team=team, trading_halted=True, halt_reason="drill")
    RiskLimits.objects.create(team=team, broker_account=accounts[1], max_quantity=5)
    for account in accounts:
        with transaction.atomic():
            precompiled = services.ACCOUNT_FOR_PLACING.first(pk=account.pk)
            from_orm = services.risk.with_trading_controls(
                BrokerAccount.objects.select_for_update(of=("self",))
            ).get(pk=account.pk)
        assert field_values(precompiled) == field_values(from_orm)
        assert precompiled.get_deferred_fields() == from_orm.get_deferred_fields() != set()
        assert precompiled.has_risk_limits == from_orm.has_risk_limits
        # The team and its kill switch came with the row: reading them asks nothing more.
        with transaction.atomic():
            precompiled = services.ACCOUNT_FOR_PLACING.first(pk=account.pk)
            with django_assert_num_queries(0):
                assert precompiled.team.trading_state.halt_reason == "drill"
                assert field_values(precompiled.team) == field_values(team)
    assert [services.ACCOUNT_FOR_PLACING.first(pk=a.pk).has_risk_limits for a in accounts] == [
        False,
        True,
    ]


def test_binds_each_calls_values_and_finds_nothing_for_unknown_ones(team, member):
    keys = [api_key_create(membership=member(team, Role.TRADER), name=n)[1] for n in "ab"]
    prefixes = [key.partition(".")[0] for key in keys]
    found = [UNREVOKED_KEY.first(prefix=prefix) for prefix in prefixes]
    assert [api_key.prefix for api_key in found] == prefixes
    assert [api_key.name for api_key in found] == ["a", "b"]
    assert found[0].membership.team == team
    assert UNREVOKED_KEY.first(prefix="nokey123") is None
    assert UNREVOKED_KEY.all(prefix="nokey123") == []


def on_another_connection(work):
    """``work()``'s answer (or what it raised) from a thread of its own, so its own connection
    (outside this test's transaction: the test's rows are not there)."""
    outcome = {}

    def run():
        try:
            outcome["answer"] = work()
        except Exception as exc:  # noqa: BLE001 - handed to the test
            outcome["raised"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return outcome


def test_builds_the_sql_once_per_connection(accounts):
    built = []

    def build(pk):
        built.append(pk)
        return BrokerAccount.objects.filter(pk=pk)

    query = PrecompiledQuery(build, pk=int)
    assert [query.first(pk=account.pk).pk for account in accounts * 2] == [
        account.pk for account in accounts * 2
    ]
    assert len(built) == 1
    # Built again there (running it is another matter: SQLite's shared in-memory database
    # keeps the test's tables locked meanwhile).
    on_another_connection(lambda: query.first(pk=accounts[0].pk))
    assert len(built) == 2


def test_refuses_values_that_do_not_reach_the_sql_as_parameters(accounts):
    hard_coded = PrecompiledQuery(
        lambda pk: BrokerAccount.objects.filter(pk=accounts[0].pk), pk=int
    )
    with pytest.raises(ValueError, match="did not reach the SQL"):
        hard_coded.first(pk=accounts[1].pk)
    with pytest.raises(TypeError, match="Expected values for"):
        services.ACCOUNT_FOR_PLACING.first(id=accounts[0].pk)
    with pytest.raises(TypeError, match="must be int or str"):
        PrecompiledQuery(lambda pk: BrokerAccount.objects.filter(pk=pk), pk=float)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite has no row locks")
def test_a_locking_read_outside_a_transaction_is_refused_as_django_refuses_it(accounts):
    def read_in_and_out_of_a_transaction():
        with transaction.atomic():
            services.ACCOUNT_FOR_PLACING.first(pk=accounts[0].pk)  # compiled
        services.ACCOUNT_FOR_PLACING.first(pk=accounts[0].pk)

    raised = on_another_connection(read_in_and_out_of_a_transaction)["raised"]
    assert isinstance(raised, TransactionManagementError)
    assert "select_for_update" in str(raised)
