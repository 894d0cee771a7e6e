"""The OpenAPI document of the console API, built from the route table and its structs.

Nothing here is written twice: the statuses come from each route's own record (its
success status and the refusals that follow from its permission, body, path and
method), the bodies, enums and patterns from the msgspec structs the server decodes.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

import msgspec

from kiosk.protocol import messages as m
from kiosk.server.console_api import PUBLIC, ROUTES, SESSION_COOKIE, RouteInfo

_PARAM = re.compile(r"{(\w+)}")
_REF = "#/components/schemas/{name}"


def document(version: str) -> dict[str, Any]:
    types = {t for r in ROUTES for t in (r.body, r.response) if t is not None} | {m.ErrorResponse}
    ordered = sorted(types, key=repr)
    schemas, components = msgspec.json.schema_components(ordered, ref_template=_REF)
    by_type = dict(zip(ordered, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for r in ROUTES:
        paths.setdefault(r.path, {})[r.method.lower()] = _operation(r, by_type)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Skærmbesøg kiosk — municipality server console API", "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE}},
        },
    }


def _operation(r: RouteInfo, by_type: dict[Any, Any]) -> dict[str, Any]:
    error = {"description": "refused, with a reason",
             "content": {"application/json": {"schema": by_type[m.ErrorResponse]}}}
    success: dict[str, Any] = {"description": HTTPStatus(r.status).phrase}
    if r.response is not None:
        success["content"] = {"application/json": {"schema": by_type[r.response]}}
    elif r.media_type != "application/json":  # a download: text the document does not describe further
        success["content"] = {r.media_type: {"schema": {"type": "string"}}}
    responses = {str(r.status): success} | {str(code): _refusal(code, error) for code in r.error_statuses}
    op: dict[str, Any] = {
        "operationId": r.handler.__name__,
        "summary": r.summary,
        "parameters": [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                       for p in _PARAM.findall(r.path)] + _query_parameters(r.query),
        "responses": responses,
    }
    if r.permission != PUBLIC:
        op["security"] = [{"session": []}]
        op["x-permission"] = r.permission or "any logged-in person"
    if r.body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": by_type[r.body]}}}
    return op


def _refusal(code: int, error: dict[str, Any]) -> dict[str, Any]:
    if code == 429:
        retry = {"description": "whole seconds to wait", "schema": {"type": "integer", "minimum": 1}}
        return {**error, "headers": {"Retry-After": {**retry, "required": True}}}
    return error


def _query_parameters(query: Any) -> list[dict[str, Any]]:
    if query is None:
        return []
    schema = msgspec.json.schema(query)
    body = schema["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    return [{"name": name, "in": "query", "required": name in body.get("required", ()), "schema": _not_null(prop)}
            for name, prop in body["properties"].items()]


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent or text, never JSON null: ``X | None`` documents as ``X``."""
    options = [o for o in schema.get("anyOf", ()) if o != {"type": "null"}]
    return options[0] if len(options) == 1 else schema
