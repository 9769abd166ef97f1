"""Schema-driven fuzzing: requests generated from the server's own OpenAPI document (every path
and method, every declared request content type, bodies that follow, bend and break the JSON
schemas, wrong content types, random bytes). No response may be a 5xx; errors are JSON."""
from __future__ import annotations

import base64
import json

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from r1.bench.load import wait_ready
from r1.serve import ServeConfig, create_app
from tests.serve.helpers import FakeLoader, png_bytes, running_server

CLIENT = httpx.Client(timeout=30.0)


@pytest.fixture(scope="module")
def server():
    # the default worker process: images are decoded (and refused) there
    app = create_app(ServeConfig(model="fake", runtime="fake", warmup_runs=0, max_body_bytes=64 * 1024,
                                 max_pixels=100_000), loader=FakeLoader())
    with running_server(app) as (url, _):
        spec = CLIENT.get(url + "/openapi.json").json()
        wait_ready(url, timeout=60)
        yield url, spec


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                         st.text(max_size=40))
ANY_JSON = st.recursive(JSON_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                               st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                        max_leaves=12)
IMAGES = st.one_of(st.just(png_bytes(size=(8, 8))), st.binary(max_size=200),
                   st.builds(lambda b, n: b[:n], st.just(png_bytes(size=(20, 20), fmt="JPEG")), st.integers(0, 600)))


def value_for(schema: dict):
    """A value that follows `schema` (type, bounds) or, sometimes, any JSON at all."""
    t = schema.get("type")
    good = {"integer": st.integers(schema.get("minimum", -10), schema.get("maximum", 10)),
            "string": st.one_of(st.text(max_size=30), IMAGES.map(lambda b: base64.b64encode(b).decode())),
            }.get(t)
    if "anyOf" in schema:
        good = st.one_of(*[value_for(s) for s in schema["anyOf"]])
    return st.one_of(good, ANY_JSON) if good is not None else ANY_JSON


def object_for(schema: dict):
    """Objects with any subset of the schema's properties (required ones usually present) and
    sometimes an extra key."""
    props = schema.get("properties", {})
    fields = {k: value_for(v) for k, v in props.items()}
    extra = st.dictionaries(st.text(max_size=6), ANY_JSON, max_size=1)
    return st.builds(lambda chosen, more: {**chosen, **more},
                     st.fixed_dictionaries({}, optional=fields), st.one_of(st.just({}), extra))


@st.composite
def predict_request(draw, spec):
    content = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    kind = draw(st.sampled_from(sorted(content) * 4 + ["text/plain", "none", "application/x-www-form-urlencoded"]))
    if kind == "application/json":
        schemas = content[kind]["schema"]["oneOf"]
        body = draw(st.one_of(*[object_for(s) for s in schemas], ANY_JSON))
        raw = json.dumps(body).encode()
        if draw(st.booleans()) and draw(st.booleans()):
            raw = raw[: draw(st.integers(0, len(raw)))]  # truncated JSON
        return {"content": raw, "headers": {"content-type": "application/json"}}
    if kind == "multipart/form-data":
        props = content[kind]["schema"]["properties"]
        files, data = {}, {}
        for name in draw(st.sets(st.sampled_from(sorted(props) + ["junk"]))):
            if draw(st.booleans()):
                files[name] = ("x.png", draw(IMAGES), draw(st.sampled_from(["image/png", "text/plain"])))
            else:
                data[name] = draw(st.text(max_size=20))
        if not files and not data:
            return {"content": draw(st.binary(max_size=100)), "headers": {"content-type": "multipart/form-data"}}
        return {"files": files or {"junk": ("j", b"")}, "data": data}
    if kind == "none":
        return {"content": draw(st.binary(max_size=100))}
    ctype = "image/png" if kind == "image/*" else kind
    return {"content": draw(IMAGES), "headers": {"content-type": ctype},
            "params": draw(st.one_of(st.just({}), st.fixed_dictionaries({"top_k": st.text(max_size=4)})))}


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_predict_fuzz_no_5xx(server, data):
    url, spec = server
    req = data.draw(predict_request(spec))
    r = CLIENT.post(url + "/v1/predict", **req)
    event(f"status {r.status_code}")
    assert r.status_code < 500, (r.status_code, r.text)
    if r.status_code != 200:
        body = r.json()
        assert body["status"] == r.status_code and isinstance(body["detail"], str)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_path_and_method_no_5xx(server, data):
    url, spec = server
    path = data.draw(st.sampled_from(sorted(spec["paths"]) + ["/", "/v1", "/v1/predict/x"]))
    method = data.draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
    query = data.draw(st.dictionaries(st.text("abcxyz_", min_size=1, max_size=5), st.text(max_size=8), max_size=2))
    r = CLIENT.request(method, url + path, params=query, content=data.draw(st.binary(max_size=50)))
    assert r.status_code < 500, (method, path, r.status_code, r.text)
