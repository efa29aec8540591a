"""Operations: liveness, readiness, Prometheus metrics, the served model and its report images."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Response, status
from fastapi.responses import FileResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import repository
from ..deps import MetricsDep, RegistryDep, RequiredStateDep, SessionsDep, StoreDep
from ..schemas import BODY_ERRORS, Health, ModelInfo, Readiness

router = APIRouter(responses=BODY_ERRORS, tags=["operations"])
log = logging.getLogger(__name__)


@router.get("/health", response_model=Health)
async def health() -> dict[str, str]:
    """The process is alive (no dependencies checked)."""
    return {"status": "ok"}


@router.get("/ready", response_model=Readiness, responses={503: {"model": Readiness, "description": "Not ready"}})
def ready(sessions: SessionsDep, registry: RegistryDep) -> JSONResponse:
    """Ready to serve: the database answers and a model is loaded; 503 with the reasons otherwise."""
    reasons = []
    database = True
    try:
        with sessions() as session:
            repository.ping(session)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"; the reason is reported
        database = False
        reasons.append(f"database unreachable: {type(exc).__name__}")
        log.warning("readiness: database unreachable: %s", exc)
    model = registry.model
    if model is None:
        reasons.append("no model loaded" + (f": {registry.last_error}" if registry.last_error else ""))
    body = {"status": "ready" if not reasons else "unavailable", "database": database,
            "model_version": model.version if model is not None else None, "reasons": reasons}
    return JSONResponse(body, status_code=status.HTTP_200_OK if not reasons else status.HTTP_503_SERVICE_UNAVAILABLE)


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(app_metrics: MetricsDep) -> Response:
    """Prometheus metrics: requests and latency per route template, model version, reloads."""
    return Response(generate_latest(app_metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/model", response_model=ModelInfo, responses={503: {"description": "No model loaded"}})
def model_info(state: RequiredStateDep, store: StoreDep) -> dict[str, object]:
    """The version being served, its manifest metrics and its report images."""
    model = state.model
    manifest = model.manifest
    return {
        "version": model.version, "kind": model.kind, "factors": model.k, "created_at": manifest.get("created_at"),
        "counts": manifest.get("counts", {}), "metrics": manifest.get("metrics"),
        "baseline_metrics": manifest.get("baseline_metrics"), "refit": manifest.get("refit"),
        "data_snapshot": manifest["data_snapshot"], "files": store.report_files(model.version),
    }


@router.get("/model/files/{name}", response_class=FileResponse,
            responses={200: {"content": {"image/png": {}}}, 404: {"description": "No such file"}})
def model_file(state: RequiredStateDep, store: StoreDep, name: Annotated[str, Path(max_length=200)]) -> FileResponse:
    """A report PNG of the current model version (names are checked: no paths, only ``*.png``)."""
    path = store.report_file(state.model.version, name)
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no report file {name!r} in model version {state.model.version}")
    return FileResponse(path, media_type="image/png")
