"""Request and response bodies of the R1 server (they appear in /docs and /openapi.json)."""
from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field


class ImageRequest(BaseModel):
    """JSON alternative to a multipart upload (images: classification, detection)."""

    model_config = ConfigDict(extra="forbid")
    image: str = Field(..., description="The image file (PNG, JPEG, ...) encoded as base64 (standard alphabet).")
    top_k: Optional[int] = Field(None, ge=1, le=1000, description="Classes listed per image (classification).")


class TextRequest(BaseModel):
    """Reserved for language models; image models answer 422."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(..., description="Prompt text.")


class ClassScore(BaseModel):
    label: str = Field(..., description="Class name.")
    class_id: int = Field(..., description="0-based class index.")
    score: float = Field(..., description="Softmax probability.")


class Classification(ClassScore):
    top: list[ClassScore] = Field(..., description="The top-k classes, best first.")


class Detection(BaseModel):
    box: list[float] = Field(..., description="x1, y1, x2, y2 in input pixels.")
    label: str
    class_id: int
    score: float


class PredictResponse(BaseModel):
    model: str = Field(..., description="What the server loaded (path).")
    family: str = Field(..., description="cls | det | lm | mm")
    runtime: str = Field(..., description="torch | onnx | tensorrt")
    latency_ms: float = Field(..., description="Server-side time from request to response, ms.")
    result: Classification | dict[str, Any] = Field(
        ..., description="The family's record: for `cls` a `Classification`; other families their own record.")


class ErrorResponse(BaseModel):
    error: str = Field(..., description="Machine-readable reason, e.g. `unsupported_media_type`.")
    detail: str = Field(..., description="What was wrong, for a human.")
    status: int = Field(..., description="The HTTP status code, repeated.")


class Health(BaseModel):
    status: str = "ok"


class Ready(BaseModel):
    ready: bool
    model: Optional[str] = None
    runtime: Optional[str] = None
    family: Optional[str] = None
    load_seconds: Optional[float] = None
    detail: Optional[str] = None


ERRORS = {code: {"model": ErrorResponse, "description": d} for code, d in {
    400: "Malformed JSON, bad base64, or an image that cannot be decoded.",
    413: "Body over the size limit, or an image over the pixel limit.",
    415: "Content type other than multipart/form-data, application/json, image/*.",
    422: "A required field is missing or has the wrong type.",
    503: "Not ready yet, queue full (see Retry-After), or shutting down.",
    504: "The request waited longer than the server's timeout.",
}.items()}
