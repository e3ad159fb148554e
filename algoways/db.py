"""Reads on every order's path, with their SQL built once per database connection.

Django builds a query's SQL from its parts every time the query runs. For the reads on every
order's path (the API key with its member and team, an account locked with its kill switches, an
order locked with its account and session) that costs as much CPU as everything else the read
does: 0.5-0.6 ms of 1.6 ms for placement's locking read on the benchmark machine.

A ``PrecompiledQuery`` builds its queryset once per connection, with a stand-in value for each
parameter, and keeps the SQL and what turns rows into model instances. Each call then runs that
SQL with the call's values and gives the same instances the queryset would: deferred fields,
``select_related`` objects and annotations included.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Model, QuerySet
from django.db.models.query import get_related_populators
from django.db.transaction import TransactionManagementError

#: Stand-in values a query is built with, one per parameter: within every integer column's range
#: (Django turns an out-of-range lookup into an empty result, not into a parameter) and unlike
#: any constant a query holds.
_STAND_IN_BASE = {int: 2_000_000_000, str: "\x1fstand-in:"}


@dataclass(frozen=True)
class _Compiled:
    sql: str
    #: Per parameter of the SQL: (name of the call's value, None) or (None, constant).
    params: tuple[tuple[str | None, object], ...]
    compiler: object
    #: What turns the database's values into Python's, per column (Django's from_db_value).
    converters: dict
    model: type[Model]
    init_list: list[str]
    model_columns: slice
    related_populators: list
    annotation_col_map: dict[str, int]
    locks_rows: bool


class PrecompiledQuery:
    """A read of fixed shape whose SQL is built once per connection; see the module docstring.

    ``build`` returns the queryset for keyword values; ``parameters`` names them with their types
    (``int`` or ``str``). Every value must reach the SQL as a parameter, unchanged.
    """

    def __init__(
        self, build: Callable[..., QuerySet], *, using: str = DEFAULT_DB_ALIAS, **parameters
    ):
        unsupported = {
            name: kind for name, kind in parameters.items() if kind not in _STAND_IN_BASE
        }
        if unsupported:
            raise TypeError(f"Parameters must be int or str: {unsupported}")
        self.build = build
        self.using = using
        self.parameters = parameters
        self._by_connection: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def __deepcopy__(self, memo):
        # Shared, as a compiled statement is: DRF deep-copies a serializer's fields, each time.
        return self

    def all(self, **values) -> list[Model]:
        if values.keys() != self.parameters.keys():
            raise TypeError(f"Expected values for {sorted(self.parameters)}, got {sorted(values)}")
        connection = connections[self.using]
        compiled = self._by_connection.get(connection) or self._compile(connection)
        if compiled.locks_rows and connection.get_autocommit():
            raise TransactionManagementError(
                "select_for_update cannot be used outside of a transaction."
            )
        params = [values[name] if name else constant for name, constant in compiled.params]
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, params)
            rows = cursor.fetchall()
        if compiled.converters:
            rows = compiled.compiler.apply_converters(rows, compiled.converters)
        return [self._instance(compiled, row) for row in rows]

    def first(self, **values) -> Model | None:
        found = self.all(**values)
        return found[0] if found else None

    def _instance(self, compiled: _Compiled, row) -> Model:
        # What Django's ModelIterable does with each row.
        instance = compiled.model.from_db(
            self.using, compiled.init_list, row[compiled.model_columns]
        )
        for populator in compiled.related_populators:
            populator.populate(row, instance)
        for name, position in compiled.annotation_col_map.items():
            setattr(instance, name, row[position])
        return instance

    def _compile(self, connection) -> _Compiled:
        stand_ins = {
            name: _STAND_IN_BASE[kind] + index if kind is int else f"{_STAND_IN_BASE[kind]}{name}"
            for index, (name, kind) in enumerate(self.parameters.items())
        }
        queryset = self.build(**stand_ins)
        compiler = queryset.query.get_compiler(using=self.using, connection=connection)
        sql, raw_params = compiler.as_sql()
        by_value = {(type(value), value): name for name, value in stand_ins.items()}
        params = []
        for value in raw_params:
            name = by_value.get((type(value), value))
            params.append((name, None) if name else (None, value))
        missing = set(stand_ins) - {name for name, _ in params if name}
        if missing:
            raise ValueError(f"{sorted(missing)} did not reach the SQL as parameters: {sql}")
        selected = [column[0] for column in compiler.select[: compiler.col_count]]
        if compiler.has_composite_fields(selected):
            raise ValueError("Composite primary keys are not supported.")
        klass_info = compiler.klass_info
        columns = klass_info["select_fields"]
        model_columns = slice(columns[0], columns[-1] + 1)
        compiled = _Compiled(
            sql=sql,
            params=tuple(params),
            compiler=compiler,
            converters=compiler.get_converters(selected),
            model=klass_info["model"],
            init_list=[column[0].target.attname for column in compiler.select[model_columns]],
            model_columns=model_columns,
            related_populators=get_related_populators(klass_info, compiler.select, self.using),
            annotation_col_map=dict(compiler.annotation_col_map or {}),
            locks_rows=bool(queryset.query.select_for_update)
            and connection.features.has_select_for_update,
        )
        with self._lock:
            self._by_connection[connection] = compiled
        return compiled
