"""The server's page at `/`: try the model in a browser (r1/serve/static/: plain HTML, CSS and
JavaScript, no build step, no outside resources, every URL relative to the page so it works offline
and behind a path prefix). Pick or drop an image and see the detections drawn or the class scores,
ask a question about an image, stream generated text; the variant that answered is shown, and a
variant can be pinned. It calls R1's own routes (/readyz, /v1/predict, /v1/completions)."""
from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

STATIC = Path(__file__).with_name("static")


def mount_web(app: FastAPI) -> None:
    from fastapi.staticfiles import StaticFiles

    app.mount("/ui", StaticFiles(directory=str(STATIC)), name="ui")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})
