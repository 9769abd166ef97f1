"""The det family's prediction record (served by /v1/predict, printed by `r1 predict`)."""
from __future__ import annotations

from pydantic import BaseModel, Field


class Detections(BaseModel):
    """Detection record: parallel lists, one entry per detected object, best score first."""

    boxes: list[list[float]] = Field(..., description="[x1, y1, x2, y2] in the uploaded image's pixels.")
    scores: list[float] = Field(..., description="Class scores in [0, 1].")
    class_ids: list[int] = Field(..., description="0-based class indices.")
    labels: list[str] = Field(..., description="Class names.")
