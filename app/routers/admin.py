"""Administrative actions (write-protected like every POST)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ..deps import PopularityDep, RegistryDep
from ..schemas import BODY_ERRORS, ReloadResponse
from ..security import require_api_key

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_api_key)],
                   responses={**BODY_ERRORS, 401: {"description": "Missing or wrong X-API-Key"}})


@router.post("/reload", response_model=ReloadResponse)
def reload_model(registry: RegistryDep, popularity: PopularityDep) -> dict[str, object]:
    """Load the store's current model version now (if it changed) and refresh the popularity cache.

    A damaged version is refused with the reason in ``error``; the old model keeps serving.
    """
    result = registry.reload()
    registry.poll_candidate()
    registry.refresh_stale()
    popularity.refresh()
    return {"version": result.version, "previous_version": result.previous, "changed": result.changed,
            "error": result.error}
