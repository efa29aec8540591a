"""Request and response bodies (pydantic v2), with examples for the OpenAPI docs at /docs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic.types import FailFast
from pydantic_core import PydanticCustomError

from movierec.db.schema import MAX_FUTURE_SKEW_S, is_valid_rating, latest_valid_timestamp

#: Ids are stored in 32-bit INTEGER columns; anything larger could never exist.
MAX_ID = 2**31 - 1

UserId = Annotated[int, Field(strict=True, gt=0, le=MAX_ID, description="Positive user id.", examples=[196])]
MovieId = Annotated[int, Field(strict=True, gt=0, le=MAX_ID, description="Positive movie id.", examples=[242])]


def _ascii_digits(value: Any) -> Any:
    """Integers in a URL are written with the digits 0-9 only.

    pydantic's lax mode reads ``1_0`` as 10 and also takes ``+1``, ``1.0`` and surrounding spaces;
    an id has one spelling, so anything else is refused (422) instead of silently normalised.
    """
    if isinstance(value, str) and not (value.isascii() and value.isdigit() and len(value) <= 19):
        raise PydanticCustomError("int_parsing", "Input should be a whole number written with the digits 0-9")
    return value


#: An integer query or path parameter: ASCII digits only (put the range in ``Query``/``Path``).
Digits = Annotated[int, BeforeValidator(_ascii_digits)]

GENRE_HELP = ("Only movies of this genre, or of any of several separated by '|' (Comedy|Drama); "
              "case-insensitive, whole genre names")


#: Most unknown field names named in one error (the rest are counted).
_UNKNOWN_FIELDS_SHOWN = 5


class StrictBody(BaseModel):
    """A request body object: unknown fields are refused, with one error for all of them.

    ``extra="forbid"`` alone reports one error per unknown key, so a single object with 100 000
    keys made 100 000 errors; listing them cost seconds.
    """

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = [key for key in data if key not in cls.model_fields]
            if unknown:
                shown = ", ".join(repr(key) for key in unknown[:_UNKNOWN_FIELDS_SHOWN])
                more = len(unknown) - _UNKNOWN_FIELDS_SHOWN
                raise PydanticCustomError(
                    "extra_forbidden", "Unknown field(s): {fields}{more}",
                    {"fields": shown, "more": f" and {more} more" if more > 0 else ""})
        return data


class PredictRequest(StrictBody):
    """One (user, movie) pair to predict."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"user_id": 196, "movie_id": 242}]})

    user_id: UserId
    movie_id: MovieId


class Prediction(BaseModel):
    """A predicted rating on the 0.5..5 scale."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"user_id": 196, "movie_id": 242, "rating": 3.87, "model_version": 3, "personalized": True}]})

    user_id: int
    movie_id: int
    rating: float = Field(ge=0.5, le=5.0)
    model_version: int
    personalized: bool = Field(description="False when nothing is known about the user (global + movie bias).")


class MovieItem(BaseModel):
    """A movie in a ranked list, with its ranking score."""

    movie_id: int
    title: str | None
    year: int | None
    genres: list[str]
    score: float = Field(description="Ranking score: higher is better; comparable only within one list.")
    ratings_count: int | None = Field(
        None, description="Number of ratings in the database (as of the last popularity refresh).")


class Reason(BaseModel):
    """A movie the user rated that raised a recommended movie's ranking score."""

    movie_id: int
    title: str | None
    weight: float = Field(gt=0, description="How much the user's rating of it raised the ranking score (the units "
                                            "of `score`, 4 significant digits).")


class ExplainedMovieItem(MovieItem):
    """A recommended movie with the ratings it was recommended because of (``explain=true``)."""

    because: list[Reason] | None = Field(
        None, max_length=3,
        description="explain=true only: up to 3 of the user's rated movies that contributed most to this "
                    "movie's score, largest first (empty when none raised it, e.g. popularity).")


_ITEM_EXAMPLE = {"movie_id": 50, "title": "Star Wars", "year": 1977, "genres": ["Action", "Sci-Fi"], "score": 2.31}


RequestIdField = Field(description="Id under which this answer is recorded (also in X-Request-ID); "
                                   "events about it (POST /events) name it.")
ServedByField = Field(description="current: the CURRENT version served it; candidate: the candidate version, "
                                  "for the users in its share (also in X-Model-Role).")


class Recommendation(BaseModel):
    """Top movies for a user that they have not rated."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"user_id": 196, "model_version": 3, "personalized": True, "source": "model", "items": [_ITEM_EXAMPLE],
         "request_id": "3f2a9c0e5b7d4e1f8a6b2c9d0e1f2a3b", "served_by": "current"}]})

    user_id: int
    model_version: int | None
    personalized: bool
    source: Literal["model", "fold_in", "popularity"] = Field(
        description="model: trained factors; fold_in: factors solved from the user's current ratings; "
                    "popularity: nothing known about the user.")
    items: list[ExplainedMovieItem]
    request_id: str = RequestIdField
    served_by: Literal["current", "candidate"] = ServedByField


class SimilarMovies(BaseModel):
    """Movies nearest to one movie by cosine similarity of the learned factors."""

    movie_id: int
    model_version: int
    items: list[MovieItem]
    request_id: str = RequestIdField
    served_by: Literal["current", "candidate"] = ServedByField


class PopularMovies(BaseModel):
    """Most popular movies (damped mean rating), for anonymous visitors."""

    items: list[MovieItem]


def not_in_the_future(value: int | None, name: str) -> int | None:
    """``value`` (Unix seconds), refused when later than the server's clock plus the allowed skew."""
    if value is not None and value > latest_valid_timestamp():
        raise ValueError(f"{name} is in the future (more than {MAX_FUTURE_SKEW_S} s after the server's clock)")
    return value


class RatingIn(StrictBody):
    """A rating to store. ``rated_at`` defaults to now (Unix seconds)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"user_id": 944, "movie_id": 50, "rating": 4.5}, {"user_id": 944, "movie_id": 181, "rating": 4, "rated_at": 893286638}]})

    user_id: UserId
    movie_id: MovieId
    rating: float = Field(description="Stars from 0.5 to 5 in steps of 0.5.", examples=[4.5])
    rated_at: int | None = Field(
        None, ge=0, le=2**62,
        description=f"Unix epoch seconds; default: now. At most {MAX_FUTURE_SKEW_S} s ahead of the server's clock.")

    @field_validator("rated_at")
    @classmethod
    def _not_in_the_future(cls, value: int | None) -> int | None:
        # A far-future timestamp would stay the newest rating for ever: first in every "newest
        # first" list, and the high-water mark by which the workers notice each other's writes.
        return not_in_the_future(value, "rated_at")

    @field_validator("rating", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("rating must be a number")
        return value

    @field_validator("rating")
    @classmethod
    def _half_stars(cls, value: float) -> float:
        if not is_valid_rating(value):
            raise ValueError("rating must be one of 0.5, 1.0, ..., 5.0")
        return value


class _FailFast(FailFast):
    """pydantic's FailFast, hashable so that it can stand in a ``X | Annotated[...]`` union."""

    def __hash__(self) -> int:
        return hash((type(self), self.fail_fast))


#: Batch bodies: validation stops at the first invalid item, so a long list of bad items costs one
#: item's errors, not one error per item (the batch size is checked before, see app.limits).
PredictBatch = Annotated[list[PredictRequest], _FailFast()]
RatingBatch = Annotated[list[RatingIn], _FailFast()]


class EventIn(StrictBody):
    """A click or view of a movie shown in an answer of /recommend or /movies/{id}/similar."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"request_id": "3f2a9c0e5b7d4e1f8a6b2c9d0e1f2a3b", "movie_id": 50, "kind": "click"}]})

    request_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$",
                            description="The answer's request_id (X-Request-ID).")
    movie_id: MovieId
    kind: Literal["click", "view"]
    user_id: UserId | None = Field(None, description="If given, must be the user the answer was for.")
    occurred_at: int | None = Field(
        None, ge=0, le=2**62,
        description=f"Unix epoch seconds; default: now. Not before the answer, at most {MAX_FUTURE_SKEW_S} s "
                    "ahead of the server's clock.")

    @field_validator("occurred_at")
    @classmethod
    def _not_in_the_future(cls, value: int | None) -> int | None:
        return not_in_the_future(value, "occurred_at")


EventBatch = Annotated[list[EventIn], _FailFast()]


class EventOut(BaseModel):
    """An event as stored; ``duplicate`` when the same (request, movie, kind) was already stored
    (it is then not stored or counted again)."""

    request_id: str
    movie_id: int
    kind: Literal["click", "view"]
    occurred_at: int
    duplicate: bool


class RatingOut(BaseModel):
    """A stored rating."""

    user_id: int
    movie_id: int
    rating: float
    rated_at: int


class Movie(BaseModel):
    """A catalogue entry."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"movie_id": 1, "title": "Toy Story", "year": 1995, "genres": ["Animation", "Children's", "Comedy"]}]})

    movie_id: int
    title: str
    year: int | None
    genres: list[str]


class MovieDetail(Movie):
    """A catalogue entry with its rating statistics and whether the current model knows it."""

    ratings_count: int
    mean_rating: float | None
    in_model: bool


class MoviePage(BaseModel):
    """One page of a catalogue search."""

    total: int
    limit: int
    offset: int
    items: list[Movie]


class ModelInfo(BaseModel):
    """The model being served."""

    version: int
    kind: str
    factors: int
    created_at: str | None
    counts: dict[str, Any]
    metrics: dict[str, Any] | None = Field(description="Evaluation metrics recorded by the trainer.")
    baseline_metrics: dict[str, Any] | None = Field(
        None, description="The baselines' metrics on the same held-out ratings (global mean + biases; popularity).")
    refit: Any = Field(None, description="How the published model relates to the evaluated one (trainer's note).")
    data_snapshot: dict[str, Any] | None
    files: list[str] = Field(description="Report images, served at /model/files/{name}.")


class ReloadResponse(BaseModel):
    """Outcome of POST /admin/reload."""

    version: int | None
    previous_version: int | None
    changed: bool
    error: str | None


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    database: bool
    model_version: int | None
    reasons: list[str]


class ErrorDetail(BaseModel):
    """An error that is not a field validation: the reason in words."""

    detail: str = Field(examples=["request body larger than 1048576 bytes"])


#: Raised before any route runs (body parsing, the size limit), so every route documents them.
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorDetail, "description": "The body is not valid UTF-8 or JSON"},
    413: {"model": ErrorDetail, "description": "Body over MOVIEREC_MAX_BODY_BYTES"},
}
