"""/api/schema/ is a complete, valid OpenAPI 3 document; /api/docs/ serves it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from openapi_spec_validator import validate
from rest_framework.test import APIClient

ROOT = Path(__file__).resolve().parent.parent
NOT_IN_SCHEMA = {"schema", "docs"}  # the schema and its viewer do not describe themselves
IGNORED_METHODS = {"head", "options", "trace"}


def _walk(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern


def openapi_path(route: str) -> str:
    """``api/^members/(?P<pk>[^/.]+)/$`` -> ``/api/members/{id}/``, as drf-spectacular writes it."""
    path = route.replace("^", "").replace("$", "")
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: "{%s}" % ("id" if m[1] == "pk" else m[1]), path)
    path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: "{%s}" % ("id" if m[1] == "pk" else m[1]), path)
    return "/" + path


def registered_operations() -> set[str]:
    operations = set()
    for route, pattern in _walk(get_resolver().url_patterns):
        if not route.startswith("api/") or pattern.name in NOT_IN_SCHEMA:
            continue
        callback = pattern.callback
        view_class = getattr(callback, "cls", None) or callback.view_class
        actions = getattr(callback, "actions", None)
        if actions:
            methods = set(actions) & set(view_class.http_method_names)
        else:
            methods = {m for m in view_class.http_method_names if hasattr(view_class, m)}
        operations |= {f"{m} {openapi_path(route)}" for m in methods - IGNORED_METHODS}
    return operations


@pytest.fixture(scope="module")
def schema(django_db_blocker):
    with django_db_blocker.unblock():
        response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200, response.content[:500]
    return response.json()


def test_the_schema_is_valid_openapi_3(schema):
    assert schema["openapi"].startswith("3.")
    validate(schema)  # raises OpenAPIValidationError with the path of the first problem


def test_every_registered_api_route_is_in_the_schema(schema):
    documented = {
        f"{method} {path}"
        for path, operations in schema["paths"].items()
        for method in operations
        if method not in {"parameters", "summary", "description", "servers"}
    }
    registered = registered_operations()
    assert "get /api/members/{id}/" in registered  # the route walk really finds routes
    assert not registered - documented, sorted(registered - documented)
    assert not documented - registered, sorted(documented - registered)


def test_every_operation_names_the_api_key_scheme_and_its_responses(schema):
    scheme = schema["components"]["securitySchemes"]["ApiKeyAuth"]
    assert scheme == {**scheme, "type": "apiKey", "in": "header", "name": "Authorization"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert operation.get("responses"), f"{method} {path} documents no response"
            security = operation.get("security", schema.get("security", []))
            assert {"ApiKeyAuth": []} in security, f"{method} {path}"


def test_spectacular_validates_without_a_single_warning():
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "spectacular",
            "--validate",
            "--fail-on-warn",
            "--file",
            "/dev/null",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.django_db
def test_the_docs_page_serves_the_swagger_ui():
    response = APIClient().get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "swagger" in page.lower()
    assert "/api/schema/" in page
