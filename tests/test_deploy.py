"""The Dockerfile and the Kubernetes manifest in deploy/: schema-valid, and consistent with each
other and with `r1 serve` (port, probes, non-root user, the canary as a second variant)."""
from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "deploy" / "k8s" / "r1-serve.yaml"


def _docs() -> dict:
    return {d["kind"]: d for d in yaml.safe_load_all(MANIFEST.read_text())}


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def test_manifest_is_valid_kubernetes():
    docs = list(yaml.safe_load_all(MANIFEST.read_text()))
    assert [d["kind"] for d in docs] == ["Deployment", "Service"]
    for doc in docs:  # strict: an unknown or misspelt field fails too
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_schema_check_catches_a_misspelt_field():
    dep = _docs()["Deployment"]
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {"path": "/readyz"}
    with pytest.raises(kubernetes_validate.ValidationError, match="httpGett"):
        kubernetes_validate.validate(dep, kubernetes_validate.latest_version(), strict=True)


def test_deployment_probes_limits_and_service_agree():
    docs = _docs()
    dep, svc = docs["Deployment"], docs["Service"]
    pod = dep["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert set(c["resources"]["limits"]) >= {"cpu", "memory"}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert svc["spec"]["ports"][0]["targetPort"] in ports
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    # the server's threads match the CPU limit (oversubscription makes torch ~20x slower)
    args = c["args"]
    assert args[args.index("--threads") + 1] == c["resources"]["limits"]["cpu"]
    # the models volume is mounted read-only where the args point
    mount = next(m for m in c["volumeMounts"] if m["name"] == "models")
    assert mount["readOnly"] and all(a.split("=", 1)[1].startswith(mount["mountPath"] + "/")
                                     for a in args if "=/" in a)


def test_dockerfile_is_slim_non_root_and_serves_on_the_manifests_port():
    ins = _dockerfile()
    kinds = [k for k, _ in ins]
    assert ins[0][0] == "FROM" and "slim" in ins[0][1]
    user = [a for k, a in ins if k == "USER"]
    assert user and user[-1] not in ("root", "0")
    assert kinds.index("USER") > max(i for i, k in enumerate(kinds) if k == "RUN")  # nothing runs as root after
    entry = " ".join(a for k, a in ins if k == "ENTRYPOINT")
    assert '"r1", "serve"' in entry
    port = int(re.search(r'"--port", "(\d+)"', entry).group(1))
    assert [a for k, a in ins if k == "EXPOSE"] == [str(port)]
    assert any(k == "HEALTHCHECK" and f":{port}/healthz" in a for k, a in ins)
    (c,) = _docs()["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert c["ports"][0]["containerPort"] == port
    uid = int(user[-1])
    assert _docs()["Deployment"]["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == uid
    # the torch it installs is the pinned CPU build; everything it copies exists
    assert any(k == "RUN" and "download.pytorch.org/whl/cpu" in a and "constraints.txt" in a for k, a in ins)
    for k, a in ins:
        if k == "COPY":
            for src in a.split()[:-1]:
                assert (ROOT / src).exists(), f"Dockerfile copies {src}, which is not in the repository"


def test_dockerignore_keeps_the_build_context_small():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "runs"} <= set(ignored)


def test_manifest_args_are_a_valid_canary_command():
    """The container's args parse the way `r1 serve` parses them: two variants, weights summing to 100."""
    from r1.serve.variants import parse_traffic, split_named, split_variants

    (c,) = _docs()["Deployment"]["spec"]["template"]["spec"]["containers"]
    args = list(c["args"])
    traffic = parse_traffic(args[args.index("--traffic") + 1])
    named, rest = split_named([a for a in args if not a.startswith("--") and a not in (
        args[args.index("--traffic") + 1], args[args.index("--threads") + 1])])
    model, variants = split_variants(named + rest)
    assert model is None and set(variants) == {"stable", "canary"} == set(traffic)
    assert sum(traffic.values()) == 100 and traffic["canary"] < traffic["stable"]
    assert any(e["name"] == "R1_ADMIN_TOKEN" for e in c["env"])  # the admin route's token, as `r1 serve` reads it
