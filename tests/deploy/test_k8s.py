"""The Kubernetes manifests (deploy/k8s/): schema-valid, and consistent with the image and the
catalog they carry.

`kubernetes-validate --strict` checks every manifest against the bundled Kubernetes schemas
(offline); a deliberately broken copy proves the linter does reject. The rest are the mistakes
a schema cannot see: probes on the right paths and port, the catalog mounted where
GATEWAY_CONFIG says, a catalog that loads, every provider variable in the Secret, the image's
non-root user.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from app.catalog.loader import load_catalog
from tests.support.deploy import ROOT, provider_variables

K8S = ROOT / "deploy" / "k8s"
VALIDATOR = Path(sys.executable).parent / "kubernetes-validate"


def manifests() -> dict[str, dict[str, Any]]:
    """kind -> manifest, for every Kubernetes resource file (not the kustomization)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        document = yaml.safe_load(path.read_text())
        if document["kind"] != "Kustomization":
            found[document["kind"]] = document
    return found


def validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VALIDATOR), "--strict", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_every_manifest_passes_the_schema_linter() -> None:
    paths = [p for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml"]
    assert {yaml.safe_load(p.read_text())["kind"] for p in paths} >= {
        "Deployment",
        "Service",
        "Secret",
        "ConfigMap",
    }
    done = validate(*paths)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(" passed ") == len(paths), done.stdout


def test_the_linter_rejects_a_broken_manifest(tmp_path: Path) -> None:
    broken = tmp_path / "deployment.yaml"
    text = (K8S / "deployment.yaml").read_text()
    broken.write_text(text.replace("  replicas: 3", "  replica: 3"))  # a typo strict catches
    done = validate(broken)
    assert done.returncode != 0, done.stdout
    assert "replica" in done.stdout + done.stderr


def test_kustomization_lists_every_manifest() -> None:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == on_disk


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]  # type: ignore[no-any-return]


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container(deployment)["env"]}


def test_probes_point_at_the_gateway() -> None:
    deployment = manifests()["Deployment"]
    gateway = container(deployment)
    ports = {port["name"]: port["containerPort"] for port in gateway["ports"]}
    assert ports["http"] == int(env_of(deployment)["GATEWAY_PORT"]) == 8000
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert gateway["startupProbe"]["httpGet"]["path"] == "/healthz"
    service = manifests()["Service"]
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_the_catalog_configmap_is_mounted_where_gateway_config_points_and_loads(
    tmp_path: Path,
) -> None:
    items = manifests()
    deployment, configmap = items["Deployment"], items["ConfigMap"]
    mounts = {m["name"]: m["mountPath"] for m in container(deployment)["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    catalog_volume = next(n for n, v in volumes.items() if "configMap" in v)
    assert volumes[catalog_volume]["configMap"]["name"] == configmap["metadata"]["name"]
    (file_name,) = configmap["data"]
    assert env_of(deployment)["GATEWAY_CONFIG"] == f"{mounts[catalog_volume]}/{file_name}"

    path = tmp_path / file_name
    path.write_text(configmap["data"][file_name])
    catalog = load_catalog(path, {"OPENAI_API_KEY": "sk-test"})
    assert {"local-preview", "gpt-image-1"} <= set(catalog.models)
    without_key = load_catalog(path, {})
    assert "gpt-image-1" in without_key.hidden  # an empty Secret value hides, never crashes


def test_the_secret_carries_every_provider_variable_and_the_required_settings() -> None:
    items = manifests()
    secret = items["Secret"]["stringData"]
    configmap_text = next(iter(items["ConfigMap"]["data"].values()))
    in_configmap = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", configmap_text))
    assert in_configmap and in_configmap <= set(secret)
    assert provider_variables() <= set(secret)  # the shipped catalog's providers too
    assert {"DATABASE_URL", "GATEWAY_ADMIN_TOKEN", "REDIS_URL"} <= set(secret)
    env_from = container(items["Deployment"])["envFrom"]
    assert {"secretRef": {"name": items["Secret"]["metadata"]["name"]}} in env_from


def test_pods_run_as_the_images_non_root_user() -> None:
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    uid = re.search(r"useradd [^\n]*--uid (\d+)", dockerfile)
    gid = re.search(r"groupadd [^\n]*--gid (\d+)", dockerfile)
    assert uid and gid
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(uid.group(1))
    assert pod["securityContext"]["runAsGroup"] == int(gid.group(1))
    assert container(manifests()["Deployment"])["securityContext"]["readOnlyRootFilesystem"]
