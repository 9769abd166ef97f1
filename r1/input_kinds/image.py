"""The `image` input kind: one image in, the family's record out (classification, detection).

HTTP bodies: multipart/form-data with a `file` field (and `top_k`), JSON `{"image": base64, "top_k"}`,
or a raw image/* body (`?top_k=` in the query). Tasks are plain picklable values:

    ImageTask(top_k, data=<encoded bytes>)          decoded by the worker
    ImageTask(top_k, pixels=<uint8 (H, W, 3) RGB>)  decoded by the server (`prepare_image`)

Where an image is decoded balances CPU between the two processes: the worker runs the model, the
event loop parses HTTP. Small uploads of few pixels (the common case; both read from the header
before any decoding) are decoded by the server's decode threads (never the event loop), which then
sends the pixels (cheaper to move than to decode); the worker preprocesses all images of a
batch and runs them together. Preprocessing stays in the worker: done per image in the server, it
cost the server more CPU than it saved the worker (measured with the classification tiny model).
"""
from __future__ import annotations

import asyncio
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from r1.errors import NonFiniteOutput
from r1.input_kinds.base import InputKind, checked, error, failed, is_finite
from r1.input_kinds.http import ApiError, b64, is_json, json_object, media_type, parse_top_k, read_multipart, validate
from r1.input_kinds.tensors import int_param, tensor_meta

log = logging.getLogger(__name__)


class ImageRequest(BaseModel):
    """JSON alternative to a multipart upload (images: classification, detection)."""

    model_config = ConfigDict(extra="forbid")
    image: str = Field(..., description="The image file (PNG, JPEG, ...) encoded as base64 (standard alphabet).")
    top_k: Optional[StrictInt] = Field(None, ge=1, le=1000,
                                       description="Classes listed per image (classification).")


@dataclass(frozen=True)
class ImageTask:
    top_k: int
    data: Optional[bytes] = None  # the encoded image (PNG, JPEG, ...) as uploaded, or
    pixels: object = None         # the decoded image, uint8 numpy (H, W, 3) RGB
    id: int = 0
    text: Optional[str] = None    # the question asked about the image (image+text models)
    area: int = 0                 # its pixels (width x height, from the header): what decoding it costs

    @property
    def cost(self) -> int:
        """Pixels held decoded in the worker: the server's pixel budget counts them (r1/serve/engine.py)."""
        if self.area:
            return self.area
        shape = getattr(self.pixels, "shape", None)
        return int(shape[0] * shape[1]) if shape is not None else 0


def decode_image(data: bytes, max_pixels: int, decode_limit: int | None = None):
    """Encoded bytes -> RGB PIL image. The size is checked from the header, before pixels are decoded;
    None, without decoding, for an image of more than `decode_limit` pixels (someone else's job)."""
    from PIL import Image, UnidentifiedImageError

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


def header_area(data: bytes) -> int:
    """width x height from an image's header (0 when it cannot be read: decoding then refuses it)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return int(im.size[0]) * int(im.size[1])
    except Exception:  # PIL raises many types for bad data; the decoder answers for them
        return 0


def prepare_image(data: bytes, top_k: int, max_pixels: int, max_local_pixels: int) -> ImageTask:
    """Check the header (raising the decoder's 400 / 413 ApiError), then decode here and hand on
    the pixels of images of at most `max_local_pixels`; larger ones travel undecoded, as the
    compressed bytes (the pixel budget is read from the header: a small file that decodes to a
    huge image costs the server nothing). The server calls this in its decode threads."""
    import numpy as np

    image = decode_image(data, max_pixels, decode_limit=max_local_pixels)
    if image is None:
        return ImageTask(top_k, data=data, area=header_area(data))
    return ImageTask(top_k, pixels=np.asarray(image), area=image.width * image.height)


async def decode_task(data: bytes, top_k: int, ctx) -> ImageTask:
    """Decoded by the server (it unloads the worker) when small; the header decides: tiny images on
    the event loop (a bounded ~0.1 ms), larger ones in the decode threads, the rest by the worker.
    Every image's header is read here: its size is checked (413) and becomes the task's `area`."""
    cfg = ctx.cfg
    if len(data) > cfg.prepare_max_bytes:  # the header only (a 400 / 413 now): the worker decodes it
        return prepare_image(data, top_k, cfg.max_pixels, 0)
    task = prepare_image(data, top_k, cfg.max_pixels, cfg.inline_decode_pixels)
    if task.data is not None and cfg.prepare_max_pixels > cfg.inline_decode_pixels:
        task = await asyncio.get_running_loop().run_in_executor(
            ctx.decode_pool, prepare_image, data, top_k, cfg.max_pixels, cfg.prepare_max_pixels)
    return task


def task_image(task: ImageTask, max_pixels: int):
    """The task's image as RGB PIL (ApiError for one that cannot be decoded)."""
    from PIL import Image

    return Image.fromarray(task.pixels) if task.pixels is not None else decode_image(task.data, max_pixels)


def sample_png(size: int = 32, seed: int = 0) -> bytes:
    """A small random RGB PNG (what a client would upload)."""
    import numpy as np
    from PIL import Image

    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _finite(value) -> bool:
    """No NaN/inf in tensors, arrays, numbers, or lists/dicts of them."""
    import numpy as np
    import torch

    if isinstance(value, torch.Tensor):
        return not value.is_floating_point() or bool(torch.isfinite(value).all())
    if isinstance(value, np.ndarray):
        return value.dtype.kind not in "fc" or bool(np.isfinite(value).all())
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    return is_finite(value)


class ImageKind(InputKind):
    name = "image"
    needs = ("io",)

    def openapi_content(self) -> dict:
        return {"multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                    "file": {"type": "string", "format": "binary", "description": "The image file."},
                    "top_k": {"type": "integer", "minimum": 1, "maximum": 1000}}}},
                "application/json": {"schema": ImageRequest.model_json_schema()},
                "image/*": {"schema": {"type": "string", "format": "binary"}}}

    async def read_request(self, request, ctx) -> ImageTask:
        """A multipart, JSON or raw image/* body -> an ImageTask (decoded here when small)."""
        default_top_k = ctx.cfg.top_k
        media = media_type(request)
        if media == "multipart/form-data":
            data, top_k, _ = await read_multipart(request, default_top_k)
        elif is_json(media):
            body = await json_object(request, '{"image": "<base64>"}')
            if "text" in body and "image" not in body:
                raise ApiError(422, "text_not_supported",
                               "this model takes images; {\"text\": ...} is for models that take text")
            req = validate(ImageRequest, body)
            data, top_k = b64(req.image), req.top_k or default_top_k
        elif media.startswith("image/") or media == "application/octet-stream":
            data = await request.body()
            if not data:
                raise ApiError(400, "empty_image", "request body is empty")
            top_k = parse_top_k(request.query_params.get("top_k"), default_top_k)
        else:
            raise ApiError(415, "unsupported_media_type",
                           f"content type {media or '(none)'!r} not supported; send multipart/form-data with a "
                           f"`file` field, application/json {{\"image\": base64}}, or an image/* body")
        return await decode_task(data, top_k, ctx)

    def sample_request(self) -> tuple[bytes, str]:
        return sample_png(), "image/png"

    # Open Inference Protocol: raw RGB pixels, (N, H, W, 3) uint8, any size (the model resizes them
    # as it does uploads): what a client that decoded or captured the image holds
    v2_parameters = {"top_k": "classes listed per image (classification); default: the server's top_k"}

    def v2_inputs(self) -> list[dict]:
        return [tensor_meta("image", "UINT8", [-1, -1, -1, 3])]

    async def read_v2(self, tensors: dict, params: dict, ctx) -> list:
        import numpy as np

        top_k = int_param(params, "top_k", ctx.cfg.top_k, 1, 1000)
        pixels = tensors["image"]
        _, h, w, _ = pixels.shape
        if h < 1 or w < 1:
            raise ApiError(400, "bad_image", f"input image: {w}x{h} has no pixels")
        if h * w > ctx.cfg.max_pixels:
            raise ApiError(413, "image_too_large", f"input image: {w}x{h} = {w * h} pixels; the limit is "
                                                   f"{ctx.cfg.max_pixels}")
        return [ImageTask(top_k, pixels=np.ascontiguousarray(p)) for p in pixels]

    def run_batch(self, predictor, tasks: list, cfg, cancelled=(), emit=None) -> list[tuple]:
        """Images are decoded one by one (a bad one fails alone), preprocessed and run as one batch."""
        results: list = [None] * len(tasks)
        images, where = [], []
        for i, t in enumerate(tasks):
            if not isinstance(t, ImageTask):
                results[i] = error(422, "text_not_supported", "this model takes images")
                continue
            try:
                images.append(task_image(t, cfg.max_pixels))
                where.append(i)
            except ApiError as err:
                results[i] = error(err.status, err.code, err.detail)
        if not images:
            return results
        batch, images, where = _preprocess(predictor, images, where, results)
        if batch is None:
            return results
        try:
            records = _run(predictor, batch, images, max(tasks[i].top_k for i in where))
        except Exception as err:  # one input must not fail the others: run them one by one
            if len(where) > 1:
                log.warning("a batch of %d failed (%r); running its images one by one", len(where), err)
            records = [_run_one(predictor, batch[j:j + 1], images[j], tasks[i].top_k) if len(where) > 1
                       else failed(err) for j, i in enumerate(where)]
        for i, rec in zip(where, records):
            if isinstance(rec, tuple):
                results[i] = rec
                continue
            if "top" in rec:
                rec["top"] = rec["top"][:tasks[i].top_k]
            results[i] = checked(rec)
        return results

    def check_finite(self, predictor, cfg) -> None:
        """A mid-grey image through preprocess, forward and postprocess must stay finite (NaN
        weights, a preprocessing std of 0)."""
        from PIL import Image

        _, h, w = predictor.input_shape
        image = Image.new("RGB", (w, h), (128, 128, 128))
        batch = predictor.preprocess([image])
        if not _finite(batch):
            raise NonFiniteOutput("preprocessing gives non-finite values (NaN/inf): is a preprocess std 0 in "
                                  "model.json?")
        outputs = predictor.forward(batch)
        if not _finite(outputs) or not _finite(predictor.postprocess(outputs, top_k=cfg.top_k, images=[image])):
            raise NonFiniteOutput("the model's outputs are not finite (NaN/inf) on a plain grey image: its weights "
                                  "are broken")

    def read_files(self, model: str, paths: list[Path], options: dict) -> list:
        from r1.inference.images import open_image

        return [open_image(p) for p in paths]


def _preprocess(predictor, images: list, where: list, results: list):
    """-> (batch, images, where): the images preprocessed together; when that fails, one by one, and
    the ones that cannot be preprocessed fail alone (batch None: none could)."""
    try:
        return predictor.preprocess(images), images, where
    except Exception:  # one odd image must not fail the others: find it
        pass
    parts = []
    for im in images:
        try:
            parts.append(predictor.preprocess([im]))
        except Exception as err:
            log.warning("cannot preprocess an image: %r", err)
            parts.append(None)
    for j, part in enumerate(parts):
        if part is None:
            results[where[j]] = error(400, "bad_image", "cannot preprocess this image")
    keep = [j for j, part in enumerate(parts) if part is not None]
    if not keep:
        return None, [], []
    images, where = [images[j] for j in keep], [where[j] for j in keep]
    # preprocessed together again: a dynamic-HW model pads a batch to its largest image
    return (predictor.preprocess(images) if len(keep) > 1 else parts[keep[0]]), images, where


def _run(predictor, batch, images: list, top_k: int) -> list[dict]:
    return predictor.postprocess(predictor.forward(batch), top_k=top_k, images=images)


def _run_one(predictor, batch, image, top_k: int):
    try:
        return _run(predictor, batch, [image], top_k)[0]
    except Exception as err:
        return failed(err)
