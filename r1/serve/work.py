"""One batch of requests -> one result per request, wherever the model lives (the server's
inference thread, or the inference process of `r1.serve.worker`).

Tasks and results are plain picklable values:

    ImageTask(top_k, data=<encoded bytes>)          decoded by the worker
    ImageTask(top_k, pixels=<uint8 (H, W, 3) RGB>)  decoded by the server (`prepare_image`)
    TextTask(text="...", max_new_tokens=64, ...)
    -> ("ok", record) | ("error", status, code, detail)

Where an image is decoded balances CPU between the two processes: the worker runs the model, the
event loop parses HTTP. Small uploads (the common case) are decoded by the server, which then
sends the pixels (cheaper to move than to decode); the worker preprocesses all images of a
batch and runs them together. Preprocessing stays in the worker: done per image in the server, it
cost the server more CPU than it saved the worker (measured with the classification tiny model).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageTask:
    top_k: int
    data: Optional[bytes] = None  # the encoded image (PNG, JPEG, ...) as uploaded, or
    pixels: object = None         # the decoded image, uint8 numpy (H, W, 3) RGB


@dataclass(frozen=True)
class TextTask:
    text: str
    max_new_tokens: int = 64
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 1.0
    seed: Optional[int] = None
    chat: Optional[bool] = None


def prepare_image(data: bytes, top_k: int, max_pixels: int, max_local_pixels: int) -> ImageTask:
    """Decode here (raising the decoder's 400 / 413 ApiError) and hand on the pixels of images of
    at most `max_local_pixels`; larger ones travel as the compressed bytes."""
    import numpy as np

    from r1.serve.inputs import decode_image

    image = decode_image(data, max_pixels)
    if image.width * image.height > max_local_pixels:
        return ImageTask(top_k, data=data)
    return ImageTask(top_k, pixels=np.asarray(image))


def _error(status: int, code: str, detail: str) -> tuple:
    return ("error", status, code, detail)


def run_tasks(predictor, tasks: list, max_pixels: int) -> list[tuple]:
    """Run a batch: images are decoded one by one (a bad one fails alone), preprocessed and run
    as one batch; prompts are generated one after another."""
    if predictor.inputs == "text":
        return [_generate(predictor, t) for t in tasks]
    return _images(predictor, tasks, max_pixels)


def _generate(predictor, task) -> tuple:
    from r1.errors import DataError

    if not isinstance(task, TextTask):
        return _error(422, "image_not_supported", "this model takes text; send {\"text\": ...}")
    try:
        return ("ok", predictor.generate(task.text, task.max_new_tokens, task.temperature, task.top_k,
                                         task.top_p, task.seed, task.chat))
    except DataError as err:
        return _error(422, "no_known_tokens", str(err))


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
    from PIL import Image

    from r1.serve.errors import ApiError
    from r1.serve.inputs import decode_image

    results: list = [None] * len(tasks)
    images, where = [], []
    for i, t in enumerate(tasks):
        if not isinstance(t, ImageTask):
            results[i] = _error(422, "text_not_supported", "this model takes images")
            continue
        try:
            images.append(Image.fromarray(t.pixels) if t.pixels is not None else decode_image(t.data, max_pixels))
            where.append(i)
        except ApiError as err:
            results[i] = _error(err.status, err.code, err.detail)
    if not images:
        return results
    try:
        batch = predictor.preprocess(images)
    except Exception:  # one odd image must not fail the others: find it
        import numpy as np

        parts = _preprocess_each(predictor, images)
        for j, part in enumerate(parts):
            if part is None:
                results[where[j]] = _error(400, "bad_image", "cannot preprocess this image")
        keep = [j for j, part in enumerate(parts) if part is not None]
        if not keep:
            return results
        images, where = [images[j] for j in keep], [where[j] for j in keep]
        batch = np.concatenate([parts[j] for j in keep])
    k = max(tasks[i].top_k for i in where)
    records = predictor.postprocess(predictor.forward(batch), top_k=k, images=images)
    for i, rec in zip(where, records):
        if "top" in rec:
            rec["top"] = rec["top"][:tasks[i].top_k]
        results[i] = ("ok", rec)
    return results
