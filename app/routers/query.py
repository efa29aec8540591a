"""Query strings of the hot GET endpoints, parsed by hand and documented from a pydantic model.

FastAPI's per-request handling of declared ``Query`` parameters costs more than the work of
GET /predict and about a sixth of GET /recommend's (measured with wrk and py-spy, see
docs/benchmarks.md). These endpoints parse the common spelling of their query themselves
(plain decimal numbers in range) and hand anything else to :func:`validate_query`, which
validates the same pydantic model that documents the parameters in OpenAPI
(:func:`openapi_parameters`) and fails with FastAPI's usual 422 (``loc`` ``["query", name]``).
Tests check that both accept and refuse exactly what declared parameters would.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


def openapi_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI ``parameters`` entries for a model's fields as query parameters, as FastAPI writes them."""
    schema = model.model_json_schema()
    return [{"name": name, "in": "query", "required": name in schema.get("required", []), "schema": prop,
             **({"description": prop["description"]} if "description" in prop else {})}
            for name, prop in schema["properties"].items()]


def validate_query(model: type[Model], given: dict[str, Any]) -> Model:
    """``given`` (the query's values, absent ones left out) validated by ``model``; a 422 as FastAPI words it."""
    try:
        return model.model_validate(given)
    except ValidationError as exc:
        errors = []
        for error in exc.errors(include_url=False):
            error = {**error, "loc": ("query", *error["loc"])}
            if error["type"] == "missing":
                error["input"] = None  # as FastAPI reports a missing parameter
            errors.append(error)
        raise RequestValidationError(errors) from None


def plain_int(text: str | None, lo: int, hi: int, digits: int = 10) -> int | None:
    """``text`` as an int when it is plain ASCII decimal digits in ``lo..hi``, else None (let the model decide)."""
    if text is not None and text.isascii() and text.isdigit() and len(text) <= digits:
        value = int(text)
        if lo <= value <= hi:
            return value
    return None
