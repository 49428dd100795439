"""Schema checks of infra/k8s/ without a cluster (run by infra/check.sh).

    .venv/bin/python infra/check_k8s.py --dask-kubernetes-wheel WHEEL [--kubernetes-version 1.33]

1. k8s/daskcluster.yaml against the `DaskCluster` CRD of the Dask operator, as its chart
   installs it (`crds/daskcluster.yaml` inside the dask-kubernetes wheel of the chart's version,
   which check.sh downloads once with pip), strictly: a field the CRD does not declare is an
   error, as with `kubectl apply --validate=strict` (a CRD's structural schema would otherwise
   drop it silently).
2. The pod specs and the service spec inside that DaskCluster against Kubernetes' own schemas
   (PodSpec, ServiceSpec; kubernetes-validate's offline copies, strict).
3. The Kubernetes objects inside the Helm values files (resources, env lists) against the
   same schemas: the values files are not manifests, and the Prefect and MLflow charts cannot
   be rendered here (no Helm, no chart repository), so these are the parts that have a schema.
4. k8s/dask-operator.values.yaml: every key exists in the operator chart's values.yaml (also
   inside the wheel).
Prints one line per problem and exits 1 when there is any.
"""

import argparse
import copy
import sys
import zipfile
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

K8S = Path(__file__).resolve().parent / "k8s"
CRD = "dask_kubernetes/operator/deployment/helm/dask-kubernetes-operator/crds/daskcluster.yaml"
CHART_VALUES = "dask_kubernetes/operator/deployment/helm/dask-kubernetes-operator/values.yaml"
# Kubernetes objects inside the Helm values: (file, path to the value, what it is)
VALUES_OBJECTS = [
    ("prefect-worker.values.yaml", ("worker", "resources"), "resources"),
    ("prefect-worker.values.yaml", ("worker", "extraEnvVars"), "env"),
    ("prefect-server.values.yaml", ("global", "prefect", "env"), "env"),
    ("mlflow.values.yaml", ("resources",), "resources"),
    ("dask-operator.values.yaml", ("resources",), "resources"),
]

problems: list[str] = []


def strict(schema: dict) -> dict:
    """The schema with additionalProperties: false wherever it lists properties and neither
    allows more nor preserves unknown fields (the API server's strict field validation)."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node \
                    and not node.get("x-kubernetes-preserve-unknown-fields"):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def check_k8s_object(where: str, kind: str, spec, version: str) -> None:
    """A PodSpec ('pod'), ServiceSpec ('service'), ResourceRequirements ('resources') or list
    of EnvVar ('env'), validated as part of a minimal Pod or Service."""
    meta = {"name": "check"}
    if kind == "pod":
        obj = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
    elif kind == "service":
        obj = {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}
    else:
        container = {"name": "check", "image": "check", kind: spec}
        obj = {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
               "spec": {"containers": [container]}}
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.absolute_path)
        problems.append(f"{where}: {e.message} (at {path} of the {kind} object, "
                        f"Kubernetes {version})")


def check_daskcluster(wheel: zipfile.ZipFile, version: str) -> None:
    crd = yaml.safe_load(wheel.read(CRD))
    path = K8S / "daskcluster.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        api_version = doc.get("apiVersion", "")
        served = {f"{crd['spec']['group']}/{v['name']}": v for v in crd["spec"]["versions"]}
        if doc.get("kind") != crd["spec"]["names"]["kind"] or api_version not in served:
            problems.append(f"{path.name}: {doc.get('kind')} {api_version} is not the CRD's "
                            f"kind/version ({', '.join(served)})")
            continue
        schema = copy.deepcopy(served[api_version]["schema"]["openAPIV3Schema"])
        # the API server's own fields of every object, not declared by a CRD
        schema.setdefault("properties", {}).update(
            apiVersion={"type": "string"}, kind={"type": "string"}, metadata={"type": "object"})
        schema = strict(schema)
        for err in sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=str):
            where = ".".join(str(p) for p in err.absolute_path)
            problems.append(f"{path.name}: {err.message} (at {where}; DaskCluster CRD)")
        spec = doc.get("spec", {})
        check_k8s_object(f"{path.name}: spec.worker.spec", "pod",
                         spec.get("worker", {}).get("spec", {}), version)
        check_k8s_object(f"{path.name}: spec.scheduler.spec", "pod",
                         spec.get("scheduler", {}).get("spec", {}), version)
        check_k8s_object(f"{path.name}: spec.scheduler.service", "service",
                         spec.get("scheduler", {}).get("service", {}), version)


def check_values_objects(version: str) -> None:
    for name, keys, kind in VALUES_OBJECTS:
        node = yaml.safe_load((K8S / name).read_text())
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        if node is None:
            problems.append(f"{name}: no {'.'.join(keys)} (check_k8s.py expects one)")
            continue
        check_k8s_object(f"{name}: {'.'.join(keys)}", kind, node, version)


def unknown_keys(ours, chart, path=()):
    """Keys of our values that the chart's values.yaml does not have (only below mappings the
    chart fills in: an empty mapping in the chart takes any keys)."""
    if not isinstance(ours, dict) or not isinstance(chart, dict) or not chart:
        return
    for key, value in ours.items():
        if key not in chart:
            yield ".".join(path + (key,))
        else:
            yield from unknown_keys(value, chart[key], path + (key,))


def check_operator_values(wheel: zipfile.ZipFile) -> None:
    chart = yaml.safe_load(wheel.read(CHART_VALUES))
    ours = yaml.safe_load((K8S / "dask-operator.values.yaml").read_text())
    for key in unknown_keys(ours, chart):
        problems.append(f"dask-operator.values.yaml: {key} is not a value of the chart")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dask-kubernetes-wheel", required=True, type=Path)
    ap.add_argument("--kubernetes-version", default="1.33")
    args = ap.parse_args()
    with zipfile.ZipFile(args.dask_kubernetes_wheel) as wheel:
        check_daskcluster(wheel, args.kubernetes_version)
        check_operator_values(wheel)
    check_values_objects(args.kubernetes_version)
    for p in problems:
        print(f"k8s: {p}", file=sys.stderr)
    if not problems:
        print(f"k8s: daskcluster.yaml valid against the DaskCluster CRD of "
              f"{args.dask_kubernetes_wheel.name} (strict) and its pod/service specs against "
              f"Kubernetes {args.kubernetes_version}; {len(VALUES_OBJECTS)} objects in the Helm "
              f"values valid; dask-operator.values.yaml keys exist in the chart")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
