from pathlib import Path

import pytest

from movierec.settings import Settings


def test_defaults_are_local_and_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "MODEL_STORE", "DATA_DIR", "API_KEY", "CORS_ORIGINS"):
        monkeypatch.delenv(f"MOVIEREC_{name}", raising=False)
    settings = Settings(_env_file=None)
    assert settings.database_url.startswith("sqlite:///./var/")
    assert settings.model_store == Path("var/models")
    assert settings.data_dir == Path("var/data")
    assert settings.api_key is None
    assert settings.cors_origins == []


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOVIEREC_DATABASE_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("MOVIEREC_MODEL_STORE", "/srv/models")
    monkeypatch.setenv("MOVIEREC_CORS_ORIGINS", "http://a.example, http://b.example")
    monkeypatch.setenv("MOVIEREC_API_KEY", "s3cret")
    settings = Settings(_env_file=None)
    assert settings.database_url == "postgresql+psycopg://u@h/db"
    assert settings.model_store == Path("/srv/models")
    assert settings.cors_origins == ["http://a.example", "http://b.example"]
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_empty_api_key_means_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOVIEREC_API_KEY", "")
    assert Settings(_env_file=None).api_key is None
