"""Running the app: checks before start (model path, runtime, port), uvicorn's settings, `serve`."""
from __future__ import annotations

import errno
import logging
import socket

from fastapi import FastAPI

from r1.config_commands import ServeConfig
from r1.serve.app import create_app


def check_model(cfg: ServeConfig) -> None:
    """Fail fast (one-line R1Error) on a bad path or runtime, before the server starts."""
    from r1.errors import ConfigError
    from r1.inference.runtimes import RUNTIMES, infer_runtime

    cfg.validate()
    if cfg.runtime not in RUNTIMES:
        raise ConfigError(f"--runtime: {cfg.runtime!r} is not allowed; allowed: {', '.join(RUNTIMES)}")
    if cfg.runtime == "tensorrt":
        from r1.inference.tensorrt import require_tensorrt
        require_tensorrt()
    families = {}
    for name, path in cfg.variant_models().items():
        if infer_runtime(path) == "onnx":
            from r1.onnx.graph import read_onnx_meta
            families[name] = read_onnx_meta(path).get("r1.family", "")
        else:
            from r1.artifacts import read_info
            from r1.inference.runtimes import check_runtime
            families[name] = read_info(path)["family"]
            check_runtime(families[name], cfg.runtime)
    if len(set(families.values())) > 1:
        raise ConfigError("serve.variants: variants must be models of one family (they answer the same requests); "
                          "got " + ", ".join(f"{n}: {f or 'unknown'}" for n, f in families.items()))


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (ConfigError, exit 2, naming the port when it is taken or
    the address cannot be used), bound before the model loads so that a taken port fails fast."""
    from r1.errors import ConfigError

    try:
        family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as err:
        raise ConfigError(f"--host {host!r}: not an address this machine can listen on ({err})") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as err:
        sock.close()
        why = "already in use by another process; pick another --port" if err.errno == errno.EADDRINUSE \
            else err.strerror
        raise ConfigError(f"--port {port}: cannot listen on {host}:{port}: {why}") from None
    return sock


def serve(cfg: ServeConfig, log_level: str = "info") -> None:
    """Run the app with uvicorn (blocking) on cfg.host:cfg.port."""
    import uvicorn

    sock = bind_socket(cfg.host, cfg.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    logging.getLogger("r1.serve").info(
        "listening on http://%s:%d%s (POST /v1/predict; ready when /readyz answers 200; API docs at /docs)", shown,
        port, " (every interface)" if host in ("0.0.0.0", "::") else "")
    try:
        uvicorn.Server(uvicorn_config(create_app(cfg), log_level=log_level)).run(sockets=[sock])
    finally:
        sock.close()


def uvicorn_config(app: FastAPI, **options):
    """uvicorn's settings for an app of `create_app`: the header-timeout protocol, the access log
    per `serve.access_log` (~0.1 ms of event-loop CPU per request: off unless asked for) and a
    graceful-shutdown limit past the request timeout. `options` override them."""
    import uvicorn

    from r1.serve.protocol import with_header_timeout

    cfg = app.state.r1.cfg
    return uvicorn.Config(app, **{"http": with_header_timeout(cfg.header_timeout_s), "access_log": cfg.access_log,
                                  "timeout_graceful_shutdown": max(5, int(cfg.timeout_ms / 1000) + 1), **options})
