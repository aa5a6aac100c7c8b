"""What the API takes and answers: the request and response models, and their OpenAPI entries.

Annotations are evaluated here (no ``from __future__ import annotations``): FastAPI reads these
models, and two of them are built from the serving config (list sizes, history length).
"""

import datetime as dt
from typing import Annotated, Any, Literal, Self

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from recsys import schema as S
from recsys.config import ServingConfig
from recsys.data import contract

IN_PATH = {"user_id"}  # parameters of GET /recommendations/{user_id} taken from the path

# The event contract's ids (``recsys.data.contract``): what the API accepts passes the gate.
Id = Annotated[
    str,
    StringConstraints(min_length=1, max_length=contract.ID_MAX_CHARS),
    AfterValidator(contract.check_id),
]
RequestId = Annotated[str, StringConstraints(pattern=contract.REQUEST_ID_PATTERN)]


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    user_id: Id
    item_id: Id
    event_type: Literal[S.EVENT_TYPES] = "view"  # type: ignore[valid-type]
    event_time: dt.datetime | None = None  # naive means UTC; default: now
    event_id: Id | None = None  # idempotency key; default: a fresh id
    value: float | None = None
    request_id: RequestId | None = None  # the served list this event answers (clicks)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.event_type == "rating" and self.value is None:
            raise ValueError("a rating needs a value")
        if self.event_time is not None:  # it is ingested now
            when = self.event_time
            when = when.astimezone(dt.UTC).replace(tzinfo=None) if when.tzinfo else when
            now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
            contract.check_event_time(when, now)
        return self


class RecommendationOut(BaseModel):
    item_id: str
    score: float | None  # model score, event count (popular) or None (explored)
    source: Literal["model", "popular", "explore"]


class RecommendationsOut(BaseModel):
    request_id: str
    user_id: str | None
    model_version: str
    cold_start: bool  # True: the user is unknown to the model, these are the trending items
    # True: the event store did not answer; the history is only what this process saw lately
    degraded: bool = False
    arm: str | None = None  # the A/B test's arm ("champion", "candidate"); None: no test
    items: list[RecommendationOut]


def request_models(cfg: ServingConfig) -> tuple[type[BaseModel], type[BaseModel]]:
    """``(SessionIn, RecommendParams)``: the body of ``POST /recommendations`` and the parameters
    of ``GET /recommendations/{user_id}``, with ``cfg``'s limits."""

    class SessionIn(BaseModel):
        """An anonymous session: its recent items stand in for a stored history."""

        model_config = ConfigDict(extra="forbid")

        items: list[Id] = Field(default_factory=list, max_length=cfg.max_history)  # oldest first
        k: int = Field(cfg.default_k, ge=1, le=cfg.max_k)
        exclude_seen: bool = True
        user_id: Id | None = None  # recorded with the impression only

    class RecommendParams(BaseModel):
        """The parameters of ``GET /recommendations/{user_id}`` (the path's, then the query's)."""

        user_id: Id
        k: int = Field(cfg.default_k, ge=1, le=cfg.max_k)
        exclude_seen: bool = True

    return SessionIn, RecommendParams


def parse_params(request: Request, params: type[BaseModel]) -> Any:
    """The route's parameters, validated as FastAPI would (the same 422 detail) but by one
    model, which is cheaper (decisions.md: "Parameters validated by one model")."""
    raw = dict(request.path_params)
    query = request.query_params
    raw.update((name, query[name]) for name in ("k", "exclude_seen") if name in query)
    try:
        return params.model_validate(raw)
    except ValidationError as err:
        errors = err.errors(include_url=False)
        for e in errors:
            e["loc"] = ("path" if e["loc"][0] in IN_PATH else "query", *e["loc"])
        raise RequestValidationError(errors) from None


def documented(params: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI ``parameters`` for ``params``, the path's first, as FastAPI writes them."""
    schema = params.model_json_schema()["properties"]
    return {
        "parameters": [
            {
                "name": name,
                "in": "path" if name in IN_PATH else "query",
                "required": name in IN_PATH,
                "schema": field,
            }
            for name, field in schema.items()
        ],
        "responses": {
            "422": {
                "description": "Validation Error",
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/HTTPValidationError"}
                    }
                },
            }
        },
    }
