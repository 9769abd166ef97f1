"""Response bodies of the R1 server (they appear in /docs and /openapi.json). Request bodies belong
to the input kinds (r1/input_kinds/); each family's record is its spec's `schema`."""
from __future__ import annotations

from typing import Any, Optional, Union

from pydantic import BaseModel, Field, create_model


class PredictResponse(BaseModel):
    model: str = Field(..., description="The served model's name (its run directory's or file's name).")
    variant: str = Field(..., description="The variant that answered (also the `X-R1-Variant` header); a "
                                          "single-model server's one variant is named after its run.")
    family: str = Field(..., description="The model's family (`r1 models` lists them).")
    runtime: str = Field(..., description="torch | onnx | onnx-int8 | tensorrt")
    latency_ms: float = Field(..., description="Server-side time from request to response, ms.")
    result: Any = Field(..., description="The family's record.")


def predict_response(records: dict[str, type]) -> type:
    """PredictResponse whose `result` documents each family's record schema (family -> pydantic model)."""
    if not records:
        return PredictResponse
    names = ", ".join(f"`{m.__name__}` ({f})" for f, m in sorted(records.items()))
    result = Union[tuple(dict.fromkeys(records.values()))]  # noqa: UP007 (a runtime Union of classes)
    return create_model("PredictResponse", __base__=PredictResponse,
                        result=(result, Field(..., description=f"The family's record: {names}.")))


class ErrorResponse(BaseModel):
    error: str = Field(..., description="Machine-readable reason, e.g. `unsupported_media_type`.")
    detail: str = Field(..., description="What was wrong, for a human.")
    status: int = Field(..., description="The HTTP status code, repeated.")


class Health(BaseModel):
    status: str = Field("ok", description="`ok`, or `failing` (503) when the inference process died and "
                                          "could not be restarted.")
    detail: Optional[str] = None


class Ready(BaseModel):
    ready: bool
    model: Optional[str] = None
    runtime: Optional[str] = None
    family: Optional[str] = None
    inputs: Optional[str] = Field(None, description="The model's input kind (image, text, image+text, ...).")
    load_seconds: Optional[float] = None
    detail: Optional[str] = None
    variants: Optional[dict[str, bool]] = None


ERRORS = {code: {"model": ErrorResponse, "description": d} for code, d in {
    400: "Malformed JSON, bad base64, or an image that cannot be decoded.",
    413: "Body over the size limit, an image over the pixel limit, or text over the character limit "
         "(`text_too_long`, every route and family).",
    415: "A content type the model's input kind does not read (language models: JSON only).",
    422: "A required field is missing, has the wrong type or is out of range; text sent to an image model "
         "or an image to a language model; text without a word the model knows (`unknown_words`).",
    431: "Request headers over the server's limit (`serve.max_header_bytes`).",
    503: "Not ready yet, queue full (see Retry-After), or shutting down.",
    504: "The request waited longer than the server's timeout.",
}.items()}
