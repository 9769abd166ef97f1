"""`Result`: one prediction, the family's JSON-safe record with drawing and saving."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from PIL import Image

from r1.errors import ConfigError


class Result(dict):
    """One prediction: the family's JSON-safe record (a dict), plus `to_json()` and, for families
    that draw, `save(path)` / `plot()` of the record on its input image."""

    def __init__(self, record: dict, image=None, draw: Callable | None = None, meta: dict | None = None):
        super().__init__(record)
        self._image, self._draw, self._meta = image, draw, meta

    def to_json(self) -> dict:
        return dict(self)

    def save(self, path: str | Path, **options) -> Path:
        """Draw this result on its input image and save it (PNG); options go to the family's drawer
        (e.g. `score_thresh` for detections)."""
        if self._draw is None or self._image is None:
            raise ConfigError("save: this result has no picture (its family does not draw, or the input was not an image)")
        path = Path(path)
        self._draw(self._image, dict(self), self._meta, path, **options)
        return path

    def plot(self, **options):
        """The drawn result as a PIL image (e.g. to show in a notebook)."""
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            with Image.open(self.save(Path(tmp) / "result.png", **options)) as im:
                return im.copy()
