"""Reading HTTP requests, shared by the input kinds: errors with a status, content types, JSON
objects validated against a pydantic model, base64 fields and multipart forms.

Every failure is an `ApiError` with a 4xx status: 415 unknown content type, 400 malformed JSON /
base64 / multipart, 413 over a size limit, 422 missing, wrongly typed or out-of-range fields.
"""
from __future__ import annotations

import base64
import binascii
import json


class ApiError(Exception):
    """An error answered as `ErrorResponse` JSON with `status`."""

    def __init__(self, status: int, code: str, detail: str, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


def summarize_errors(errors) -> str:
    """pydantic's validation errors -> one line naming each field and what is wrong."""
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


def media_type(request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def is_json(media: str) -> bool:
    return media == "application/json" or media.endswith("+json")


def parse_json(raw: bytes, example: str, code: str = "malformed_json"):
    """A request body as JSON; 400 `code` when it is not JSON, nests deeper than the parser goes
    (RecursionError) or holds an integer of more digits than Python converts: every route reads JSON here."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ApiError(400, code, f"body is not valid JSON ({type(err).__name__}); send {example}") from None


async def json_object(request, example: str) -> dict:
    """The body as a JSON object; 400 when it is not JSON, 422 when it is not an object."""
    body = parse_json(await request.body(), example)
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_request", f"body: must be a JSON object like {example}")
    return body


def validate(schema, body: dict):
    """`schema.model_validate(body)`; 422 naming the fields (code `missing_field` when one is missing)."""
    from pydantic import ValidationError

    try:
        return schema.model_validate(body)
    except ValidationError as err:
        code = "missing_field" if any(e["type"] == "missing" for e in err.errors()) else "invalid_request"
        raise ApiError(422, code, summarize_errors(err.errors())) from None


def b64(image: str) -> bytes:
    try:
        data = base64.b64decode(image, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad_base64", "image: not valid base64 (standard alphabet, padded)") from None
    if not data:
        raise ApiError(400, "empty_image", "image: empty")
    return data


def parse_top_k(value, default: int) -> int:
    if value is None:
        return default
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise ApiError(422, "invalid_request", "top_k: must be an integer") from None
    if not 1 <= k <= 1000:
        raise ApiError(422, "invalid_request", "top_k: must be between 1 and 1000")
    return k


async def read_multipart(request, default_top_k: int) -> tuple[bytes, int, str | None]:
    """-> (the `file` upload's bytes, top_k, the `text` field (or its alias `question`) or None) of a
    multipart form."""
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect

    try:
        form = await request.form(max_files=4, max_fields=16, max_part_size=64 * 1024)
    except (ApiError, ClientDisconnect):
        raise
    except HTTPException as err:  # starlette's MultiPartException -> 400
        raise ApiError(400, "bad_multipart", str(err.detail)) from None
    except Exception as err:  # anything python-multipart chokes on is the client's malformed body
        raise ApiError(400, "bad_multipart", f"malformed multipart body ({type(err).__name__})") from None
    try:
        upload = form.get("file")
        if upload is None:
            raise ApiError(422, "missing_field", "file: field required (multipart field `file` with the image)")
        if isinstance(upload, str):
            raise ApiError(422, "invalid_request", "file: must be a file upload, not a text field")
        data = await upload.read()
        top_k, text, question = form.get("top_k"), form.get("text"), form.get("question")
        for name, value in (("top_k", top_k), ("text", text), ("question", question)):
            if value is not None and not isinstance(value, str):
                raise ApiError(422, "invalid_request", f"{name}: must be a text field")
        if text is not None and question is not None:
            raise ApiError(422, "invalid_request", "text, question: give the question once (`question` is an alias "
                                                   "of `text`)")
        text = question if text is None else text
    finally:
        await form.close()
    if not data:
        raise ApiError(400, "empty_image", "file: the uploaded file is empty")
    return data, parse_top_k(top_k, default_top_k), text
