"""Typed sections of the commands: `serve`, `export`, `bench` here, `predict`, `eval`, `tune`,
`pipeline` and `data inspect|clean|convert` in `r1/command_sections.py`, and those a family adds with
its commands (`generate`). `command_sections()` lists them all.

Declared with the same `opt()` fields as the training config (`r1.config`), so they parse and
report errors the same way and `r1 config explain serve` documents them. One YAML file may hold
any of the sections (a command reads its own):

    serve:
      max_batch: 16
      max_wait_ms: 2

Each setting comes from, highest first: a command-line flag (`--max-batch 16`), a dotted override
argument naming the section (`serve.max_batch=16`), the file (`--config serve.yaml`), the default.
This module imports neither torch nor the server, so bad settings fail in well under a second.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from r1.command_sections import (
    RUNTIME_CHOICES,
    RUNTIMES,
    CleanConfig,
    ConvertConfig,
    EvalConfig,
    InspectConfig,
    PipelineConfig,
    PredictConfig,
    TuneConfig,
)

# The config package's parts, not `r1.config` itself: its `explain_sections` lists these sections.
from r1.config.base import opt
from r1.config.files import read_yaml
from r1.config.overrides import apply_overrides
from r1.config.parse import check_bounds, from_dict
from r1.errors import ConfigError

MAX_TEXT_CHARS, MAX_NEW_TOKENS = 100_000, 4096  # the text request schema's own limits (r1/input_kinds/text.py)
MAX_WEIGHT = 1e9  # traffic weights are relative: a larger one adds nothing but overflow (1e308 + 1e308 = inf)


def weight_value(value) -> float:
    """A traffic weight as a float (ValueError naming what is allowed): a number from 0 to MAX_WEIGHT."""
    try:
        w = float(value)
    except (TypeError, ValueError, OverflowError):
        w = float("nan")
    if isinstance(value, bool) or not 0 <= w <= MAX_WEIGHT:
        raise ValueError(f"a number >= 0 and at most {MAX_WEIGHT:g}, got {str(value)[:40]}")
    return w


@dataclass
class ServeConfig:
    model: str = opt("", "Run dir, model.safetensors or .onnx to serve (the MODEL argument sets it).")
    runtime: str = opt("torch", f"Inference runtime: {RUNTIME_CHOICES}.")
    host: str = opt("127.0.0.1", "Bind address.")
    port: int = opt(8000, "Port.", min=0, max=65535)
    max_batch: int = opt(32, "Run a batch at this many queued requests ...", min=1)
    max_wait_ms: float = opt(5.0, "... or this long after the oldest arrived.", min=0.0)
    max_queue: int = opt(256, "Requests being read, decoded or queued beyond this get 503 + Retry-After.", min=1)
    timeout_ms: float = opt(30000.0, "Per-request limit (queue + inference), then 504.", min=0.001)
    threads: int = opt(1, "Inference threads (torch intra-op / onnxruntime intra-op).", min=1)
    inference: str = opt("process", "process: the model in a worker process (the event loop keeps its own "
                         "GIL); thread: in the server process.", choices=("process", "thread"))
    access_log: bool = opt(False, "Log every request (uvicorn's access log; ~0.1 ms of event-loop CPU each).")
    prepare_max_bytes: int = opt(64 << 10, "Uploads of at most this many bytes are decoded by the server "
                                 "process (it unloads the worker). 0: the worker decodes everything.", min=0)
    prepare_max_pixels: int = opt(512 * 512, "... and their pixels sent on when at most this many.", min=0)
    inline_decode_pixels: int = opt(128 * 128, "Images of at most this many pixels (read from the header) "
                                    "are decoded on the event loop (~0.1 ms; a thread hop costs more); larger "
                                    "ones in decode threads or the worker. 0: never.", min=0)
    max_body_bytes: int = opt(8 << 20, "Request body limit in bytes (--max-body-mb sets it in MiB): 413.", min=1)
    max_pixels: int = opt(4096 * 4096, "Decoded image pixel limit (decompression bombs): 413.", min=1)
    max_pixels_in_flight: int = opt(2 * 4096 * 4096, "Decoded pixels a variant's worker holds at once, summed over "
                                    "the requests queued or running on it (read from each image's header; at "
                                    "least max_pixels): others wait their turn, then 503. Bounds memory under "
                                    "many large pictures.", min=1)
    max_header_bytes: int = opt(16 << 10, "Request head limit: all header names and values together, bytes "
                                "(else 431).", min=1024)
    top_k: int = opt(3, "Default classes per classification record.", min=1)
    max_new_tokens: int = opt(256, "Language models: the most tokens one request may ask for (else 422).",
                              min=1, max=MAX_NEW_TOKENS)
    max_text_chars: int = opt(8192, "Text (prompts, questions): the longest, characters (else 413 text_too_long).",
                              min=1, max=MAX_TEXT_CHARS)
    max_prompts: int = opt(16, "/v1/completions: the most prompts one request may list (else 400); each takes "
                           "a queue place.", min=1, max=1024)
    warmup_runs: int = opt(2, "Warm-up batches run before /readyz turns ready; then a grey image must give finite outputs "
                       "(else not ready, with the reason). 0: neither.", min=0)
    retry_after_s: int = opt(1, "Retry-After seconds sent with 503 answers.", min=0)
    header_timeout_s: float = opt(10.0, "A connection must send a complete request head within this many "
                                  "seconds of connecting (or of its first byte after a keep-alive pause), "
                                  "else 408 and closed (slow-header clients).", min=0.001)
    heartbeat_s: float = opt(1.0, "The inference process writes a heartbeat this often; the server checks "
                             "it as often.", min=0.01)
    stuck_after_s: float = opt(10.0, "An inference process without a heartbeat for this long (stopped, hung) "
                               "is killed and restarted.", min=0.05)
    restart_backoff_s: float = opt(1.0, "Wait before restarting a dead inference process; doubled per failed "
                                   "restart and per death within a minute of the last start, up to 30 s.", min=0.0)
    restart_limit: int = opt(5, "Consecutive failed restarts before giving up (/healthz answers 503). "
                             "0: never restart.", min=0)
    body_timeout_s: float = opt(60.0, "A request body must arrive in full within this many seconds of its "
                                "head, else 408 (slow-body clients).", min=0.001)

    variants: dict[str, str] = opt({}, "A/B and canary serving: variant name -> model (`r1 serve stable=RUN_A "
                                   "canary=RUN_B`). Empty: one variant, `model`, named after its run.")
    traffic: dict[str, float] = opt({}, "Relative weight per variant (`--traffic stable=95,canary=5`): each "
                                    "variant gets weight / sum of the requests, so the weights need not sum to 100 "
                                    "(stable=90,canary=20: 81.8% / 18.2%; the server logs the shares). Empty: all "
                                    "traffic on the first variant.")
    stable_variant: str = opt("", "The reference variant (latency rule, retries, never rolled back). Empty: the first.")
    rollback_window: int = opt(100, "Rollback rules look at a variant's last this many requests ...", min=1)
    rollback_min_requests: int = opt(20, "... once it has at least this many.", min=1)
    rollback_error_rate: float = opt(0.02, "Roll back (weight 0) a variant whose error rate (5xx answers) over "
                                     "the window exceeds this.", min=0.0, max=1.0)
    rollback_p95_factor: float = opt(3.0, "... or whose p95 latency exceeds this multiple of the stable "
                                     "variant's. 0: no latency rule.", min=0.0)
    rollback_p95_floor_ms: float = opt(50.0, "... and exceeds this many ms (shorter p95s are jitter, not a "
                                       "regression).", min=0.0)
    compare_window_s: float = opt(300.0, "GET /v1/variants also compares each variant with the stable one over "
                                  "its answers of the last this many seconds (`?window_s=` asks for less).",
                                  min=1.0, max=86400.0)
    retry_on_stable: bool = opt(True, "A request that failed (5xx) on a non-stable variant it was routed to is "
                                "run again on the stable one before answering (not when pinned by X-R1-Variant).")
    admin_token: str = opt("", "Bearer token for POST /v1/variants (weights at run time); env R1_ADMIN_TOKEN. "
                           "Empty: the route does not exist.")

    def validate(self, prefix: str = "serve") -> None:
        """Bounds of every field, also for a ServeConfig built in code (`create_app` calls this). The
        runtime is checked by `check_model`: tests serve injected loaders under other names."""
        check_bounds(self, prefix)
        for name in self.variants:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
                raise ConfigError(f"{prefix}.variants: name {name!r} is not allowed; use letters, digits, _ . -")
        names = list(self.variants) or [self.variant_names()[0]]
        for name, weight in self.traffic.items():
            if name not in names:
                raise ConfigError(f"{prefix}.traffic: {name!r} is not a variant; variants: {', '.join(names)}")
            try:
                weight_value(weight)
            except ValueError as err:
                raise ConfigError(f"{prefix}.traffic.{name}: {str(weight)[:40]} is not allowed; {err}") from None
        if self.traffic and sum(self.traffic.values()) <= 0:
            raise ConfigError(f"{prefix}.traffic: at least one variant needs a weight > 0")
        if self.stable_variant and self.stable_variant not in names:
            raise ConfigError(f"{prefix}.stable_variant: {self.stable_variant!r} is not a variant; variants: {', '.join(names)}")

    def variant_names(self) -> list[str]:
        if self.variants:
            return list(self.variants)
        return [model_name(self.model)]

    def variant_models(self) -> dict[str, str]:
        """name -> model path, in declaration order (one variant named after its run without `variants`)."""
        return dict(self.variants) if self.variants else {self.variant_names()[0]: self.model}

    def weights(self) -> dict[str, float]:
        names = self.variant_names()
        if not self.traffic:
            return {n: (1.0 if i == 0 else 0.0) for i, n in enumerate(names)}
        return {n: float(self.traffic.get(n, 0.0)) for n in names}

    def stable_name(self) -> str:
        return self.stable_variant or self.variant_names()[0]


def model_name(path: str) -> str:
    """The name responses give a served model: `runs/digits`, `runs/digits/model.safetensors`,
    `runs/digits/onnx/model-<hash>.onnx` -> "digits"; `exports/net.onnx` -> "net"."""
    p = Path(path).resolve() if path else Path("model")
    if p.suffix:
        if not p.stem.startswith("model"):
            return p.stem
        p = p.parent.parent if p.parent.name == "onnx" else p.parent
    return p.name or "model"


@dataclass
class ExportConfig:
    format: str = opt("onnx", "Output format: onnx, tensorrt (an engine), triton (a Triton model repository around "
                      "the ONNX model: <out>/<name>/config.pbtxt, 1/model.onnx, labels.txt), executorch (a mobile "
                      "program for the XNNPACK delegate, batch 1, fp32: model.pte + model.pte.json).",
                      choices=("onnx", "tensorrt", "triton", "executorch"))
    dynamic_batch: bool = opt(True, "ONNX: dynamic batch dimension (always on for triton).")
    opset: Optional[int] = opt(None, "ONNX opset. null: the exporter's default.", min=7)
    out: str = opt("", "Output file (triton: the repository folder). Empty: model.onnx / model.engine / triton/ / "
                   "model.pte beside the model.")
    nms: bool = opt(False, "Detection: NMS inside the graph; outputs boxes, scores, labels, num_dets "
                    "(fixed size, padded; see the r1.det metadata).")
    dynamic_hw: bool = opt(False, "ONNX/TensorRT: dynamic height and width too (any multiple of the model's "
                           "stride within min_size..max_size); predict/serve then letterbox to the stride.")
    min_size: int = opt(0, "dynamic_hw: smallest input side, a multiple of the stride. 0: the stride.", min=0)
    opt_size: int = opt(0, "dynamic_hw: input side the graph is traced at and TensorRT tunes for. "
                        "0: the model's input size.", min=0)
    max_size: int = opt(0, "dynamic_hw: largest input side, a multiple of the stride. 0: twice opt_size.", min=0)
    fp16: bool = opt(False, "TensorRT: FP16 kernels.")
    int8: bool = opt(False, "TensorRT: INT8 (calibrated on the model's val data); ONNX of a language model: "
                               "dynamic int8 of its Linear layers.")
    max_batch: int = opt(32, "TensorRT: profile max batch (min 1, opt max/4). Triton: max_batch_size.", min=1)
    triton_name: str = opt("", "Triton: model name in the repository. Empty: the run dir's name.")
    triton_preferred_batch: list[int] = opt([], "Triton dynamic batching: preferred batch sizes. Empty: powers of "
                                                "two from 4 up to max_batch.")
    triton_queue_delay_us: int = opt(500, "Triton dynamic batching: max queue delay in microseconds.", min=0)
    triton_instance: str = opt("cpu", "Triton instance_group kind: cpu (KIND_CPU) or gpu (KIND_GPU).",
                               choices=("cpu", "gpu"))
    triton_instances: int = opt(1, "Triton instance_group count (model instances per device).", min=1)

    def hw_range(self) -> dict | None:
        """The dynamic-HW request for `export_onnx` (None: fixed H, W)."""
        if not self.dynamic_hw:
            if self.min_size or self.opt_size or self.max_size:
                raise ConfigError("export.min_size/opt_size/max_size: only with export.dynamic_hw=true (--dynamic-hw)")
            return None
        return {"min_size": self.min_size, "opt_size": self.opt_size, "max_size": self.max_size}

    def triton_settings(self):
        from r1.export.triton import TritonSettings

        preferred = self.triton_preferred_batch or auto_preferred(self.max_batch)
        return TritonSettings(name=self.triton_name, max_batch_size=self.max_batch,
                              preferred_batch_sizes=tuple(preferred), max_queue_delay_us=self.triton_queue_delay_us,
                              instance_kind=self.triton_instance, instance_count=self.triton_instances)


def auto_preferred(max_batch: int) -> list[int]:
    """Powers of two from 4 up to max_batch (just max_batch when it is below 4)."""
    sizes = [2 ** k for k in range(2, 16) if 2 ** k <= max_batch]
    return sizes or [max_batch]


@dataclass
class BenchConfig:
    runtime: str = opt("", f"Only this runtime ({RUNTIME_CHOICES}). Empty: every runtime the model's family has.",
                       choices=("", *RUNTIMES))
    batch_sizes: list[int] = opt([1, 8, 32], "In-process batch sizes.")
    runs: int = opt(30, "Timed runs per batch size (>= 20 for p95).", min=20)
    threads: int = opt(1, "Inference threads.", min=1)
    concurrency: list[int] = opt([1, 8, 32], "`bench serve`: concurrent clients per level.")
    duration: float = opt(20.0, "`bench serve`: seconds per concurrency level.", min=0.001, max=3600.0)
    max_requests: int = opt(100_000, "`bench serve`: request cap per level.", min=1)
    client: str = opt("raw", "`bench serve`: raw (keep-alive asyncio streams) or httpx.", choices=("raw", "httpx"))
    json: str = opt("", "Also write the rows here (JSON). Empty: only the table.")

    def validate(self, prefix: str = "bench") -> None:
        for name in ("batch_sizes", "concurrency"):
            values = getattr(self, name)
            if not values or min(values) < 1:
                raise ConfigError(f"{prefix}.{name}: expected integers >= 1, got {values}")



# Section name -> dataclass, for the generic commands; families add theirs (`command_sections`).
SECTIONS: dict[str, type] = {"serve": ServeConfig, "export": ExportConfig, "bench": BenchConfig,
                             "predict": PredictConfig, "eval": EvalConfig, "tune": TuneConfig,
                             "pipeline": PipelineConfig, "inspect": InspectConfig, "clean": CleanConfig,
                             "convert": ConvertConfig}
_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def command_sections() -> dict[str, type]:
    """Every command's section: the generic ones, then those of the commands families add (declared
    in their torch-free `config.py`, see `r1.models.family_commands`)."""
    from r1.models import family_commands

    return {**SECTIONS, **{c.section: c.settings for c in family_commands() if c.section}}


def is_override(arg: str) -> bool:
    """`serve.max_batch=16` (a dotted key, `=`, a value) rather than a path or URL."""
    return bool(_OVERRIDE.match(arg))


def field_help(section: str, name: str, cls: type | None = None) -> str:
    """The help text of a field, with its default: what the command's flag shows."""
    f = (cls or command_sections()[section]).__dataclass_fields__[name]
    default = f.default_factory() if callable(f.default_factory) else f.default
    return f"{f.metadata['help']} (default {default!r}; {section + '.' if section else ''}{name})"


def load_section(section: str, path: str | Path | None = None, overrides: list[str] | None = None,
                 flags: dict[str, Any] | None = None, flag_names: dict[str, str] | None = None) -> Any:
    """Build the `section` config: default < YAML file < `section.key=value` overrides < flags.

    `flags` maps field names to flag values (None: flag not given); `flag_names` names the flags
    whose spelling is not `--field-name`, so an error names the flag the user typed.
    """
    sections = command_sections()
    cls = sections[section]
    data = read_yaml(path) if path else {}
    where = f"{path}: " if path else ""
    for key in data:
        if key not in sections:
            raise ConfigError(f"{where}unknown key {key}; allowed: {', '.join(sections)}")
    for text in overrides or []:
        if not text.startswith(f"{section}."):
            raise ConfigError(f"override {text!r}: `r1 {section}` takes {section}.KEY=VALUE, "
                              f"e.g. {section}.{next(iter(cls.__dataclass_fields__))}=...")
    data = apply_overrides(data, overrides or [])
    own = data.get(section)
    if own is None:
        own = {}
    if not isinstance(own, dict):
        raise ConfigError(f"{where}{section}: expected a mapping, got {own!r}")
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    try:
        return from_dict(cls, {**own, **given}, section)
    except ConfigError as err:
        text = str(err)
        for name in given:
            if text.startswith(f"{section}.{name}:") or text.startswith(f"{section}.{name}["):
                flag = (flag_names or {}).get(name, "--" + name.replace("_", "-"))
                raise ConfigError(f"{flag} ({section}.{name}){text[len(section) + 1 + len(name):]}") from None
        raise
