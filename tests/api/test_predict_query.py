"""GET /predict parses its query by hand (for speed): it must accept and refuse exactly as FastAPI's declared
``Query`` parameters do, and document the same parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Query, Request
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.routers.predict import _query_ids
from app.schemas import MAX_ID, Digits

from .helpers import query_outcome

reference = FastAPI()


@reference.get("/declared")
async def declared(user_id: Annotated[Digits, Query(gt=0, le=MAX_ID)],
                   movie_id: Annotated[Digits, Query(gt=0, le=MAX_ID)]) -> dict[str, int]:
    return {"user_id": user_id, "movie_id": movie_id}


@reference.get("/parsed")
async def parsed(request: Request) -> dict[str, int]:
    user_id, movie_id = _query_ids(request)
    return {"user_id": user_id, "movie_id": movie_id}


CLIENT = TestClient(reference)

values = st.one_of(
    st.none(),
    st.integers(min_value=-5, max_value=MAX_ID + 5).map(str),
    st.sampled_from(["", " 7", "7 ", "+7", "-0", "007", "7.0", "7.5", "1e3", "0x10", "٣", "²", "9" * 12, "true", "1_000"]),
    st.text(max_size=6),
)


def _outcome(path: str, user: str | None, movie: str | None) -> tuple[int, object]:
    params = {k: v for k, v in (("user_id", user), ("movie_id", movie)) if v is not None}
    return query_outcome(CLIENT, path, params)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(user=values, movie=values)
def test_hand_parsed_query_matches_declared_parameters(user: str | None, movie: str | None) -> None:
    assert _outcome("/parsed", user, movie) == _outcome("/declared", user, movie)


def test_predict_query_is_documented(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/predict"]["get"]
    params = {p["name"]: p for p in operation["parameters"]}
    assert set(params) == {"user_id", "movie_id"}
    for p in params.values():
        assert p["in"] == "query" and p["required"] is True
        assert p["schema"]["type"] == "integer" and p["schema"]["exclusiveMinimum"] == 0
        assert p["schema"]["maximum"] == MAX_ID
    assert params["user_id"]["schema"]["examples"] == [196] and params["user_id"]["description"] == "User id"
    assert client.get("/predict", params={"user_id": 0, "movie_id": 1}).status_code == 422
    missing = client.get("/predict", params={"user_id": 1}).json()["detail"]
    assert missing[0]["loc"] == ["query", "movie_id"] and missing[0]["type"] == "missing"


def test_ids_are_ascii_digits_only(client: TestClient) -> None:
    """pydantic's lax ints read ``1_0`` as 10 and take ``+1``, ``1.0`` and spaces: ids have one spelling."""
    assert client.get("/predict", params={"user_id": "10", "movie_id": "1"}).status_code == 200
    for bad in ("1_0", "+1", "1.0", " 1", "1 ", "01e0", "\u0661"):
        for path, params in (("/predict", {"user_id": bad, "movie_id": "1"}), ("/recommend", {"user_id": bad}),
                             (f"/movies/{bad}", {}), (f"/users/{bad}/ratings", {}), (f"/movies/{bad}/similar", {}),
                             ("/movies", {"limit": bad}), ("/popular", {"n": bad})):
            response = client.get(path, params=params)
            assert response.status_code == 422, (path, params, response.status_code)
    assert client.delete("/users/1_0/ratings/1").status_code == 422
