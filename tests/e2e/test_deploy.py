"""The deployment files: Kubernetes manifests against the Kubernetes schemas (offline, PyPI
``kubernetes-validate``), the router config they carry through ``trino-router check``, and the Dockerfile
against the README's build command and the manifests' paths and user."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

import harness

MANIFESTS = harness.REPO_ROOT / "envoy" / "kubernetes" / "router.yaml"
DOCKERFILE = harness.REPO_ROOT / "Dockerfile"
KUBERNETES = "1.37.0"


def _kubernetes_validate():
    try:
        import kubernetes_validate
    except ImportError:
        harness._missing("kubernetes-validate is not installed: run scripts/setup")
    return kubernetes_validate


def _documents() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFESTS.read_text())}


def test_manifests_follow_the_kubernetes_schemas():
    kv = _kubernetes_validate()
    docs = _documents()
    assert set(docs) == {"ConfigMap", "Secret", "Deployment", "PodDisruptionBudget", "Service"}
    for kind, doc in docs.items():
        kv.validate(doc, KUBERNETES, strict=True)
    # The check can fail: a wrong type and an unknown field are refused.
    broken = copy.deepcopy(docs["Deployment"])
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, KUBERNETES, strict=True)
    broken = copy.deepcopy(docs["Service"])
    broken["spec"]["ports"][0]["appProtocl"] = "h2c"
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, KUBERNETES, strict=True)


def test_manifests_say_what_the_router_needs(tmp_path):
    docs = _documents()
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert docs["Deployment"]["spec"]["replicas"] >= 2
    assert docs["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    grpc = next(p for p in docs["Service"]["spec"]["ports"] if p["name"] == "grpc")
    assert grpc["appProtocol"] == "kubernetes.io/h2c", "Envoy speaks HTTP/2 to the router"
    assert container["readinessProbe"]["grpc"]["port"] == 50051 and container["livenessProbe"]["grpc"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    secret_env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert secret_env["TRINO_ROUTER_ADMIN_TOKEN"]["name"] == docs["Secret"]["metadata"]["name"]

    # The config the ConfigMap carries is valid, and is where the container reads it.
    config = tmp_path / "router.yaml"
    config.write_text(docs["ConfigMap"]["data"]["router.yaml"])
    checked = harness.run_router_cli("check", "--config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    mount = container["volumeMounts"][0]["mountPath"]
    assert container["args"][container["args"].index("--config") + 1] == f"{mount}/router.yaml"
    ports = {p["containerPort"] for p in container["ports"]}
    parsed = yaml.safe_load(docs["ConfigMap"]["data"]["router.yaml"])
    assert {int(parsed["listen"].rsplit(":", 1)[1]), int(parsed["metrics_listen"].rsplit(":", 1)[1])} == ports


def test_dockerfile_builds_what_the_readme_builds():
    dockerfile = DOCKERFILE.read_text()
    build = re.search(r"^RUN (cargo build .*)$", dockerfile, re.MULTILINE)
    assert build, "the Dockerfile has no cargo build step"
    readme = (harness.REPO_ROOT / "README.md").read_text()
    assert build.group(1) in readme, f"README.md does not use `{build.group(1)}`"
    assert "--locked" in build.group(1) and "--release" in build.group(1)
    # The binary it copies is the one it built, and it runs as the manifests' non-root user.
    assert "/src/target/release/trino-router" in dockerfile
    assert "USER nonroot" in dockerfile  # distroless's nonroot is uid 65532
    pod = _documents()["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 65532
    cmd = re.search(r'^CMD \[(.*)\]$', dockerfile, re.MULTILINE).group(1)
    assert '"/etc/trino-router/router.yaml"' in cmd
    # Every file the build needs is in the repository (the build context): the manifest and lock file.
    for needed in ("Cargo.toml", "Cargo.lock", "build.rs", "src/main.rs", "proto"):
        assert (harness.REPO_ROOT / needed).exists(), needed
