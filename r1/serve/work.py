"""One batch of requests -> one result per request, wherever the model lives (the server's
inference thread, or the inference process of `r1.serve.worker`).

Tasks and results are plain picklable values:

    ImageTask(top_k, data=<encoded bytes>)          decoded by the worker
    ImageTask(top_k, pixels=<uint8 (H, W, 3) RGB>)  decoded by the server (`prepare_image`)
    ImageTask(top_k, data=..., text="a question")   image+text models (mm): the pair
    TextTask(text="...", max_new_tokens=64, ...)
    -> ("ok", record) | ("error", status, code, detail)

A failure is its own request's: a bad image, a generation that raises, or a non-finite output gets
its error tuple while its batch-mates get their records. A task whose id is in `cancelled` (its
caller timed out or went away) stops at the next token (`r1.cancel`).

Where an image is decoded balances CPU between the two processes: the worker runs the model, the
event loop parses HTTP. Small uploads of few pixels (the common case; both read from the header
before any decoding) are decoded by the server's decode threads (never the event loop), which then
sends the pixels (cheaper to move than to decode); the worker preprocesses all images of a
batch and runs them together. Preprocessing stays in the worker: done per image in the server, it
cost the server more CPU than it saved the worker (measured with the classification tiny model).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Container, Optional

from r1 import cancel
from r1.errors import ConfigError, DataError, NonFiniteOutput

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageTask:
    top_k: int
    data: Optional[bytes] = None  # the encoded image (PNG, JPEG, ...) as uploaded, or
    pixels: object = None         # the decoded image, uint8 numpy (H, W, 3) RGB
    id: int = 0
    text: Optional[str] = None    # the question asked about the image (image+text models)


@dataclass(frozen=True)
class TextTask:
    text: str
    max_new_tokens: int = 64
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 1.0
    seed: Optional[int] = None
    chat: Optional[bool] = None
    id: int = 0
    stream: bool = False  # send {"prompt_tokens": n}, then {"text": piece}s, through `emit` as they come


def prepare_image(data: bytes, top_k: int, max_pixels: int, max_local_pixels: int) -> ImageTask:
    """Check the header (raising the decoder's 400 / 413 ApiError), then decode here and hand on
    the pixels of images of at most `max_local_pixels`; larger ones travel undecoded, as the
    compressed bytes (the pixel budget is read from the header: a small file that decodes to a
    huge image costs the server nothing). The server calls this in its decode threads."""
    import numpy as np

    from r1.serve.inputs import decode_image

    image = decode_image(data, max_pixels, decode_limit=max_local_pixels)
    return ImageTask(top_k, data=data) if image is None else ImageTask(top_k, pixels=np.asarray(image))


def _error(status: int, code: str, detail: str) -> tuple:
    return ("error", status, code, detail)


NON_FINITE = "the model's output is not finite (NaN/inf): its weights or preprocessing (std 0?) are broken"


def is_finite(value) -> bool:
    """No NaN or infinity anywhere in a JSON-like record (dicts, lists, numbers)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(is_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(is_finite(v) for v in value)
    return True


def run_tasks(predictor, tasks: list, max_pixels: int, cancelled: Container[int] = (),
              emit: Callable[[int, dict], None] | None = None) -> list[tuple]:
    """Run a batch: images are decoded one by one (a bad one fails alone), preprocessed and run
    as one batch; prompts are generated one after another (streamed ones piece by piece to `emit`)."""
    if predictor.inputs == "text":
        return [_generate(predictor, t, cancelled, emit) for t in tasks]
    if predictor.inputs == "image+text":
        return _pairs(predictor, tasks, max_pixels)
    return _images(predictor, tasks, max_pixels)


def _decode(task: "ImageTask", max_pixels: int):
    from PIL import Image

    from r1.serve.inputs import decode_image

    return Image.fromarray(task.pixels) if task.pixels is not None else decode_image(task.data, max_pixels)


def _pairs(predictor, tasks: list, max_pixels: int) -> list[tuple]:
    """(image, question) tasks -> records (answer, probability, top_k), one batch; an undecodable
    image or a question without a known token fails alone."""
    from r1.serve.errors import ApiError

    results: list = [None] * len(tasks)
    pairs, where = [], []
    for i, t in enumerate(tasks):
        if not isinstance(t, ImageTask) or t.text is None:
            results[i] = _error(422, "missing_field", "text: field required (the question about the image)")
            continue
        try:
            pairs.append((_decode(t, max_pixels), t.text))
            where.append(i)
        except ApiError as err:
            results[i] = _error(err.status, err.code, err.detail)
    if not pairs:
        return results
    try:
        records = [r.to_json() for r in predictor.predict(pairs, top_k=max(tasks[i].top_k for i in where))]
    except Exception:  # one question the tokenizer cannot read must not fail the others
        records = [_pair_one(predictor, pair, tasks[i].top_k) for pair, i in zip(pairs, where)]
    for i, rec in zip(where, records):
        if isinstance(rec, tuple):
            results[i] = rec
            continue
        rec["top_k"] = rec["top_k"][:tasks[i].top_k]
        results[i] = ("ok", rec) if is_finite(rec) else _error(500, "non_finite_output", NON_FINITE)
    return results


def _pair_one(predictor, pair: tuple, top_k: int):
    try:
        return predictor.predict([pair], top_k=top_k)[0].to_json()
    except DataError as err:
        return _error(422, "bad_text", str(err))
    except Exception as err:
        return _failed(err)


def _stream(predictor, task: TextTask, emit: Callable[[int, dict], None]) -> dict:
    """Generate with `predictor.stream`, sending the prompt's token count, then each piece."""
    encode = getattr(predictor, "encode", None)
    if encode is not None:
        emit(task.id, {"prompt_tokens": len(encode(task.text, task.chat))})
    for record in predictor.stream(task.text, task.max_new_tokens, task.temperature, task.top_k, task.top_p,
                                   task.seed, task.chat):
        if record.get("done"):
            return {k: v for k, v in record.items() if k != "done"}
        emit(task.id, {"text": record["text"]})
        cancel.check()
    raise RuntimeError("the stream ended without its final record")


def _generate(predictor, task, cancelled: Container[int], emit=None) -> tuple:
    if not isinstance(task, TextTask):
        return _error(422, "image_not_supported", "this model takes text; send {\"text\": ...}")
    try:
        with cancel.scope(lambda: task.id in cancelled):
            cancel.check()
            if task.stream and emit is not None:
                record = _stream(predictor, task, emit)
            else:
                record = predictor.generate(task.text, task.max_new_tokens, task.temperature, task.top_k,
                                            task.top_p, task.seed, task.chat)
    except cancel.Cancelled:
        return _error(504, "cancelled", "the request was given up (timeout or disconnect); generation stopped")
    except ConfigError as err:
        return _error(422, "invalid_request", str(err))
    except NonFiniteOutput as err:
        return _error(500, "non_finite_output", str(err))
    except DataError as err:
        return _error(422, "no_known_tokens", str(err))
    except Exception as err:  # this request's failure, not its batch-mates'
        log.exception("generation failed")
        return _error(500, "generation_failed", f"{type(err).__name__}: {err}"[:300])
    return ("ok", record) if is_finite(record) else _error(500, "non_finite_output", NON_FINITE)


def _preprocess_each(predictor, images: list) -> list:
    """Preprocess one by one: an image the family cannot preprocess fails alone (None)."""
    out = []
    for im in images:
        try:
            out.append(predictor.preprocess([im]))
        except Exception as err:
            log.warning("cannot preprocess an image: %r", err)
            out.append(None)
    return out


def _images(predictor, tasks: list, max_pixels: int) -> list[tuple]:
    from r1.serve.errors import ApiError

    results: list = [None] * len(tasks)
    images, where = [], []
    for i, t in enumerate(tasks):
        if not isinstance(t, ImageTask):
            results[i] = _error(422, "text_not_supported", "this model takes images")
            continue
        try:
            images.append(_decode(t, max_pixels))
            where.append(i)
        except ApiError as err:
            results[i] = _error(err.status, err.code, err.detail)
    if not images:
        return results
    try:
        batch = predictor.preprocess(images)
    except Exception:  # one odd image must not fail the others: find it
        parts = _preprocess_each(predictor, images)
        for j, part in enumerate(parts):
            if part is None:
                results[where[j]] = _error(400, "bad_image", "cannot preprocess this image")
        keep = [j for j, part in enumerate(parts) if part is not None]
        if not keep:
            return results
        images, where = [images[j] for j in keep], [where[j] for j in keep]
        # preprocessed together again: a dynamic-HW model pads a batch to its largest image
        batch = predictor.preprocess(images) if len(keep) > 1 else parts[keep[0]]
    try:
        records = _run(predictor, batch, images, max(tasks[i].top_k for i in where))
    except Exception as err:  # one input must not fail the others: run them one by one
        if len(where) > 1:
            log.warning("a batch of %d failed (%r); running its images one by one", len(where), err)
        records = [_run_one(predictor, batch[j:j + 1], images[j], tasks[i].top_k) if len(where) > 1
                   else _failed(err) for j, i in enumerate(where)]
    for i, rec in zip(where, records):
        if isinstance(rec, tuple):
            results[i] = rec
            continue
        if "top" in rec:
            rec["top"] = rec["top"][:tasks[i].top_k]
        results[i] = ("ok", rec) if is_finite(rec) else _error(500, "non_finite_output", NON_FINITE)
    return results


def _run(predictor, batch, images: list, top_k: int) -> list[dict]:
    return predictor.postprocess(predictor.forward(batch), top_k=top_k, images=images)


def _failed(err: Exception) -> tuple:
    log.error("inference failed on one image: %r", err)
    return _error(500, "inference_failed", f"{type(err).__name__}: {err}"[:300])


def _run_one(predictor, batch, image, top_k: int):
    try:
        return _run(predictor, batch, [image], top_k)[0]
    except Exception as err:
        return _failed(err)
