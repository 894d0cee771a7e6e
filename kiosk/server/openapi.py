"""The OpenAPI document of the console API, built from the route table and its structs."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from kiosk.protocol import messages as m
from kiosk.server.console_api import PUBLIC, ROUTES

_PARAM = re.compile(r"{(\w+)}")


def document(version: str) -> dict[str, Any]:
    types = {t for r in ROUTES for t in (r.body, r.response) if t is not None} | {m.ErrorResponse}
    ordered = sorted(types, key=repr)
    schemas, components = msgspec.json.schema_components(ordered, ref_template="#/components/schemas/{name}")
    by_type = dict(zip(ordered, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for r in ROUTES:
        op: dict[str, Any] = {
            "summary": r.summary,
            "parameters": [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                           for p in _PARAM.findall(r.path)],
            "responses": {
                "200": {"description": "OK", **({"content": {"application/json": {"schema": by_type[r.response]}}}
                                                 if r.response is not None else {})},
                "4XX": {"description": "refused, with a reason",
                        "content": {"application/json": {"schema": by_type[m.ErrorResponse]}}},
            },
        }
        if r.permission != PUBLIC:
            op["security"] = [{"session": []}]
            op["x-permission"] = r.permission or "any logged-in person"
        if r.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": by_type[r.body]}}}
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Skærmbesøg kiosk — municipality server console API", "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"session": {"type": "apiKey", "in": "cookie", "name": "kiosk_session"}},
        },
    }
