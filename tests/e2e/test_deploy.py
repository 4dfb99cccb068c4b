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


# --------------------------------------------------------------------------------------------------
# Istio and Envoy Gateway


ISTIO = harness.REPO_ROOT / "envoy" / "istio"
ENVOY_GATEWAY = harness.REPO_ROOT / "envoy" / "envoy-gateway" / "trino-router.yaml"


def _istio() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all((ISTIO / "trino-router.yaml").read_text())}


def _hcm(bootstrap: dict) -> dict:
    return bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def _envoy_config(config: str, *args: str) -> dict:
    out = harness.run_router_cli("envoy-config", "--config", config, *args)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_istio_fragments_validate_in_envoy_and_are_envoy_configs_own():
    """Every Envoy fragment of the Istio file, placed as Istio places it (filters before the router filter,
    route patches merged into the VirtualService's routes, the virtual-host patch), in a bootstrap that
    `envoy --mode validate` accepts; the filters are those `envoy-config` writes, but for where they dial."""
    config = str(ISTIO / "router-config.yaml")
    checked = harness.run_router_cli("check", "--config", config)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    docs = _istio()
    patches = docs["EnvoyFilter"]["spec"]["configPatches"]
    filters = [p["patch"]["value"] for p in patches if p["applyTo"] == "HTTP_FILTER"]
    route_patches = {p["match"]["routeConfiguration"]["vhost"]["route"]["name"]: p["patch"]["value"]
                     for p in patches if p["applyTo"] == "HTTP_ROUTE"}
    vhost_patch = next(p["patch"]["value"] for p in patches if p["applyTo"] == "VIRTUAL_HOST")

    # The filters are envoy-config's, dialling Istio's cluster for the router Service.
    ours = {f["name"]: f for f in _hcm(_envoy_config(config))["http_filters"]}
    router_cluster = None
    for istio_filter in filters:
        mine = copy.deepcopy(ours[istio_filter["name"]])
        theirs = copy.deepcopy(istio_filter)
        service = theirs["typed_config"].pop("grpc_service")
        router_cluster = service["envoy_grpc"]["cluster_name"]
        assert service["envoy_grpc"]["authority"] == router_cluster.rsplit("|", 1)[1], "a host name"
        assert service["initial_metadata"] == mine["typed_config"].pop("grpc_service")["initial_metadata"]
        if istio_filter["name"] == "trino-router.decide":
            mine.pop("disabled"), theirs.pop("disabled", None)  # on every request of the Trino port
        assert theirs == mine, istio_filter["name"]

    # The VirtualService as Envoy routes, with the route and virtual-host patches merged in.
    router_config = yaml.safe_load(open(config))
    envoy_clusters = {c["envoy_cluster"] for c in router_config["clusters"]}
    ours_routes = _hcm(_envoy_config(config, "--static-routes"))["route_config"]["virtual_hosts"][0]
    ours_retry_on = ours_routes["retry_policy"]["retry_on"]
    ours_new_query = next(r["route"] for r in ours_routes["routes"] if r["match"].get("path") == "/v1/statement")
    ours_new_query_timeout = ours_new_query["timeout"]
    ours_new_query_retry_on = ours_new_query["retry_policy"]["retry_on"]
    routes = []
    for http in docs["VirtualService"]["spec"]["http"]:
        match = {"prefix": "/"}
        for m in http.get("match", [{}]):
            if "uri" in m:
                match = {"path": m["uri"]["exact"]}
            headers = [{"name": ":method", "string_match": {"exact": m["method"]["exact"]}}] if "method" in m else []
            for name, value in m.get("headers", {}).items():
                assert value["exact"] in envoy_clusters, f"{http['name']} matches {value} no cluster has"
                headers.append({"name": name, "string_match": {"exact": value["exact"]}})
            if headers:
                match["headers"] = headers
        route = {"name": http["name"], "match": match}
        if "directResponse" in http:
            route["direct_response"] = {"status": http["directResponse"]["status"]}
        else:
            dest = http["route"][0]["destination"]
            route["route"] = {"cluster": f"outbound|{dest['port']['number']}||{dest['host']}",
                              "timeout": http.get("timeout", "0s"),
                              "retry_policy": {"retry_on": http["retries"]["retryOn"],
                                               "num_retries": http["retries"]["attempts"]}}
            # The same new-query timeout and retries as envoy-config's own routes.
            if match.get("path") == "/v1/statement":
                assert http.get("timeout") == ours_new_query_timeout, http["name"]
                assert http["retries"]["retryOn"] == ours_new_query_retry_on, http["name"]
            else:
                assert http["retries"]["retryOn"] == ours_retry_on, http["name"]
        route.update(copy.deepcopy(route_patches.pop(http["name"], {})))
        routes.append(route)
    assert not route_patches, f"route patches name routes the VirtualService lacks: {list(route_patches)}"

    bootstrap = _envoy_config(config, "--static-routes")
    hcm = _hcm(bootstrap)
    hcm["http_filters"] = [*filters, hcm["http_filters"][-1]]
    hcm["route_config"] = {"name": "trino", "virtual_hosts": [{"name": "trino", "domains": ["*"], "routes": routes,
                                                             **vhost_patch}]}
    clusters = bootstrap["static_resources"]["clusters"]
    istio_router = copy.deepcopy(next(c for c in clusters if c["name"] == "trino-router"))
    istio_router["name"] = istio_router["load_assignment"]["cluster_name"] = router_cluster
    clusters.append(istio_router)
    validated = harness.validate_envoy_config(yaml.safe_dump(bootstrap))
    assert validated.returncode == 0, validated.stdout[-3000:] + validated.stderr[-3000:]


def test_envoy_gateway_config_fits_the_router_and_its_manifests():
    docs = list(yaml.safe_load_all(ENVOY_GATEWAY.read_text()))
    kinds = [d["kind"] for d in docs]
    assert kinds == ["Gateway", "HTTPRoute", "EnvoyExtensionPolicy", "EnvoyExtensionPolicy", "ReferenceGrant"]
    route = docs[1]
    rule_names = {r["name"] for r in route["spec"]["rules"]}
    router_config = yaml.safe_load(_documents()["ConfigMap"]["data"]["router.yaml"])
    header_values = {h["value"] for r in route["spec"]["rules"] for m in r["matches"] for h in m.get("headers", [])}
    assert header_values and header_values <= {c["name"] for c in router_config["clusters"]}, header_values
    service = _documents()["Service"]
    grpc_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    for policy in docs[2:4]:
        for target in policy["spec"]["targetRefs"]:
            assert target["name"] == route["metadata"]["name"]
            assert target.get("sectionName", "new-statement") in rule_names, target
        for ext in policy["spec"]["extProc"]:
            backend = ext["backendRefs"][0]
            assert (backend["name"], backend["port"]) == (service["metadata"]["name"], grpc_port)
    # decide on every rule; decide with the SQL, then learn, on the new-statement rules.
    whole, statements = docs[2]["spec"]["extProc"], docs[3]["spec"]["extProc"]
    assert [list(e["processingMode"]) for e in whole] == [["request", "allowModeOverride"]]
    assert statements[0]["processingMode"]["request"] == {"body": "BufferedPartial"}
    assert "request" not in statements[1]["processingMode"] and statements[1]["failOpen"] is True
    assert statements[0]["metadata"]["writableNamespaces"] == statements[1]["metadata"]["accessibleNamespaces"]
    new_statement_rules = {r["name"] for r in route["spec"]["rules"]
                           if any(m.get("method") == "POST" for m in r["matches"])}
    assert {t["sectionName"] for t in docs[3]["spec"]["targetRefs"]} == new_statement_rules
