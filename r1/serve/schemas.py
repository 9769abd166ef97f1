"""Request and response bodies of the R1 server (they appear in /docs and /openapi.json)."""
from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictInt


class ImageRequest(BaseModel):
    """JSON alternative to a multipart upload (images: classification, detection)."""

    model_config = ConfigDict(extra="forbid")
    image: str = Field(..., description="The image file (PNG, JPEG, ...) encoded as base64 (standard alphabet).")
    top_k: Optional[StrictInt] = Field(None, ge=1, le=1000,
                                       description="Classes listed per image (classification).")


class PairRequest(ImageRequest):
    """JSON body of an image+text model (mm): the image and the question asked about it."""

    text: str = Field(..., min_length=1, description="The question about the image.")


# Hard limits of the text schema; a server may set lower ones (`r1 serve --max-new-tokens`).
MAX_TEXT_CHARS, MAX_NEW_TOKENS = 100_000, 4096


class TextRequest(BaseModel):
    """Language models: a prompt and sampling settings. Image models answer 422."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    text: str = Field(..., min_length=1, max_length=MAX_TEXT_CHARS,
                      description="Prompt text (the server's --max-text-chars may be lower).")
    max_new_tokens: int = Field(64, ge=1, le=MAX_NEW_TOKENS,
                                description="Tokens to generate (the server's --max-new-tokens may be lower).")
    temperature: float = Field(0.8, ge=0.0, le=10.0, description="Sampling temperature; 0 is greedy.")
    top_k: int = Field(0, ge=0, le=1_000_000, description="Sample among the k most likely tokens; 0: all.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling: the smallest set with this mass.")
    seed: Optional[int] = Field(None, ge=0, le=2 ** 63 - 1,
                                description="Sampling seed (same seed, prompt and settings: same text). "
                                            "Omitted: a random one, returned in the response.")
    chat: Optional[bool] = Field(None, description="Wrap the prompt in the model's chat template "
                                                   "(default: when the model has one).")


class ClassScore(BaseModel):
    label: str = Field(..., description="Class name.")
    class_id: int = Field(..., description="0-based class index.")
    score: float = Field(..., description="Softmax probability.")


class Classification(ClassScore):
    top: list[ClassScore] = Field(..., description="The top-k classes, best first.")


class Detections(BaseModel):
    """Detection record: parallel lists, one entry per detected object, best score first."""

    boxes: list[list[float]] = Field(..., description="[x1, y1, x2, y2] in the uploaded image's pixels.")
    scores: list[float] = Field(..., description="Class scores in [0, 1].")
    class_ids: list[int] = Field(..., description="0-based class indices.")
    labels: list[str] = Field(..., description="Class names.")


class Generation(BaseModel):
    """Language-model record."""

    text: str = Field(..., description="The generated continuation (the prompt is not repeated).")
    prompt_tokens: int = Field(..., description="Tokens in the prompt.")
    context_tokens: int = Field(..., description="Prompt tokens the model saw (at most its context length).")
    generated_tokens: int = Field(..., description="Tokens generated.")
    finish_reason: Literal["length", "eos"] = Field(..., description="`length`: max_new_tokens reached; "
                                                                       "`eos`: the model ended the text.")
    seed: int = Field(..., description="The sampling seed used.")


class AnswerScore(BaseModel):
    answer: str = Field(..., description="An answer from the model's answer vocabulary.")
    probability: float = Field(..., description="Its probability in [0, 1].")


class Answer(AnswerScore):
    """Question-answering record (mm): the best answer, its probability and the top-k answers."""

    top_k: list[AnswerScore] = Field(..., description="The top-k answers, best first.")


class PredictResponse(BaseModel):
    model: str = Field(..., description="The served model's name (its run directory's or file's name).")
    variant: str = Field(..., description="The variant that answered (also the `X-R1-Variant` header); a "
                                          "single-model server's one variant is named after its run.")
    family: str = Field(..., description="cls | det | lm | mm")
    runtime: str = Field(..., description="torch | onnx | tensorrt")
    latency_ms: float = Field(..., description="Server-side time from request to response, ms.")
    result: Union[Classification, Detections, Generation, Answer] = Field(
        ..., description="The family's record: `Classification` (cls), `Detections` (det), `Generation` (lm), "
                         "`Answer` (mm).")


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
    load_seconds: Optional[float] = None
    detail: Optional[str] = None
    variants: Optional[dict[str, bool]] = None


ERRORS = {code: {"model": ErrorResponse, "description": d} for code, d in {
    400: "Malformed JSON, bad base64, or an image that cannot be decoded.",
    413: "Body over the size limit, or an image over the pixel limit.",
    415: "Content type other than multipart/form-data, application/json, image/* (language models: JSON only).",
    422: "A required field is missing, has the wrong type or is out of range; text sent to an image model "
         "or an image to a language model.",
    503: "Not ready yet, queue full (see Retry-After), or shutting down.",
    504: "The request waited longer than the server's timeout.",
}.items()}
