"""One settings object for every movierec program, read from ``MOVIEREC_*`` environment variables.

Defaults are safe for a laptop: an SQLite file, a model store and a data folder under ``./var``,
writes open only because no API key is set, and the API bound to loopback by the CLI.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Configuration shared by the CLI, the trainer and the API."""

    model_config = SettingsConfigDict(env_prefix="MOVIEREC_", env_file=".env", extra="ignore")

    database_url: str = Field(
        "sqlite:///./var/movierec.db",
        description="SQLAlchemy URL of the ratings database (sqlite:///... or postgresql+psycopg://...).",
    )
    model_store: Path = Field(Path("./var/models"), description="Directory of the versioned model store.")
    data_dir: Path = Field(Path("./var/data"), description="Where `movierec data fetch` puts MovieLens sets.")
    keep_versions: int = Field(5, ge=1, description="How many model versions the store keeps.")
    pypi_index_url: str = Field(
        "https://pypi.org/simple",
        description="PyPI simple index used for the MovieLens 100K fallback (the recbole wheel); "
        "file:///DIR reads the wheel from a local directory instead.",
    )
    api_key: SecretStr | None = Field(None, description="If set, POST/DELETE need this in header X-API-Key.")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed by CORS, comma-separated."
    )
    max_batch: int = Field(1000, ge=1, description="Most items in one POST /predict or POST /ratings body.")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body accepted, in bytes.")
    header_timeout: float = Field(
        10.0, gt=0, description="Seconds a client may take to send a request's headers (then 408 and close).")
    body_timeout: float = Field(
        30.0, gt=0, description="Seconds a client may take to send a request's body once its headers are in.")
    keep_alive_timeout: float = Field(
        5.0, gt=0, description="Seconds an idle keep-alive connection stays open between requests.")
    limit_concurrency: int = Field(
        1000, ge=1, description="Most connections (and requests in progress) per worker; requests past it get 503.")
    workers: int = Field(
        0, ge=0, description="Worker processes of `movierec serve` (an explicit --workers wins); 0 picks one per usable "
        "CPU core (affinity and cgroup quota), at most 8, and at most 2 with PostgreSQL.")
    reload_interval: float = Field(
        2.0, ge=0, description="Seconds between checks of the model store for a new version (0 turns it off)."
    )
    ann_min_movies: int = Field(
        50_000, ge=1,
        description="Catalogues of at least this many movies are ranked through an approximate nearest-neighbour "
        "index (faiss, built when the version is published or loaded); smaller ones are scored exactly. At 60,000 "
        "movies the index halves /recommend's server CPU (docs/benchmarks.md).")
    log_level: str = Field("INFO", description="Python logging level.")
    record_impressions: bool = Field(
        True, description="Record what /recommend and /movies/{id}/similar showed (for the online metrics).")
    impressions_retention_days: float = Field(
        90.0, gt=0, description="Days impressions and their events are kept; older ones are pruned.")
    impressions_queue_size: int = Field(
        10_000, ge=1, description="Most impressions waiting to be written; past it new ones are dropped and counted.")
    impressions_flush_ms: int = Field(
        200, ge=1, description="Milliseconds between writes of the waiting impressions (one transaction each).")
    impressions_batch_rows: int = Field(
        500, ge=1, description="Impressions that trigger a write before the flush interval is up.")
    hit_window_days: float = Field(
        7.0, gt=0, description="A rating of a shown movie within this many days of the impression is a hit.")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        # An empty MOVIEREC_API_KEY= in a compose file means "no key", not "the empty key".
        return None if value == "" else value


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
