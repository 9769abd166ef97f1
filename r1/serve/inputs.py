"""Reading a predict request: content negotiation, base64, image decoding with a pixel limit,
text prompts for language models.

Every failure is an `ApiError` with a 4xx status: 415 unknown content type, 400 malformed JSON /
base64 / multipart or an undecodable image, 413 an image over the pixel limit, 422 missing,
wrongly typed or out-of-range fields (and text sent to an image model, or an image to an LM).
"""
from __future__ import annotations

import base64
import binascii
import io
import json

from fastapi import Request
from PIL import Image, UnidentifiedImageError
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from r1.serve.errors import ApiError
from r1.serve.schemas import ImageRequest, PairRequest, TextRequest
from r1.serve.work import TextTask

OPENAPI_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "The image file."},
        "top_k": {"type": "integer", "minimum": 1, "maximum": 1000}}}},
    "application/json": {"schema": {"oneOf": [ImageRequest.model_json_schema(), TextRequest.model_json_schema()]}},
    "image/*": {"schema": {"type": "string", "format": "binary"}},
}}}


def summarize_errors(errors) -> str:
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _parse_top_k(value, default: int) -> int:
    if value is None:
        return default
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise ApiError(422, "invalid_request", "top_k: must be an integer") from None
    if not 1 <= k <= 1000:
        raise ApiError(422, "invalid_request", "top_k: must be between 1 and 1000")
    return k


async def read_image_request(request: Request, default_top_k: int) -> tuple[bytes, int]:
    """-> (encoded image bytes, top_k) from a multipart, JSON or raw image/* body."""
    media = _media_type(request)
    if media == "multipart/form-data":
        return (await _read_multipart(request, default_top_k))[:2]
    if media == "application/json" or media.endswith("+json"):
        return await _read_json(request, default_top_k)
    if media.startswith("image/") or media == "application/octet-stream":
        data = await request.body()
        if not data:
            raise ApiError(400, "empty_image", "request body is empty")
        return data, _parse_top_k(request.query_params.get("top_k"), default_top_k)
    raise ApiError(415, "unsupported_media_type",
                   f"content type {media or '(none)'!r} not supported; send multipart/form-data with a "
                   f"`file` field, application/json {{\"image\": base64}}, or an image/* body")


async def read_pair_request(request: Request, default_top_k: int, max_text_chars: int) -> tuple[bytes, int, str]:
    """-> (encoded image bytes, top_k, question) for image+text models: multipart `file` + `text`
    fields, or JSON {"image": base64, "text": ...}."""
    media = _media_type(request)
    if media == "multipart/form-data":
        data, top_k, text = await _read_multipart(request, default_top_k)
        if text is None:
            raise ApiError(422, "missing_field", "text: field required (multipart field `text` with the question)")
    elif media == "application/json" or media.endswith("+json"):
        body = await _json_object(request, '{"image": "<base64>", "text": "a question"}')
        try:
            req = PairRequest.model_validate(body)
        except ValidationError as err:
            code = "missing_field" if any(e["type"] == "missing" for e in err.errors()) else "invalid_request"
            raise ApiError(422, code, summarize_errors(err.errors())) from None
        data, top_k, text = _b64(req.image), req.top_k or default_top_k, req.text
    else:
        raise ApiError(415, "unsupported_media_type",
                       f"content type {media or '(none)'!r} not supported by this image+text model; send "
                       f"multipart/form-data with `file` and `text` fields, or application/json "
                       f"{{\"image\": base64, \"text\": ...}}")
    if not text.strip():
        raise ApiError(422, "invalid_request", "text: must not be empty")
    if len(text) > max_text_chars:
        raise ApiError(413, "text_too_long", f"text: {len(text)} characters; at most {max_text_chars}")
    return data, top_k, text


async def _read_multipart(request: Request, default_top_k: int) -> tuple[bytes, int, str | None]:
    from starlette.exceptions import HTTPException

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
        top_k, text = form.get("top_k"), form.get("text")
        for name, value in (("top_k", top_k), ("text", text)):
            if value is not None and not isinstance(value, str):
                raise ApiError(422, "invalid_request", f"{name}: must be a text field")
    finally:
        await form.close()
    if not data:
        raise ApiError(400, "empty_image", "file: the uploaded file is empty")
    return data, _parse_top_k(top_k, default_top_k), text


async def _json_object(request: Request, example: str) -> dict:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise ApiError(400, "malformed_json", f"body is not valid JSON ({type(err).__name__})") from None
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_request", f"body: must be a JSON object like {example}")
    return body


async def _read_json(request: Request, default_top_k: int) -> tuple[bytes, int]:
    body = await _json_object(request, '{"image": "<base64>"}')
    if "text" in body and "image" not in body:
        raise ApiError(422, "text_not_supported",
                       "this model takes images; {\"text\": ...} is for models that take text")
    try:
        req = ImageRequest.model_validate(body)
    except ValidationError as err:
        code = "missing_field" if any(e["type"] == "missing" for e in err.errors()) else "invalid_request"
        raise ApiError(422, code, summarize_errors(err.errors())) from None
    return _b64(req.image), req.top_k or default_top_k


def _b64(image: str) -> bytes:
    try:
        data = base64.b64decode(image, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad_base64", "image: not valid base64 (standard alphabet, padded)") from None
    if not data:
        raise ApiError(400, "empty_image", "image: empty")
    return data


def decode_image(data: bytes, max_pixels: int, decode_limit: int | None = None) -> Image.Image | None:
    """Encoded bytes -> RGB image. The size is checked from the header, before pixels are decoded;
    None, without decoding, for an image of more than `decode_limit` pixels (someone else's job)."""
    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise ApiError(413, "image_too_large", f"image over the pixel limit ({err})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise ApiError(400, "bad_image", "not a recognised image (PNG, JPEG, BMP, GIF, WebP, ...)") from None
    try:
        w, h = im.size
        if w * h > max_pixels:
            raise ApiError(413, "image_too_large", f"image is {w}x{h} = {w * h} pixels; the limit is {max_pixels}")
        if w < 1 or h < 1:
            raise ApiError(400, "bad_image", f"image has no pixels ({w}x{h})")
        if im.format == "JPEG" and len(data) * 8 < -(-w // 8) * -(-h // 8):
            # Huffman-coded JPEG spends at least one bit per 8x8 block: a header claiming more blocks
            # than the data has bits is forged or truncated (libjpeg would pad it with grey)
            raise ApiError(400, "bad_image", f"JPEG data ({len(data)} bytes) too short for its declared "
                                             f"{w}x{h} size: truncated or forged header")
        if decode_limit is not None and w * h > decode_limit:
            return None
        return im.convert("RGB")  # decodes: truncated / corrupt data fails here
    except ApiError:
        raise
    except Image.DecompressionBombError as err:
        raise ApiError(413, "image_too_large", str(err)) from None
    except Exception as err:  # PIL raises many types for corrupt data; all are the client's input
        raise ApiError(400, "bad_image", f"cannot decode image ({type(err).__name__}: {err})"[:300]) from None
    finally:
        im.close()


async def read_text_request(request: Request, max_text_chars: int, max_new_tokens: int) -> TextTask:
    """-> the prompt and sampling settings of a JSON `TextRequest` body (language models)."""
    media = _media_type(request)
    if not (media == "application/json" or media.endswith("+json")):
        raise ApiError(415, "unsupported_media_type",
                       f"content type {media or '(none)'!r} not supported; this is a language model: send "
                       f"application/json {{\"text\": \"...\", \"max_new_tokens\": N}}")
    body = await _json_object(request, '{"text": "..."}')
    if "image" in body and "text" not in body:
        raise ApiError(422, "image_not_supported", "this model is a language model; send {\"text\": ...}")
    try:
        req = TextRequest.model_validate(body)
    except ValidationError as err:
        code = "missing_field" if any(e["type"] == "missing" for e in err.errors()) else "invalid_request"
        raise ApiError(422, code, summarize_errors(err.errors())) from None
    if len(req.text) > max_text_chars:
        raise ApiError(422, "text_too_long", f"text: {len(req.text)} characters; this server takes at most "
                                             f"{max_text_chars}")
    if req.max_new_tokens > max_new_tokens:
        raise ApiError(422, "invalid_request", f"max_new_tokens: at most {max_new_tokens} on this server, "
                                               f"got {req.max_new_tokens}")
    return TextTask(req.text, req.max_new_tokens, req.temperature, req.top_k, req.top_p, req.seed, req.chat)
