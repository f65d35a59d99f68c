"""The raw limit of the uncached screen pop (bench only, never in the product): a bare ASGI app
(no framework, no middleware, no auth) on uvicorn with the settings ``waypoint serve`` uses,
whose ``/row`` does one asyncpg ``fetch`` of one ``journey.customer`` row by primary key per
request, on a pool like the journey API's (``shared.db.raw_pool``, same size, same DSN: the same
kind of connection), and answers it as JSON; ``/bare`` answers the same way without the read.

``bench/context.py`` serves it beside the journey API and alternates its maxima with theirs:
what one HTTP request plus one database round trip reaches on this machine.

Run: ``python bench/_raw_row_app.py PORT`` with DATABASE_URL (and WAYPOINT_JOURNEY_DB_POOL_SIZE)
in the environment.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson  # noqa: E402
import uvicorn  # noqa: E402

from services.journey.config import JourneySettings  # noqa: E402
from shared.db import raw_pool  # noqa: E402

ROW = "SELECT tenant_id, id, merged_into FROM journey.customer WHERE tenant_id = $1 AND id = $2"
_JSON = [(b"content-type", b"application/json")]


def create() -> Any:
    settings = JourneySettings()
    state: dict[str, Any] = {"next": 0}

    async def lifespan(receive: Any, send: Any) -> None:
        await receive()  # lifespan.startup
        pool = await raw_pool(
            settings.dsn, "bench-raw-row", min_size=2, max_size=settings.db_pool_size
        )
        state["pool"] = pool
        state["keys"] = [tuple(r) for r in await pool.fetch(
            "SELECT tenant_id, id FROM journey.customer ORDER BY random() LIMIT 20000"
        )]  # fmt: skip
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await pool.close()
        await send({"type": "lifespan.shutdown.complete"})

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["path"] == "/row":
            keys = state["keys"]
            state["next"] = n = (state["next"] + 1) % len(keys)
            rows = await state["pool"].fetch(ROW, *keys[n])
            body = orjson.dumps([[str(v) for v in r] for r in rows])
        else:
            body = b'{"status":"ok"}'
        headers = [(b"content-length", str(len(body)).encode()), *_JSON]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


if __name__ == "__main__":
    uvicorn.run(
        create,
        factory=True,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_config=None,
        access_log=False,
        lifespan="on",
        workers=1,
    )
