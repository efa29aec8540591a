"""The serving benchmark's baseline: a bare FastAPI endpoint returning a constant.

Served exactly as ``movierec serve`` serves the product (``app/cli.py``): ``uvicorn.run`` with one
worker, the configured log level and the access log on, so the difference in a same-run
comparison is the product's own work per request.

usage: python -m bench.bare_app --port P [--workers N] [--no-access-log]
"""

from __future__ import annotations

import argparse

from fastapi import FastAPI

app = FastAPI()


@app.get("/const")
async def const() -> dict[str, object]:
    return {"user_id": 1, "movie_id": 1, "rating": 3.5, "model_version": 1, "personalized": True}


def main() -> None:
    import uvicorn

    from movierec.settings import get_settings

    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()
    uvicorn.run("bench.bare_app:app", host=args.host, port=args.port, workers=args.workers,
                log_level=get_settings().log_level.lower(), access_log=args.access_log)


if __name__ == "__main__":
    main()
