"""HTTP serving: `create_app(ServeConfig)` (FastAPI + uvicorn), dynamic batcher, schemas, metrics."""
from r1.config_commands import ServeConfig
from r1.serve.app import create_app
from r1.serve.server import serve

__all__ = ["ServeConfig", "create_app", "serve"]
