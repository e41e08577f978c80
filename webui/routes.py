"""HTTP routes beside the chat: the streaming playground and the element files of stored threads."""

from __future__ import annotations

import asyncio
import mimetypes
from typing import Annotated, Any

import chainlit.server
from chainlit.auth import get_current_user
from chainlit.config import config as chainlit_config
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse

from rag.history import FILES_ROUTE, may_read, stored_file
from rag.playground import MAX_BODY_BYTES, parse_request, playground_events, sse_stream
from rag.playground_assets import (
    Asset,
    embedder_asset,
    engines_manifest,
    model_asset,
    not_modified,
    vendor_asset,
)
from webui.commands import LATEST_REPORT_ROUTE, latest_report
from webui.context import AppContext


def make_router(ctx: AppContext) -> APIRouter:
    """GET /playground, POST /playground/stream and GET /history/files/…, under the root path."""
    routes = APIRouter(prefix=chainlit_config.run.root_path)

    @routes.get("/playground", include_in_schema=False)
    async def playground_page() -> FileResponse:
        return FileResponse(
            ctx.playground_html, media_type="text/html", headers={"Cache-Control": "no-cache"}
        )

    @routes.post("/playground/stream")
    async def playground_stream(
        request: Request, _user: Annotated[Any, Depends(get_current_user)]
    ) -> Response:
        """Server-sent events: token…, then done (timings) or error. Signed-in users only when sign-in is on."""
        if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
            return JSONResponse(
                {
                    "error": f"The request is over {MAX_BODY_BYTES // 1_000_000} MB; paste less text."
                },
                status_code=413,
            )
        try:
            role, prompt, reference = parse_request(await request.json())
        except ValueError as exc:  # not JSON, or the wrong shape
            return JSONResponse({"error": f"Bad playground request: {exc}"}, status_code=400)
        return StreamingResponse(
            sse_stream(playground_events(ctx.cfg, role, prompt, reference)),
            media_type="text/event-stream",  # also keeps Chainlit's gzip middleware from buffering it
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # The in-browser engine's files (rag/playground_assets.py whitelists them; no path is ever
    # taken from the URL). Public like /public: they carry no user data.
    @routes.get("/playground/engines", include_in_schema=False)
    async def playground_engines() -> JSONResponse:
        manifest = await asyncio.to_thread(engines_manifest, ctx.cfg.data_dir)
        return JSONResponse(manifest, headers={"Cache-Control": "no-cache"})

    @routes.api_route(
        "/playground/assets/{key:path}", methods=["GET", "HEAD"], include_in_schema=False
    )
    async def playground_vendor_file(request: Request, key: str) -> Response:
        return _asset_response(request, vendor_asset(key))

    @routes.api_route(
        "/playground/models/{digest}/{filename}", methods=["GET", "HEAD"], include_in_schema=False
    )
    async def playground_model_file(request: Request, digest: str, filename: str) -> Response:
        asset = await asyncio.to_thread(model_asset, digest, filename, ctx.cfg.data_dir)
        return _asset_response(request, asset)

    @routes.api_route(
        "/playground/embedder/{digest}/{filename}", methods=["GET", "HEAD"], include_in_schema=False
    )
    async def playground_embedder_file(request: Request, digest: str, filename: str) -> Response:
        asset = await asyncio.to_thread(embedder_asset, digest, filename, ctx.cfg.data_dir)
        return _asset_response(request, asset)

    @routes.get(LATEST_REPORT_ROUTE, include_in_schema=False)
    async def latest_report_page(user: Annotated[Any, Depends(get_current_user)]) -> Response:
        """The report page, to signed-in users when sign-in is on (it names questions and settings)."""
        path = latest_report(ctx.cfg.data_dir)
        if ctx.auth.enabled and getattr(user, "id", None) is None:
            return JSONResponse({"error": "sign in first"}, status_code=401)
        if not path.is_file():
            return JSONResponse({"error": "no report yet: run `rag compare`"}, status_code=404)
        return FileResponse(path, media_type="text/html", headers={"Cache-Control": "no-cache"})

    @routes.get(FILES_ROUTE + "/{object_key:path}", include_in_schema=False)
    async def history_file(
        object_key: str, user: Annotated[Any, Depends(get_current_user)]
    ) -> Response:
        """An element file of a stored thread, to its owner (anyone when sign-in is off)."""
        try:
            path = stored_file(ctx.element_files, object_key)
        except ValueError:
            path = None
        owner = getattr(user, "id", None)
        allowed = may_read(object_key, owner) and not (ctx.auth.enabled and owner is None)
        if path is None or not path.is_file() or not allowed:
            return JSONResponse({"error": "no such file"}, status_code=404)
        media = mimetypes.guess_type(path.name)[0] or "text/plain; charset=utf-8"
        return FileResponse(path, media_type=media, headers={"Cache-Control": "private, no-cache"})

    return routes


def _asset_response(request: Request, asset: Asset | None) -> Response:
    if asset is None:
        return JSONResponse({"error": "no such file"}, status_code=404)
    if not_modified(request.headers, asset):
        return Response(status_code=304, headers=asset.headers())
    # Starlette answers Range requests (206) and HEAD itself.
    return FileResponse(asset.path, media_type=asset.media_type, headers=asset.headers())


def serve_before_chainlit(router: APIRouter) -> None:
    """Add `router`'s routes ahead of Chainlit's catch-all GET /{full_path:path}, which serves the chat."""
    routes = chainlit.server.app.router.routes
    before = len(routes)
    chainlit.server.app.include_router(router)
    added = routes[before:]
    del routes[before:]

    # `chainlit run -w` runs app.py again on changes: replace the routes it added last time.
    state = chainlit.server.app.state
    previous = {id(r) for r in getattr(state, "rag_routes", [])}
    routes[:] = [*added, *(r for r in routes if id(r) not in previous)]
    state.rag_routes = added
