"""The lm family's generation record (served by /v1/predict)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Generation(BaseModel):
    """Language-model record."""

    text: str = Field(..., description="The generated continuation (the prompt is not repeated).")
    prompt_tokens: int = Field(..., description="Tokens in the prompt.")
    context_tokens: int = Field(..., description="Prompt tokens the model saw (at most its context length).")
    generated_tokens: int = Field(..., description="Tokens generated.")
    finish_reason: Literal["length", "eos"] = Field(..., description="`length`: max_new_tokens reached; "
                                                                       "`eos`: the model ended the text.")
    seed: int = Field(..., description="The sampling seed used.")
    unknown_words: list[str] = Field([], description="The prompt's words the model's vocabulary does not hold "
                                                     "(a prompt with no known word is refused: 422 unknown_words).")
