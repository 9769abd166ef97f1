"""The `InputKind` interface and the result tuples every kind's batch returns.

A task's result is `("ok", record)` or `("error", status, code, detail)`: one request's failure
(a bad image, a generation that raises, a non-finite output) is its own; its batch-mates still get
their records.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable, Container

from r1.errors import ConfigError
from r1.input_kinds.http import ApiError

log = logging.getLogger(__name__)

NON_FINITE = "the model's output is not finite (NaN/inf): its weights or preprocessing (std 0?) are broken"


def error(status: int, code: str, detail: str) -> tuple:
    return ("error", status, code, detail)


def is_finite(value) -> bool:
    """No NaN or infinity anywhere in a JSON-like record (dicts, lists, numbers)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(is_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(is_finite(v) for v in value)
    return True


def checked(record: dict) -> tuple:
    """("ok", record), or the non-finite error when a number in it is NaN or infinite."""
    return ("ok", record) if is_finite(record) else error(500, "non_finite_output", NON_FINITE)


def failed(err: Exception) -> tuple:
    log.error("inference failed on one input: %r", err)
    return error(500, "inference_failed", f"{type(err).__name__}: {err}"[:300])


def text_contract(predictor, text: str):
    """The one text contract of every family that reads text (prompts, questions): a text none of whose
    words the model knows -> the 422 `unknown_words` error tuple naming them; else the list of its unknown
    words (possibly empty), which the answer carries as `unknown_words`. A predictor declares what it
    knows with `unknown_words(text) -> (words, unknown)`; one without it knows every word."""
    check = getattr(predictor, "unknown_words", None)
    if check is None:
        return []
    words, unknown = check(text)
    if words and set(unknown) >= set(words):
        shown = ", ".join(repr(w) for w in unknown[:8]) + (", ..." if len(unknown) > 8 else "")
        return error(422, "unknown_words", f"text: no word the model knows ({shown}); it knows the words of "
                                           "its training texts")
    return unknown


class InputKind:
    """What a model takes. Subclasses set `name` and override what differs from these defaults."""

    name: str = ""
    # the model generates text: requests may run long (stopped when the client goes away), and the
    # OpenAI-style /v1/completions route serves it
    generates_text: bool = False
    # spec fields a family of this kind must set (e.g. "io" for image families)
    needs: tuple[str, ...] = ()
    # `r1 predict` options this kind reads (name -> help); other options are refused
    file_options: dict[str, str] = {}

    # ---------------------------------------------------------------- HTTP (the server's event loop)
    def openapi_content(self) -> dict:
        """OpenAPI `requestBody.content` entries of /v1/predict for this kind (media type -> schema)."""
        return {}

    async def read_request(self, request, ctx) -> Any:
        """A request -> one picklable task (ApiError 4xx when it is malformed). `ctx` is the server
        state: `ctx.cfg` (ServeConfig limits), `ctx.next_id()` (a task id), `ctx.decode_pool`."""
        raise NotImplementedError

    def sample_request(self) -> tuple[bytes, str]:
        """(body, content type) of a typical /v1/predict request, for load tests."""
        raise NotImplementedError

    # ---------------------------------------------------------------- Open Inference Protocol (r1/serve/v2.py)
    # record field -> output tensor name, where a kind names a tensor otherwise (r1.input_kinds.tensors)
    v2_renames: dict[str, str] = {}
    # request parameters this kind reads (name -> help); the v2 routes refuse others
    v2_parameters: dict[str, str] = {}

    def v2_inputs(self) -> list[dict]:
        """The model metadata's `inputs` ({"name", "datatype", "shape"}, batch dimension -1 first).
        Empty: this kind takes no v2 tensors (its infer requests get a 400)."""
        return []

    async def read_v2(self, tensors: dict, params: dict, ctx) -> list:
        """v2 input tensors (numpy, batch first; names, datatypes and ranks already checked against
        `v2_inputs`, BYTES as object arrays of bytes) and the request's parameters -> one task per
        row (ApiError 4xx when a value cannot be read). `ctx` as in `read_request`."""
        raise ApiError(400, "v2_not_supported", f"models that take {self.name} inputs take no v2 tensors; "
                                                f"use POST /v1/predict")

    def v2_outputs(self, schema, sample: dict | None = None) -> list[dict]:
        """The model metadata's `outputs` for records of `schema` (the family's record model)."""
        from r1.input_kinds.tensors import outputs_metadata

        return outputs_metadata(schema, self.v2_renames, sample)

    def v2_tensors(self, records: list[dict], schema) -> dict:
        """Records, one per task of a request -> {output name: numpy array, batch first}."""
        from r1.input_kinds.tensors import records_to_tensors

        return records_to_tensors(records, schema, self.v2_renames)

    # ---------------------------------------------------------------- batches (inference thread / process)
    def run_batch(self, predictor, tasks: list, cfg, cancelled: Container[int] = (),
                  emit: Callable[[int, dict], None] | None = None) -> list[tuple]:
        """One result tuple per task. `cancelled`: ids of tasks whose caller gave up; `emit(id,
        message)` streams pieces of a task that asked for it."""
        raise NotImplementedError

    def cost(self, task) -> int:
        """What `task` holds decoded in the worker, in pixels (or tensor elements): the server's pixel
        budget (`serve.max_pixels_in_flight`) bounds the sum in flight per worker. Default: the task's
        `cost` attribute, else 0 (text)."""
        return int(getattr(task, "cost", 0) or 0)

    def check_finite(self, predictor, cfg) -> None:
        """After warm-up, before the server turns ready: NonFiniteOutput when a plain input gives
        non-finite outputs. Default: nothing to check."""

    # ---------------------------------------------------------------- files (r1 predict)
    def check_options(self, model: str, options: dict) -> None:
        """ConfigError for an option this kind does not read (or a missing one it needs)."""
        for name, value in options.items():
            if value is not None and name not in self.file_options:
                raise ConfigError(f"--{name.replace('_', '-')}: {model} takes {self.name} inputs, not a {name}")

    def read_files(self, model: str, paths: list[Path], options: dict) -> list:
        """Input files -> the inputs `predictor.predict` takes (DataError naming a bad file)."""
        raise ConfigError(f"{model}: this model takes {self.name} inputs, not files; use r1.load(...).predict "
                          f"in Python")

    def file_record(self, path: Path, record: dict, options: dict) -> dict:
        """The JSON line `r1 predict` prints for one file."""
        return {"file": str(path), **record}
