"""Uploads: an image as the raw body (with its Content-Type) or as the multipart field `file`."""

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from core.errors import InvalidRequest, MalformedRequest
from core.schemas.responses import Upload
from service.deps import Conn, Owner, SettingsDep, Store
from service.error_docs import AUTHED, error_responses
from service.routes import BEARER
from service.uploads import save_upload

router = APIRouter(prefix="/v1/uploads", tags=["uploads"], dependencies=BEARER, responses=error_responses(*AUTHED))
IMAGE = {"schema": {"type": "string", "format": "binary"}}
FILE = {"file": {"type": "string", "format": "binary"}}
FORM = {"schema": {"type": "object", "properties": FILE, "required": ["file"], "additionalProperties": False}}
LOCATION = {"Location": {"description": "/v1/uploads/{id}", "schema": {"type": "string"}, "required": True}}


@router.post(
    "",
    status_code=201,
    response_model=Upload,
    responses={201: {"headers": LOCATION}, **error_responses(400, 413, 415, 422)},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"image/png": IMAGE, "image/jpeg": IMAGE, "image/webp": IMAGE, "multipart/form-data": FORM},
        }
    },
)
async def upload(
    request: Request, response: Response, owner: Owner, conn: Conn, store: Store, settings: SettingsDep
) -> Upload:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    declared: str | None = content_type
    if content_type == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=4)
        except Exception as exc:
            raise MalformedRequest("The multipart body could not be parsed.") from exc
        if unknown := sorted(set(form.keys()) - {"file"}):
            raise InvalidRequest.field([unknown[0]], "is not a field of an upload; send the image as `file` only")
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise InvalidRequest.field(["file"], "a multipart upload needs the file in the field `file`")
        data = await file.read()
        declared = None  # a browser's guess from the file name; the bytes decide
    else:
        data = await request.body()
    if not data:
        raise InvalidRequest.field(["file"], "the body is empty; send the image's bytes")
    saved = await run_in_threadpool(save_upload, conn, store, settings, owner, data, declared)
    response.headers["Location"] = f"/v1/uploads/{saved.id}"
    return saved
