"""The web playground: `GET /` serves one page, its modules and styles are static files of the package.

The page is only a client of the API (it sends the caller's key like any program), so nothing here is authorized.
"""

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent.parent / "static" / "playground"
ASSETS = "/playground"
# The page loads nothing from elsewhere: scripts and styles from here, images from here, blobs and data URLs.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def playground() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=HEADERS)


def install(app: FastAPI) -> None:
    """The page at `/` and its files under `/playground/`."""
    app.include_router(router)
    app.mount(ASSETS, StaticFiles(directory=STATIC), name="playground")
