"""The cls family's prediction record (served by /v1/predict, printed by `r1 predict`)."""
from __future__ import annotations

from pydantic import BaseModel, Field


class ClassScore(BaseModel):
    label: str = Field(..., description="Class name.")
    class_id: int = Field(..., description="0-based class index.")
    score: float = Field(..., description="Softmax probability.")


class Classification(ClassScore):
    top: list[ClassScore] = Field(..., description="The top-k classes, best first.")
