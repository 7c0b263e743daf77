#!/usr/bin/env python3
"""Offline checks of deploy/kubernetes, run by scripts/check-deploy in its venv (PyYAML and
kubernetes-validate from deploy/requirements.txt). Nothing is contacted: no cluster, no registry.

For the base and each overlay:

1. Render it. The manifests use a small part of kustomize (resources, RFC 6902 JSON patches
   with a target, images), which this script applies itself, failing on any other field of a
   kustomization.yaml. When kubectl is on PATH, `kubectl kustomize` renders it too and the two
   must give the same objects.
2. Validate every object with kubernetes-validate, strict (unknown fields are errors), against
   the oldest and newest Kubernetes versions in VERSIONS.
3. Check what ties the manifests to the service: the listen ports in the settings are the
   container's ports, which the probes, the Service, the NetworkPolicy and the scrape annotation
   name; the pod runs as the Dockerfile's USER, hardened; secrets come only from secretKeyRef.
4. Run `ams-thumbnails check-config` (the binary named by AMS_THUMBNAILS_BIN) with the
   container's environment: the ConfigMaps' data, its env values, a placeholder for each Secret
   key and the variables the workload identity webhook injects, in an empty working directory
   (the container runs in /, away from the image's config/default.toml).

Usage: check-deploy.py ROOT_OF_THE_REPOSITORY KUSTOMIZATION_DIR...
"""

import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import kubernetes_validate
import yaml

VERSIONS = ["1.30.0", "1.37.0"]

# A stand-in for every Secret key the manifests reference (check-config needs a value of the
# right shape); a reference missing here fails the check.
SECRET_PLACEHOLDERS = {
    ("ams-thumbnails-auth", "api-keys"): '[{name="frontend", sha256="'
    + "0" * 64
    + '", roles=["api"]}, {name="operator", sha256="'
    + "1" * 64
    + '", roles=["admin", "ops"]}]',
    ("ams-thumbnails-mkio", "token"): "placeholder-mkio-token",
    ("ams-thumbnails-redis", "url"): "rediss://:placeholder@contoso.redis.cache.windows.net:6380",
}

# Settings that are secrets: never in a ConfigMap, never a literal env value.
SECRET_SETTINGS = {
    "AMS_THUMBNAILS_STORAGE__ACCOUNT_KEY",
    "AMS_THUMBNAILS_CREDENTIAL__CLIENT_SECRET",
    "AMS_THUMBNAILS_SOURCE__TOKEN",
    "AMS_THUMBNAILS_CACHE__SHARED__URL",
    "AMS_THUMBNAILS_CACHE__SHARED__PASSWORD",
    "AMS_THUMBNAILS_AUTH__API_KEYS",
}

KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "patches", "images"}


class Failed(Exception):
    pass


def load_docs(path: Path) -> list:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


# --- rendering -----------------------------------------------------------------------------


def render(directory: Path) -> list:
    kustomization = directory / "kustomization.yaml"
    spec = load_docs(kustomization)[0]
    unknown = set(spec) - KUSTOMIZATION_FIELDS
    if unknown:
        raise Failed(f"{kustomization}: fields this renderer does not apply: {sorted(unknown)}")
    objects = []
    for resource in spec.get("resources", []):
        path = directory / resource
        objects += render(path) if path.is_dir() else load_docs(path)
    for patch in spec.get("patches", []):
        if "path" in patch:
            ops = load_docs(directory / patch["path"])[0]
        else:
            ops = yaml.safe_load(patch["patch"])
        if not isinstance(ops, list):
            raise Failed(f"{kustomization}: only JSON 6902 patches (a list of operations)")
        target = patch.get("target") or {}
        matched = [o for o in objects if matches(o, target)]
        if not matched:
            raise Failed(f"{kustomization}: patch target {target} matches nothing")
        for obj in matched:
            for op in ops:
                apply_op(obj, op)
    for image in spec.get("images", []):
        for obj in objects:
            set_image(obj, image)
    return objects


def matches(obj: dict, target: dict) -> bool:
    api_version = obj.get("apiVersion", "")
    group, _, version = api_version.rpartition("/")
    checks = {
        "kind": obj.get("kind"),
        "name": obj.get("metadata", {}).get("name"),
        "group": group,
        "version": version,
    }
    return all(checks.get(key) == value for key, value in target.items())


def apply_op(obj: dict, op: dict) -> None:
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in op["path"].split("/")[1:]]
    parent = obj
    for token in tokens[:-1]:
        parent = parent[int(token)] if isinstance(parent, list) else parent[token]
    last = tokens[-1]
    kind = op["op"]
    if kind == "add":
        if isinstance(parent, list):
            index = len(parent) if last == "-" else int(last)
            parent.insert(index, copy.deepcopy(op["value"]))
        else:
            parent[last] = copy.deepcopy(op["value"])
    elif kind == "replace":
        if isinstance(parent, list):
            parent[int(last)] = copy.deepcopy(op["value"])
        else:
            if last not in parent:
                raise Failed(f"replace {op['path']}: nothing there")
            parent[last] = copy.deepcopy(op["value"])
    elif kind == "remove":
        del parent[int(last) if isinstance(parent, list) else last]
    else:
        raise Failed(f"JSON patch op {kind!r} is not applied by this renderer")


def set_image(obj: dict, image: dict) -> None:
    pod = obj.get("spec", {}).get("template", {}).get("spec", {})
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        ref = container.get("image", "")
        name = ref.split("@")[0]
        if ":" in name.rsplit("/", 1)[-1]:
            name = name.rsplit(":", 1)[0]
        if name != image["name"]:
            continue
        new = image.get("newName", name)
        if "digest" in image:
            new += "@" + image["digest"]
        elif "newTag" in image:
            new += ":" + image["newTag"]
        container["image"] = new


def by_identity(objects: list) -> dict:
    out = {}
    for obj in objects:
        key = (obj["kind"], obj["metadata"]["name"])
        if key in out:
            raise Failed(f"{key} twice")
        out[key] = obj
    return out


def compare_with_kubectl(directory: Path, ours: dict) -> bool:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        return False
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise Failed(f"kubectl kustomize {directory}: {done.stderr.strip()}")
    theirs = by_identity([d for d in yaml.safe_load_all(done.stdout) if d is not None])
    if theirs != ours:
        differing = sorted(
            set(theirs) ^ set(ours) | {k for k in set(theirs) & set(ours) if theirs[k] != ours[k]}
        )
        raise Failed(f"this renderer and kubectl kustomize differ on {differing}")
    return True


# --- checks ----------------------------------------------------------------------------------


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Failed(message)


def dockerfile_user(root: Path) -> int:
    # Every runtime target (lean and with ffmpeg) runs as the same numeric user, the one the
    # manifests' securityContext names.
    users = set(re.findall(r"^USER\s+(\d+)", (root / "Dockerfile").read_text(), re.M))
    check(len(users) == 1, f"Dockerfile: every target should run as one numeric USER, found {sorted(users) or 'none'}")
    return int(users.pop())


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def check_objects(root: Path, objs: dict) -> tuple:
    kinds = {k for k, _ in objs}
    for kind in [
        "Deployment",
        "Service",
        "ServiceAccount",
        "ConfigMap",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
    ]:
        check(kind in kinds, f"no {kind}")
    check("Secret" not in kinds, "a Secret object: secrets are created apart, never committed")
    deployment = objs[("Deployment", "ams-thumbnails")]
    spec = deployment["spec"]
    check(spec["replicas"] == 3, "3 replicas")
    template = spec["template"]
    labels = template["metadata"]["labels"]
    pod = template["spec"]
    container = pod["containers"][0]
    selector = spec["selector"]["matchLabels"]
    check(selector.items() <= labels.items(), "the selector matches the pod's labels")

    # Security.
    pod_security = pod["securityContext"]
    security = container["securityContext"]
    check(pod_security.get("runAsNonRoot") is True, "runAsNonRoot")
    check(pod_security.get("runAsUser") == dockerfile_user(root), "runAsUser is the Dockerfile's USER")
    check(security.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem")
    check(security.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation: false")
    check(security.get("capabilities", {}).get("drop") == ["ALL"], "capabilities: drop: [ALL]")
    for context in (pod_security, security):
        check(context.get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccomp")
    for bound in ("requests", "limits"):
        check({"cpu", "memory"} <= set(container["resources"].get(bound, {})), f"{bound}")
    check(pod.get("topologySpreadConstraints"), "topologySpreadConstraints")
    account = objs[("ServiceAccount", pod["serviceAccountName"])]
    if labels.get("azure.workload.identity/use") == "true":
        check(
            "azure.workload.identity/client-id" in account["metadata"].get("annotations", {}),
            "the ServiceAccount names the workload identity's client id",
        )

    # The environment, and the secrets in it.
    config_maps = {name: o for (kind, name), o in objs.items() if kind == "ConfigMap"}
    env = {}
    for source in container.get("envFrom", []):
        data = config_maps[source["configMapRef"]["name"]].get("data", {})
        leaked = SECRET_SETTINGS & set(data)
        check(not leaked, f"secrets in a ConfigMap: {sorted(leaked)}")
        env.update(data)
    for variable in container.get("env", []):
        name = variable["name"]
        if "value" in variable:
            check(name not in SECRET_SETTINGS, f"{name}: a literal secret")
            env[name] = variable["value"]
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            key = (ref["name"], ref["key"])
            check(key in SECRET_PLACEHOLDERS, f"{name}: no placeholder for Secret {key}")
            env[name] = SECRET_PLACEHOLDERS[key]

    # Ports: settings = container ports = what everything else names.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    check(port_of(env["AMS_THUMBNAILS_SERVER__LISTEN"]) == ports.get("http"), "server.listen = port http")
    check(port_of(env["AMS_THUMBNAILS_METRICS__LISTEN"]) == ports.get("metrics"), "metrics.listen = port metrics")
    for probe, path in [("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
        get = container[probe]["httpGet"]
        check(get["path"] == path and get["port"] in ports, f"{probe}: {path} on a container port")
    annotations = template["metadata"].get("annotations", {})
    check(annotations.get("prometheus.io/port") == str(ports["metrics"]), "prometheus.io/port")
    service = objs[("Service", "ams-thumbnails")]
    check(service["spec"]["selector"].items() <= labels.items(), "the Service selects the pods")
    for port in service["spec"]["ports"]:
        check(port["targetPort"] in ports, f"Service port {port['name']} targets a container port")
    policy = objs[("NetworkPolicy", "ams-thumbnails")]
    for rule in policy["spec"]["ingress"]:
        for port in rule["ports"]:
            check(port["port"] in ports, f"NetworkPolicy ingress port {port['port']}")
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        obj = objs[(kind, "ams-thumbnails")]
        sel = obj["spec"].get("selector") or obj["spec"].get("podSelector")
        check(sel["matchLabels"].items() <= labels.items(), f"the {kind} selects the pods")
    hpa = objs[("HorizontalPodAutoscaler", "ams-thumbnails")]["spec"]
    check(hpa["scaleTargetRef"]["name"] == "ams-thumbnails", "the HPA scales the Deployment")
    check(hpa["minReplicas"] >= 3, "the HPA keeps 3 replicas at least")
    return env, labels, account


def check_config(binary: Path, env: dict, labels: dict, account: dict) -> None:
    with tempfile.TemporaryDirectory() as work:
        env = dict(env)
        if labels.get("azure.workload.identity/use") == "true":
            token = Path(work) / "azure-identity-token"
            token.write_text("placeholder-federated-token")
            env.update(
                {
                    "AZURE_CLIENT_ID": account["metadata"]["annotations"]["azure.workload.identity/client-id"],
                    "AZURE_TENANT_ID": "00000000-0000-0000-0000-000000000000",
                    "AZURE_FEDERATED_TOKEN_FILE": str(token),
                    "AZURE_AUTHORITY_HOST": "https://login.microsoftonline.com/",
                }
            )
        cwd = Path(work) / "app"
        cwd.mkdir()
        done = subprocess.run(
            [str(binary), "check-config"], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
        )
        check(
            done.returncode == 0,
            f"ams-thumbnails check-config refused the environment: {done.stderr.strip()}",
        )
        effective = done.stdout
        for placeholder in SECRET_PLACEHOLDERS.values():
            check(placeholder not in effective, "check-config printed a secret")
        if "AMS_THUMBNAILS_SOURCE__KIND" in env:
            kind = env["AMS_THUMBNAILS_SOURCE__KIND"]
            check(f'kind = "{kind}"' in effective, f"source.kind {kind} in effect")


def main() -> int:
    root = Path(sys.argv[1]).resolve()
    binary = Path(os.environ["AMS_THUMBNAILS_BIN"]).resolve()
    failures = 0
    for argument in sys.argv[2:]:
        directory = (root / argument).resolve()
        name = directory.relative_to(root / "deploy" / "kubernetes")
        try:
            objects = render(directory)
            objs = by_identity(objects)
            same = compare_with_kubectl(directory, objs)
            for obj in objects:
                for version in VERSIONS:
                    try:
                        kubernetes_validate.validate(obj, version, strict=True)
                    except kubernetes_validate.ValidationError as e:
                        where = "/".join(str(p) for p in e.path)
                        raise Failed(
                            f"{obj['kind']}/{obj['metadata']['name']} (Kubernetes {version}): {where}: {e.message}"
                        )
            env, labels, account = check_objects(root, objs)
            check_config(binary, env, labels, account)
            rendered = "rendered = kubectl kustomize" if same else "rendered (no kubectl to compare)"
            print(
                f"check-deploy: {name}: {len(objects)} objects, {rendered}, valid for Kubernetes "
                f"{' and '.join(VERSIONS)} (strict), manifests agree, check-config accepts its environment"
            )
        except Failed as e:
            failures += 1
            print(f"check-deploy: {name}: FAILED: {e}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
