"""The mm family's answer record (served by /v1/predict, printed by `r1 predict`)."""
from __future__ import annotations

from pydantic import BaseModel, Field


class AnswerScore(BaseModel):
    answer: str = Field(..., description="An answer from the model's answer vocabulary.")
    probability: float = Field(..., description="Its probability in [0, 1].")


class Answer(AnswerScore):
    """Question-answering record (mm): the best answer, its probability and the top-k answers."""

    top_k: list[AnswerScore] = Field(..., description="The top-k answers, best first.")
    unknown_words: list[str] = Field([], description="The question's words the model never saw in training "
                                                     "(a question with no known word is refused: 422 unknown_words).")
