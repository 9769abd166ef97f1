"""The `image+text` input kind: an image and a question about it in, the family's answer record out.

HTTP bodies: multipart/form-data with `file` and `text` fields (and `top_k`), or JSON
`{"image": base64, "text": "a question", "top_k"}`; `question` is accepted as an alias of `text` in
both (the name `r1 predict RUN IMAGE... --question TEXT` uses, asking the same question about each
image). Tasks are `ImageTask`s (r1.input_kinds.image) with `text`.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from pathlib import Path
from typing import Optional

from pydantic import Field, model_validator

from r1.errors import ConfigError, DataError
from r1.input_kinds.base import InputKind, checked, error, failed, text_contract
from r1.input_kinds.http import ApiError, b64, is_json, json_object, media_type, read_multipart, validate
from r1.input_kinds.image import ImageKind, ImageRequest, ImageTask, decode_task, sample_png, task_image
from r1.input_kinds.tensors import int_param, tensor_meta, text_rows
from r1.input_kinds.text import check_text_length


class PairRequest(ImageRequest):
    """JSON body of an image+text model (mm): the image and the question asked about it (as `text`, or
    `question`: one of them)."""

    text: Optional[str] = Field(None, min_length=1, description="The question about the image.")
    question: Optional[str] = Field(None, min_length=1, description="Alias of `text` (as `r1 predict --question`).")

    @model_validator(mode="after")
    def _one_question(self):
        if (self.text is None) == (self.question is None):
            raise ValueError("give the question as `text` (or its alias `question`), once")
        self.text = self.text if self.text is not None else self.question
        return self


class ImageTextKind(InputKind):
    name = "image+text"
    needs = ("predictor",)
    file_options = {"question": "the question asked about each image"}

    def openapi_content(self) -> dict:
        return {"multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                    "file": {"type": "string", "format": "binary", "description": "The image file."},
                    "text": {"type": "string", "description": "The question about the image (required: as "
                                                              "`text` or `question`)."},
                    "question": {"type": "string", "description": "Alias of `text`."},
                    "top_k": {"type": "integer", "minimum": 1, "maximum": 1000}}}},
                "application/json": {"schema": PairRequest.model_json_schema()}}

    async def read_request(self, request, ctx) -> ImageTask:
        cfg = ctx.cfg
        media = media_type(request)
        if media == "multipart/form-data":
            data, top_k, text = await read_multipart(request, cfg.top_k)
            if text is None:
                raise ApiError(422, "missing_field", "text: field required (multipart field `text`, or its alias "
                                                     "`question`, with the question)")
        elif is_json(media):
            body = await json_object(request, '{"image": "<base64>", "text": "a question"}')
            if "text" not in body and "question" not in body:
                raise ApiError(422, "missing_field", "text: field required (the question, as `text` or its alias "
                                                     "`question`)")
            check_text_length(body.get("text", body.get("question")), cfg.max_text_chars)
            req = validate(PairRequest, body)
            data, top_k, text = b64(req.image), req.top_k or cfg.top_k, req.text
        else:
            raise ApiError(415, "unsupported_media_type",
                           f"content type {media or '(none)'!r} not supported by this image+text model; send "
                           f"multipart/form-data with `file` and `text` fields, or application/json "
                           f"{{\"image\": base64, \"text\": ...}}")
        if not text.strip():
            raise ApiError(422, "invalid_request", "text: must not be empty")
        check_text_length(text, cfg.max_text_chars)
        return dataclasses.replace(await decode_task(data, top_k, ctx), text=text)

    # Open Inference Protocol: the encoded image file (PNG, JPEG, ...; base64 text where the request is
    # JSON, which cannot hold raw bytes) and the question, one of each per row
    v2_parameters = {"top_k": "answers listed per question; default: the server's top_k"}

    def v2_inputs(self) -> list[dict]:
        return [tensor_meta("image", "BYTES", [-1]), tensor_meta("question", "BYTES", [-1])]

    async def read_v2(self, tensors: dict, params: dict, ctx) -> list:
        top_k = int_param(params, "top_k", ctx.cfg.top_k, 1, 1000)
        questions = text_rows(tensors, "question", ctx.cfg.max_text_chars)
        images = tensors["image"]
        if images.ndim != 1 or len(images) != len(questions):
            raise ApiError(400, "bad_shape", f"input image: shape {list(images.shape)}; expected [N] (or [N, 1]), "
                                             f"one image per question ({len(questions)})")
        tasks = []
        for data, text in zip(images, questions):
            if not text.strip():
                raise ApiError(422, "invalid_request", "input question: must not be empty")
            tasks.append(dataclasses.replace(await decode_task(_image_bytes(data), top_k, ctx), text=text))
        return tasks

    def sample_request(self) -> tuple[bytes, str]:
        body = {"image": base64.b64encode(sample_png()).decode(), "text": "what shape is the red object?"}
        return json.dumps(body).encode(), "application/json"

    def run_batch(self, predictor, tasks: list, cfg, cancelled=(), emit=None) -> list[tuple]:
        """(image, question) tasks -> records (answer, probability, top_k, unknown_words), one batch; an
        undecodable image or a question without a known word (`text_contract`) fails alone."""
        results: list = [None] * len(tasks)
        pairs, where, unknown = [], [], {}
        for i, t in enumerate(tasks):
            if not isinstance(t, ImageTask) or t.text is None:
                results[i] = error(422, "missing_field", "text: field required (the question about the image)")
                continue
            unknown[i] = text_contract(predictor, t.text)
            if isinstance(unknown[i], tuple):
                results[i] = unknown[i]
                continue
            try:
                pairs.append((task_image(t, cfg.max_pixels), t.text))
                where.append(i)
            except ApiError as err:
                results[i] = error(err.status, err.code, err.detail)
        if not pairs:
            return results
        try:
            records = [r.to_json() for r in predictor.predict(pairs, top_k=max(tasks[i].top_k for i in where))]
        except Exception:  # one question the tokenizer cannot read must not fail the others
            records = [_one(predictor, pair, tasks[i].top_k) for pair, i in zip(pairs, where)]
        for i, rec in zip(where, records):
            if isinstance(rec, tuple):
                results[i] = rec
                continue
            rec["top_k"] = rec["top_k"][:tasks[i].top_k]
            results[i] = checked({**rec, "unknown_words": unknown[i]})
        return results

    def check_options(self, model: str, options: dict) -> None:
        super().check_options(model, options)
        if not options.get("question"):
            raise ConfigError(f"{model}: this model answers a question about each image; give --question TEXT")

    def read_files(self, model: str, paths: list[Path], options: dict) -> list:
        return [(image, options["question"]) for image in ImageKind().read_files(model, paths, options)]

    def file_record(self, path: Path, record: dict, options: dict) -> dict:
        return {"file": str(path), "question": options["question"], **record}


def _one(predictor, pair: tuple, top_k: int):
    try:
        return predictor.predict([pair], top_k=top_k)[0].to_json()
    except DataError as err:  # nothing of the question encodes (the contract named its words already)
        return error(422, "unknown_words", str(err))
    except Exception as err:
        return failed(err)


def _image_bytes(item) -> bytes:
    """A BYTES element holding an image file, or its base64 text (JSON requests)."""
    data = item if isinstance(item, bytes) else str(item).encode()
    if not data:
        raise ApiError(400, "empty_image", "input image: empty")
    try:
        return base64.b64decode(data, validate=True) or data
    except (binascii.Error, ValueError):  # not base64: the file's own bytes (binary tensor data)
        return data
