"""Prediction on input files (what `r1 predict` runs) and the image helpers families share.

`predict_files` loads any artifact (run dir, .safetensors, .onnx, TensorRT engine) with the one
loader, `r1.load`, and yields one JSON record per input file; visual results are drawn into
`out_dir`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from r1.errors import ConfigError, DataError


def open_image(path) -> Image.Image:
    """An image file (or file object) -> RGB image; DataError naming the file when it cannot be read."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except Image.DecompressionBombError as err:
        raise DataError(f"{path}: refused: {err}") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise DataError(f"{path}: not a readable image ({err})") from None


def resize_normalize(images: list[Image.Image], meta: dict) -> torch.Tensor:
    """Resize to meta['preprocess']['size'] (H, W) and normalise with its mean/std -> (B, 3, H, W)."""
    pre = meta["preprocess"]
    h, w = pre["size"]
    mean = np.asarray(pre["mean"], np.float32)[:, None, None]
    std = np.asarray(pre["std"], np.float32)[:, None, None]
    arrays = [(np.asarray(im.resize((w, h), Image.BILINEAR), np.float32).transpose(2, 0, 1) / 255.0 - mean) / std
              for im in images]
    return torch.from_numpy(np.stack(arrays))


def image_batch(meta: dict, n: int, generator: torch.Generator) -> torch.Tensor:
    """n random normalised-looking images (n, 3, H, W) at the model's preprocessing size."""
    if "preprocess" not in meta or "size" not in meta["preprocess"]:
        raise ConfigError("model meta has no preprocess.size; cannot make example images")
    h, w = meta["preprocess"]["size"]
    return torch.randn(n, 3, h, w, generator=generator)


def predict_files(model_path, paths: list[Path], out_dir: Path | None = None, top_k: int = 3,
                  batch_size: int = 16, runtime: str | None = None, threads: int = 1,
                  draw_options: dict | None = None, question: str | None = None, **options):
    """Yield one record per file: {"file": ..., <family fields>}; with `out_dir`, visual results are
    drawn there as <file stem>.png (`draw_options` go to the family's drawer, `options` to its
    post-processing). Image+text models answer `question` about each file."""
    from r1.export.runtime import Predictor

    predictor = Predictor.load(model_path, runtime=runtime, threads=threads)
    if predictor.inputs == "image+text":
        if not question:
            raise ConfigError(f"{model_path}: this model answers a question about each image; give --question TEXT")
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            pairs = [(open_image(p), question) for p in chunk]
            for path, result in zip(chunk, predictor.predict(pairs, top_k=top_k, batch_size=batch_size)):
                yield {"file": str(path), "question": question, **result.to_json()}
        return
    if question is not None:
        raise ConfigError(f"--question: {model_path} takes {predictor.inputs} inputs, not a question")
    if predictor.inputs != "image":
        hint = {"text": "; use `r1 generate`"}.get(predictor.inputs, "; use r1.load(...).predict in Python")
        raise ConfigError(f"{model_path}: this model takes {predictor.inputs} inputs, not image files alone{hint}")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        for path, result in zip(chunk, predictor.predict([open_image(p) for p in chunk], top_k=top_k,
                                                         batch_size=batch_size, **options)):
            rec = result.to_json()
            if out_dir is not None and predictor.io.draw is not None:
                target = result.save(out_dir / f"{Path(path).stem}.png", **(draw_options or {}))
                rec = {**rec, "drawn": str(target)}
            yield {"file": str(path), **rec}


def write_results(model_path, records: list[dict], fmt: str, path: Path) -> Path:
    """Records of `predict_files` in another format the model's family writes (e.g. "coco")."""
    from r1.family import get_family

    info = _info(model_path)
    return get_family(info["family"]).writer(fmt)(info, records, path)


def _info(model_path) -> dict:
    """model.json's content for a run dir / .safetensors; the same fields from an .onnx's metadata."""
    import json

    if Path(model_path).suffix == ".onnx":
        from r1.export.onnx import read_onnx_meta
        props = read_onnx_meta(model_path)
        return {"family": props["r1.family"], "meta": json.loads(props["r1.meta"])}
    from r1.artifacts import read_info
    return read_info(model_path)
