"""A/B and canary serving (issue 15 section 1): weighted and sticky routing, pinning, automatic
rollback with no errors seen by clients afterwards, the admin route's tokens, per-variant metrics."""
from __future__ import annotations

import concurrent.futures as cf
import random
import re

import httpx
import pytest

from r1.bench.load import wait_ready
from r1.config_commands import ServeConfig
from r1.errors import ConfigError
from r1.serve import create_app
from r1.serve.variants import RollbackRules, Router, parse_traffic, split_named, split_variants, user_point
from tests.serve.helpers import VariantLoader, png_bytes, running_server

CLIENT = httpx.Client(timeout=30.0)
OK_IMAGE, BAD_IMAGE = png_bytes((8, 8)), png_bytes((7, 8))  # the flaky canary raises on 7-pixel-wide images


# ----------------------------------------------------------------- the router alone
def test_split_over_5000_requests_lands_within_2_points():
    router = Router({"stable": 90, "canary": 10}, "stable", rng=random.Random(0))
    picks = [router.pick() for _ in range(5000)]
    share = picks.count("canary") / 5000
    assert abs(share - 0.10) <= 0.02, share
    # sticky: 5,000 users, the same split, and each user always on the same variant
    users = [f"user-{i}" for i in range(5000)]
    first = {u: router.pick(u) for u in users}
    assert abs(list(first.values()).count("canary") / 5000 - 0.10) <= 0.02
    assert all(router.pick(u) == first[u] for u in users for _ in range(3))


def test_user_hash_is_stable_across_processes():
    # sha256, not Python's salted hash(): the same point in every process and after restarts
    import hashlib
    import subprocess
    import sys

    assert user_point("alice") == int(hashlib.sha256(b"alice").hexdigest()[:16], 16) / 2 ** 64
    code = "from r1.serve.variants import user_point; print(repr(user_point('alice')))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**__import__("os").environ, "PYTHONHASHSEED": "123"}).stdout.strip()
    assert float(other) == user_point("alice") and 0.0 <= user_point("") < 1.0


def test_weight_change_moves_only_the_users_it_must():
    router = Router({"stable": 95, "canary": 5}, "stable")
    users = [f"u{i}" for i in range(2000)]
    before = {u: router.pick(u) for u in users}
    router.set_weights({"stable": 90, "canary": 10})
    after = {u: router.pick(u) for u in users}
    assert all(after[u] == "canary" for u in users if before[u] == "canary")  # canary users stay


def test_rollback_rules():
    rules = RollbackRules(window=50, min_requests=20, max_error_rate=0.02, p95_factor=3.0, p95_floor=0.1)
    router = Router({"stable": 50, "canary": 50}, "stable", rules)
    for _ in range(19):
        assert router.record("canary", True, 0.01) is None
    assert router.record("canary", False, 0.01).startswith("error rate")  # 1/20 = 5% > 2%
    assert router.weights["canary"] == 0 and router.pick() == "stable"
    for _ in range(30):  # the stable variant is never rolled back
        assert router.record("stable", False, 0.01) is None
    # latency rule: p95 over 3x the stable one's
    router = Router({"stable": 50, "canary": 50}, "stable", rules)
    for _ in range(20):
        router.record("stable", True, 0.010)
    for _ in range(19):
        assert router.record("canary", True, 0.020) is None
    assert router.record("canary", True, 0.5) is None  # one slow request: p95 still 20 ms
    for _ in range(20):
        assert router.record("canary", True, 0.09) is None  # 9x slower, but under the floor
    whys = [router.record("canary", True, 0.5) for _ in range(3)]
    assert any(w and w.startswith("p95") for w in whys) and router.weights["canary"] == 0
    router.set_weights({"canary": 5})  # brought back by hand: a fresh window
    assert router.rolled_back == {} and len(router.stats["canary"].recent) == 0


def test_router_and_parsing_errors():
    with pytest.raises(ValueError, match="weight > 0"):
        Router({"a": 0, "b": 0}, "a")
    router = Router({"a": 1, "b": 1}, "a")
    with pytest.raises(ValueError, match="unknown variant 'c'"):
        router.set_weights({"c": 1})
    with pytest.raises(ValueError, match=">= 0"):
        router.set_weights({"a": -1})
    assert parse_traffic("stable=95, canary=5") == {"stable": 95.0, "canary": 5.0}
    # weights are relative (documented in --traffic and serve.traffic): 90 + 20 is 81.8% / 18.2%, said at start
    odd = Router(parse_traffic("stable=90,canary=20"), stable="stable")
    assert odd.shares() == pytest.approx({"stable": 90 / 110, "canary": 20 / 110})
    assert odd.shares_text() == "stable 81.8%, canary 18.2% (relative weights stable=90, canary=20)"
    for bad in ("stable", "stable=x", "=5", ""):
        with pytest.raises(ConfigError, match="--traffic"):
            parse_traffic(bad)
    assert split_variants(["runs/a"]) == ("runs/a", None)
    assert split_variants(["stable=runs/a", "canary=runs/b"]) == (None, {"stable": "runs/a", "canary": "runs/b"})
    for bad, msg in ((["runs/a", "runs/b"], "NAME=MODEL"), (["a=x", "runs/b"], "name each"), (["a=x", "a=y"], "twice")):
        with pytest.raises(ConfigError, match=msg):
            split_variants(bad)
    assert split_named(["stable=runs/a", "serve.max_batch=4", "max_batch=4", "runs/x"]) == (
        ["stable=runs/a"], ["serve.max_batch=4", "max_batch=4", "runs/x"])


def test_config_checks_variant_names_and_traffic():
    ServeConfig(variants={"stable": "a", "canary": "b"}, traffic={"stable": 9, "canary": 1}).validate()
    for kw, msg in ((dict(traffic={"canary": 1}), "serve.traffic: 'canary' is not a variant"),
                    (dict(traffic={"stable": 0, "canary": 0}), "weight > 0"),
                    (dict(traffic={"stable": -1}), "serve.traffic.stable"),
                    (dict(stable_variant="nope"), "serve.stable_variant"),
                    (dict(variants={"bad name": "a"}), "serve.variants: name 'bad name'")):
        base = {} if "variants" in kw else {"variants": {"stable": "a"}}
        if kw.get("traffic") and "canary" in kw["traffic"] and len(kw["traffic"]) == 2:
            base = {"variants": {"stable": "a", "canary": "b"}}
        with pytest.raises(ConfigError, match=re.escape(msg)):
            ServeConfig(**{**base, **kw}).validate()
    one = ServeConfig(model="runs/digits")
    assert one.variant_models() == {"digits": "runs/digits"} and one.weights() == {"digits": 1.0}


# ----------------------------------------------------------------- over HTTP
def _cfg(**kw) -> ServeConfig:
    base = dict(variants={"stable": "runs/good", "canary": "runs/flaky"}, traffic={"stable": 90, "canary": 10},
                inference="thread", warmup_runs=0, max_wait_ms=0.5, rollback_window=50, rollback_min_requests=20)
    return ServeConfig(**{**base, **kw})


def _post(url, image=OK_IMAGE, **headers):
    return CLIENT.post(url + "/v1/predict", content=image, headers={"content-type": "image/png", **headers})


def test_split_sticky_and_pinned_over_http():
    # the latency rule is off: on a loaded machine a canary's p95 can exceed 3x stable's by chance,
    # and a rollback would change the split this test measures
    app = create_app(_cfg(variants={"stable": "runs/good", "canary": "runs/good-b"}, rollback_p95_factor=0),
                     VariantLoader())
    with running_server(app) as (url, _):
        wait_ready(url, timeout=30)
        with cf.ThreadPoolExecutor(8) as pool:
            rs = list(pool.map(lambda _: _post(url), range(600)))
        assert [r.status_code for r in rs] == [200] * 600
        names = [r.json()["variant"] for r in rs]
        assert all(r.headers["x-r1-variant"] == r.json()["variant"] for r in rs)
        assert abs(names.count("canary") / 600 - 0.10) <= 0.05
        models = {r.json()["variant"]: r.json()["model"] for r in rs}
        assert models == {"stable": "good", "canary": "good-b"}  # the run's name, never a path
        for user in (f"user-{i}" for i in range(30)):
            seen = {_post(url, **{"X-R1-User": user}).json()["variant"] for _ in range(4)}
            assert len(seen) == 1
        assert {_post(url, **{"X-R1-Variant": "canary"}).json()["variant"] for _ in range(5)} == {"canary"}
        r = _post(url, **{"X-R1-Variant": "nope"})
        assert r.status_code == 400 and "'nope' is not a variant" in r.json()["detail"]
        body = CLIENT.get(url + "/v1/variants").json()
        rows = {v["name"]: v for v in body["variants"]}
        assert body["stable"] == "stable" and rows["canary"]["weight"] == 10 and rows["canary"]["share"] == 0.1
        assert rows["stable"]["requests"] + rows["canary"]["requests"] == 600 + 30 * 4 + 5
        assert rows["canary"]["p95_ms"] is not None and rows["canary"]["error_rate"] == 0
        metrics = CLIENT.get(url + "/metrics").text
        assert 'r1_variant_requests_total{status="200",variant="canary"}' in metrics
        assert 'r1_variant_weight{variant="canary"} 10.0' in metrics and 'r1_variant_batch_size_count{variant="stable"}' in metrics
        ready = CLIENT.get(url + "/readyz").json()
        assert ready["ready"] and ready["variants"] == {"stable": True, "canary": True}
        # admin route absent without a token
        assert CLIENT.post(url + "/v1/variants", json={"weights": {"canary": 0}}).status_code == 404


@pytest.mark.parametrize("retry", [True, False], ids=["retry-on-stable", "no-retry"])
def test_failing_canary_is_rolled_back_and_clients_then_see_no_errors(retry, caplog):
    app = create_app(_cfg(traffic={"stable": 50, "canary": 50}, retry_on_stable=retry), VariantLoader())
    images = [BAD_IMAGE if i % 5 == 0 else OK_IMAGE for i in range(400)]  # 20% of requests break the canary
    with running_server(app) as (url, _):
        wait_ready(url, timeout=30)
        statuses = []
        for image in images[:200]:
            r = _post(url, image)
            statuses.append(r.status_code)
            if CLIENT.get(url + "/v1/variants").json()["variants"][1]["weight"] == 0:
                break
        rows = {v["name"]: v for v in CLIENT.get(url + "/v1/variants").json()["variants"]}
        canary = rows["canary"]
        assert canary["weight"] == 0 and canary["rolled_back"].startswith("error rate")
        assert canary["requests"] <= 50  # within the window
        if retry:  # the failed canary requests were answered by the stable variant
            assert set(statuses) == {200}
        else:
            assert 500 in statuses
        after = [_post(url, image) for image in images[200:]]
        assert [r.status_code for r in after] == [200] * 200
        assert {r.json()["variant"] for r in after} == {"stable"}
        metrics = CLIENT.get(url + "/metrics").text
        assert 'r1_variant_rollbacks_total{rule="error_rate",variant="canary"} 1.0' in metrics
        assert 'r1_variant_weight{variant="canary"} 0.0' in metrics
        assert ('r1_variant_retries_total{variant="canary"}' in metrics) == retry
        # pinned requests still reach the rolled-back canary (debugging), with its own errors
        r = _post(url, BAD_IMAGE, **{"X-R1-Variant": "canary"})
        assert r.status_code == 500 and r.headers["x-r1-variant"] == "canary"
    assert any("rollback: variant canary weight -> 0" in m for m in caplog.messages)


def test_admin_route_tokens_and_weight_change_under_load():
    app = create_app(_cfg(variants={"stable": "runs/good", "canary": "runs/good-b"}, admin_token="s3cret"),
                     VariantLoader())
    with running_server(app) as (url, _):
        wait_ready(url, timeout=30)
        route = url + "/v1/variants"
        assert CLIENT.post(route, json={"weights": {"canary": 0}}).status_code == 401
        assert CLIENT.post(route, json={"weights": {"canary": 0}}, headers={"Authorization": "Basic s3cret"}
                           ).status_code == 401
        r = CLIENT.post(route, json={"weights": {"canary": 0}}, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
        auth = {"Authorization": "Bearer s3cret"}
        for body, msg in (({"weights": {"nope": 1}}, "unknown variant"), ({"weights": {"canary": -1}}, ">= 0"),
                          ({"weights": {"stable": 0, "canary": 0}}, "weight > 0"), ({"w": 1}, "weights")):
            r = CLIENT.post(route, json=body, headers=auth)
            assert r.status_code == 422 and msg in r.json()["detail"], r.text

        def toggle():
            for i in range(20):
                w = {"stable": 50, "canary": 50} if i % 2 else {"stable": 100, "canary": 0}
                assert CLIENT.post(route, json={"weights": w}, headers=auth).status_code == 200

        with cf.ThreadPoolExecutor(9) as pool:
            changer = pool.submit(toggle)
            rs = list(pool.map(lambda _: _post(url), range(400)))
            changer.result()
        assert [r.status_code for r in rs] == [200] * 400  # nothing lost or 5xx while weights change
        r = CLIENT.post(route, json={"weights": {"stable": 0, "canary": 1}}, headers=auth)
        assert r.status_code == 200 and {v["name"]: v["share"] for v in r.json()["variants"]} == {
            "stable": 0.0, "canary": 1.0}
        assert {_post(url).json()["variant"] for _ in range(20)} == {"canary"}


def test_single_model_is_one_variant_named_after_its_run():
    app = create_app(ServeConfig(model="runs/digits", inference="thread", warmup_runs=0), VariantLoader())
    with running_server(app) as (url, _):
        wait_ready(url, timeout=30)
        r = _post(url)
        assert r.status_code == 200 and r.json()["variant"] == "digits" == r.headers["x-r1-variant"]
        assert [v["name"] for v in CLIENT.get(url + "/v1/variants").json()["variants"]] == ["digits"]


def test_serve_cli_variants_errors(tmp_path):
    from tests.conftest import run_cli

    res = run_cli("serve", "stable=runs/a", "canary=runs/b", "--traffic", "stable=95,cnary=5")
    assert res.returncode == 2 and "--traffic (serve.traffic): 'cnary' is not a variant; variants: stable, canary" in res.stderr
    res = run_cli("serve", "stable=runs/a", "runs/b")
    assert res.returncode == 2 and "name each one: NAME=MODEL" in res.stderr
    cfg = tmp_path / "serve.yaml"
    cfg.write_text("serve:\n  variants: {stable: /no/such/run, canary: /no/such/other}\n"
                   "  traffic: {stable: 90, canary: 10}\n")
    res = run_cli("serve", "--config", str(cfg))
    assert res.returncode != 0 and "Traceback" not in res.stderr and "such" in res.stderr
