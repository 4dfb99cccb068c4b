// Validates Kubernetes custom resources against the published models of their CRDs (npm
// @kubernetes-models/istio, /gateway-api, /prometheus-operator, versions pinned in package.json): reads a
// JSON array of objects on stdin, prints one JSON line per object ({kind, name, ok, error}), exits 0.
// An apiVersion/kind it has no model for is an error, never a pass. Used by tests/e2e/test_deploy.py.
const MODELS = {
  "networking.istio.io/v1/Gateway": "@kubernetes-models/istio/networking.istio.io/v1/Gateway",
  "networking.istio.io/v1/VirtualService": "@kubernetes-models/istio/networking.istio.io/v1/VirtualService",
  "networking.istio.io/v1alpha3/EnvoyFilter": "@kubernetes-models/istio/networking.istio.io/v1alpha3/EnvoyFilter",
  "gateway.networking.k8s.io/v1/Gateway": "@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/Gateway",
  "gateway.networking.k8s.io/v1/HTTPRoute": "@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/HTTPRoute",
  "gateway.networking.k8s.io/v1beta1/ReferenceGrant":
    "@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1beta1/ReferenceGrant",
  "monitoring.coreos.com/v1/ServiceMonitor":
    "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor",
};

let input = "";
for await (const chunk of process.stdin) input += chunk;
for (const object of JSON.parse(input)) {
  const key = `${object.apiVersion}/${object.kind}`;
  const result = { kind: object.kind, apiVersion: object.apiVersion, name: object.metadata?.name, ok: false };
  try {
    if (!MODELS[key]) throw new Error(`no model for ${key}`);
    const module = await import(MODELS[key]);
    new module[object.kind](object).validate();
    result.ok = true;
  } catch (error) {
    result.error = String(error.message ?? error);
  }
  console.log(JSON.stringify(result));
}
