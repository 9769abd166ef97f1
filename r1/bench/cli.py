"""What `r1 bench` runs: in-process runtime comparison, or an HTTP load test against a server."""
from __future__ import annotations

from r1.errors import ConfigError


def parse_ints(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{option}: expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{option}: expected integers >= 1, got {text!r}")
    return values


def run_bench(target: str, url: str | None, runtime: str | None, batch_sizes: str, runs: int, threads: int,
              concurrency: str, duration: float, max_requests: int, client: str = "raw") -> tuple[str, list[dict]]:
    from r1.bench.report import latency_table, load_table

    if target == "serve":
        from r1.bench.load import run_load

        if not url:
            raise ConfigError("usage: r1 bench serve URL [--concurrency 1,8,32] [--duration 20]")
        if duration <= 0 or duration > 3600:
            raise ConfigError("--duration: must be in (0, 3600] seconds")
        if client not in ("raw", "httpx"):
            raise ConfigError(f"--client: {client!r} is not allowed; allowed: raw, httpx")
        if not url.startswith("http://"):
            raise ConfigError(f"URL: {url!r} must start with http://")
        rows = [{"label": url, **run_load(url, c, duration, max_requests, client=client)}
                for c in parse_ints(concurrency, "--concurrency")]
        return load_table(rows), rows
    from r1.bench.latency import compare_runtimes

    if runs < 20:
        raise ConfigError("--runs: must be >= 20 (p95 needs them)")
    if runtime:
        runtimes = (runtime,)
    else:  # every runtime the model's family can run in
        from r1.errors import R1Error
        from r1.family import get_family
        from r1.inference.runtimes import artifact_family

        try:
            runtimes = get_family(artifact_family(target)).runtimes
        except (R1Error, OSError, KeyError, ValueError):  # unreadable: each runtime's row says why
            runtimes = ("torch", "onnx", "tensorrt")
    rows = compare_runtimes(target, parse_ints(batch_sizes, "--batch-sizes"), runtimes, threads, runs)
    return latency_table(rows), rows
