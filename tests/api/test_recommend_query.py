"""GET /recommend parses its query by hand (for speed, see app.routers.query): it must accept and refuse
exactly as FastAPI's declared ``Query`` parameters do, and document the same parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Query, Request
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.routers.recommend import recommend_query
from app.schemas import MAX_ID, Digits

from .helpers import query_outcome

reference = FastAPI()


@reference.get("/declared")
async def declared(
    user_id: Annotated[Digits, Query(gt=0, le=MAX_ID)],
    n: Annotated[Digits, Query(ge=1, le=100)] = 10,
    genre: Annotated[str | None, Query(max_length=64)] = None,
    exclude: Annotated[list[str], Query()] = [],  # noqa: B006
    min_year: Annotated[Digits | None, Query(ge=0, le=9999)] = None,
    explain: Annotated[bool, Query()] = False,
) -> dict[str, object]:
    return {"user_id": user_id, "n": n, "genre": genre, "exclude": exclude, "min_year": min_year, "explain": explain}


@reference.get("/parsed")
async def parsed(request: Request) -> dict[str, object]:
    return recommend_query(request).model_dump()


CLIENT = TestClient(reference)

numbers = st.one_of(
    st.none(),
    st.integers(min_value=-5, max_value=MAX_ID + 5).map(str),
    st.integers(min_value=-2, max_value=10_005).map(str),
    st.sampled_from(["", " 7", "7 ", "+7", "-0", "007", "7.0", "1e3", "0x10", "٣", "²", "9" * 12, "1_000"]),
    st.text(max_size=4),
)
genres = st.one_of(st.none(), st.text(max_size=70), st.sampled_from(["Comedy", "comedy|Drama", "", "x" * 64, "x" * 65]))
flags = st.one_of(st.none(), st.sampled_from(["true", "false", "1", "0", "True", "FALSE", "yes", "no", "on", "off",
                                             "t", "f", "y", "n", "", " true", "2", "maybe"]), st.text(max_size=5))
excludes = st.lists(st.one_of(st.text(max_size=6), st.integers(1, 99).map(str)), max_size=3)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(user=numbers, n=numbers, genre=genres, exclude=excludes, min_year=numbers, explain=flags)
def test_hand_parsed_query_matches_declared_parameters(user: str | None, n: str | None, genre: str | None,
                                                       exclude: list[str], min_year: str | None,
                                                       explain: str | None) -> None:
    params = [(k, v) for k, v in (("user_id", user), ("n", n), ("genre", genre), ("min_year", min_year),
                                  ("explain", explain)) if v is not None]
    params += [("exclude", value) for value in exclude]
    assert query_outcome(CLIENT, "/parsed", params) == query_outcome(CLIENT, "/declared", params)


def test_recommend_query_is_documented(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/recommend"]["get"]
    params = {p["name"]: p for p in operation["parameters"]}
    assert set(params) == {"user_id", "n", "genre", "exclude", "min_year", "explain"}
    assert params["explain"]["schema"]["type"] == "boolean" and params["explain"]["schema"]["default"] is False
    assert params["user_id"]["required"] is True and params["user_id"]["schema"]["maximum"] == MAX_ID
    assert params["n"]["schema"]["maximum"] == 100 and params["n"]["schema"]["default"] == 10
    assert params["exclude"]["schema"]["type"] == "array" and params["genre"]["schema"]["anyOf"][0]["maxLength"] == 64
    assert all(p["in"] == "query" for p in params.values())
    missing = client.get("/recommend").json()["detail"]
    assert missing[0]["loc"] == ["query", "user_id"] and missing[0]["type"] == "missing"
    assert client.get("/recommend", params={"user_id": 5, "n": "1_0"}).status_code == 422
