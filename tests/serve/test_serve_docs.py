"""/docs works offline: Swagger UI's assets come from this server (the swagger-ui-bundle package)."""
from __future__ import annotations

import re

from fastapi.testclient import TestClient

from r1.serve import ServeConfig, create_app


def test_docs_page_uses_only_local_assets():
    client = TestClient(create_app(ServeConfig(model="fake", runtime="fake", warmup_runs=0)))  # no lifespan: no model
    page = client.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    html = page.text
    assert "SwaggerUIBundle" in html
    assert not re.findall(r"https?://", html), "the docs page must not load anything from the internet"
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    js = [a for a in assets if a.endswith("swagger-ui-bundle.js")]
    assert js and any(a.endswith(".css") for a in assets)
    for asset in assets:
        res = client.get(asset)
        assert res.status_code == 200, asset
    res = client.get(js[0])
    assert "javascript" in res.headers["content-type"] and len(res.content) > 100_000
    assert "url: '/openapi.json'" in html and client.get("/openapi.json").status_code == 200
