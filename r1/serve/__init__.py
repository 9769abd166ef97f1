"""HTTP serving: `create_app(ServeConfig)` (FastAPI + uvicorn), dynamic batcher, schemas, metrics."""
from r1.serve.app import ServeConfig, create_app, serve

__all__ = ["ServeConfig", "create_app", "serve"]
