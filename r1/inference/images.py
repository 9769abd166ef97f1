"""Image helpers every image family and runtime shares: reading an image from a file, bytes or an
array, resizing and normalising a batch, and random example batches."""
from __future__ import annotations

import io
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


def as_image(item) -> Image.Image:
    """A PIL image, a path to an image file, encoded image bytes, or a uint8 (H, W, 3) array -> RGB image."""
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, (str, Path)):
        return open_image(Path(item))
    if isinstance(item, (bytes, bytearray)):
        return open_image(io.BytesIO(item))
    if isinstance(item, np.ndarray) and item.ndim == 3 and item.dtype == np.uint8:
        return Image.fromarray(item).convert("RGB")
    raise ConfigError(f"predict: cannot read an image from {type(item).__name__}; give a PIL image, a file path, "
                      f"encoded bytes or a uint8 (H, W, 3) array")
