"""The container image, built and run for real; the compose file, validated.

Docker's engine comes from Debian's packages and runs with `--bridge=none --iptables=false`
(`scripts/docker-engine`), so the container shares the host network and talks to loopback only.
No registry is reachable, so the image is built on a local base (`scripts/docker-base`:
debootstrap + `docker import`) through the Dockerfile's `BASE_IMAGE` argument; the default base
stays the official slim Python image. pip inside the build gets this machine's CA bundle
($PIP_CERT) as a build secret, and the test proves it is in no layer of the result.

The container runs against a fresh database on the test Postgres (it migrates on start),
with a test catalog mounted over the image's, and serves one `local-preview` generation to the
official `openai` SDK before it is stopped. The image size and the cold start (from
`docker run` to ready) are printed (`-s`) and bounded generously.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from PIL import Image

from tests.support import databases
from tests.support.books import assert_books_balance
from tests.support.deploy import ROOT, docker, docker_or_skip, provider_variables, run
from tests.support.live import ADMIN_TOKEN
from tests.support.processes import free_port
from tests.support.served import run_db

pytestmark = pytest.mark.slow

IMAGE = "image-gateway:ci"

CATALOG = """
providers:
  local: {adapter: local-preview}
models:
  local-preview:
    routes: [{provider: local}]
    parameters:
      width:  {type: integer, min: 64, max: 1024, multiple_of: 8, default: 256}
      height: {type: integer, min: 64, max: 1024, multiple_of: 8, default: 256}
    pricing: {per_image: 0.004}
"""

#: generous: the image is ~350 MB on the debootstrap base, the start 7-15 s
MAX_IMAGE_BYTES = 800 * 1024 * 1024
MAX_COLD_START_S = 120.0


@pytest.fixture(scope="module")
def base_image() -> str:
    docker_or_skip()
    made = run([str(ROOT / "scripts" / "docker-base")], timeout=1800)
    return made.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def image(base_image: str) -> str:
    command = [
        *docker(),
        "build",
        "--network",
        "host",
        "--build-arg",
        f"BASE_IMAGE={base_image}",
        "-t",
        IMAGE,
    ]
    cert = os.environ.get("PIP_CERT")
    if cert and Path(cert).is_file():
        command += ["--secret", f"id=pip_cert,src={cert}"]
    run([*command, str(ROOT)], timeout=1800, env={"DOCKER_BUILDKIT": "1"})
    return IMAGE


@pytest.fixture
def container_database() -> Iterator[str]:
    """An empty database (not migrated: the container does that on start)."""
    problem = databases.postgres_error()
    if problem:
        pytest.fail(problem) if os.environ.get("CI") == "true" else pytest.skip(problem)
    name = f"igw_container_{os.getpid()}"
    databases.drop_postgres_database(name)
    run_db_admin(f'CREATE DATABASE "{name}"')
    base, _, _ = databases.ADMIN_URL.rpartition("/")
    yield f"{base}/{name}"
    databases.drop_postgres_database(name)


def run_db_admin(sql: str) -> None:
    import asyncio

    asyncio.run(databases._admin(sql))


def wait_ready(url: str, deadline_s: float) -> str:
    """Poll `/readyz` (or `/healthz` where this code has no `/readyz` yet) until it answers 200;
    returns the probe that did."""
    deadline = time.monotonic() + deadline_s
    probe = "/readyz"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url + probe, timeout=2)
            if response.status_code == 200:
                return probe
            if response.status_code == 404 and probe == "/readyz":
                probe = "/healthz"  # not merged on this branch yet: the process probe
                continue
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url}{probe} did not answer 200 within {deadline_s} s")


def inspect(name: str, template: str) -> str:
    return run([*docker(), "inspect", "--format", template, name]).stdout.strip()


def test_image_builds_runs_migrates_and_serves_a_generation(
    image: str, container_database: str, tmp_path: Path
) -> None:
    size = int(run([*docker(), "image", "inspect", "--format", "{{.Size}}", image]).stdout)
    config = json.loads(
        run([*docker(), "image", "inspect", "--format", "{{json .Config}}", image]).stdout
    )
    assert config["User"] and not config["User"].startswith(("root", "0")), config["User"]
    assert "/readyz" in " ".join(config["Healthcheck"]["Test"])
    assert size < MAX_IMAGE_BYTES

    catalog = tmp_path / "models.yaml"
    catalog.write_text(CATALOG)
    catalog.chmod(0o644)
    port = free_port()
    name = f"igw-ci-{os.getpid()}"
    started = time.monotonic()
    run(
        [
            *docker(),
            "run",
            "--detach",
            "--name",
            name,
            "--network",
            "host",
            "--health-interval",
            "2s",
            # as the Kubernetes manifest runs it: read-only root, no capabilities, /tmp in memory
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--env",
            f"DATABASE_URL={container_database}",
            "--env",
            f"GATEWAY_ADMIN_TOKEN={ADMIN_TOKEN}",
            "--env",
            "GATEWAY_HOST=127.0.0.1",
            "--env",
            f"GATEWAY_PORT={port}",
            "--volume",
            f"{catalog}:/srv/image-gateway/config/models.yaml:ro",
            image,
        ]
    )
    url = f"http://127.0.0.1:{port}"
    try:
        probe = wait_ready(url, MAX_COLD_START_S)
        cold_start_s = time.monotonic() - started
        print(f"\nimage {image}: {size / 1e6:.0f} MB; cold start to {probe}: {cold_start_s:.1f} s")

        assert inspect(name, "{{.Config.User}}") == "gateway:gateway"
        uid = run([*docker(), "exec", name, "id", "-u"]).stdout.strip()
        assert uid != "0"

        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        account = httpx.post(
            f"{url}/admin/v1/accounts", headers=admin, json={"name": "ci", "balance": 1}
        )
        assert account.status_code == 201, account.text
        account_id = account.json()["id"]
        key = httpx.post(
            f"{url}/admin/v1/accounts/{account_id}/keys", headers=admin, json={"name": "ci"}
        )
        assert key.status_code == 201, key.text

        client = openai.OpenAI(base_url=f"{url}/v1", api_key=key.json()["key"], max_retries=0)
        assert [m.id for m in client.models.list()] == ["local-preview"]  # the mounted catalog
        result = client.images.generate(model="local-preview", prompt="a harbour", size="128x64")
        picture = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json or "")))
        assert picture.size == (128, 64)
        assert result.to_dict()["usage"]["cost"]["total_cost"] == pytest.approx(0.004)

        if probe == "/readyz":  # the image's HEALTHCHECK probes /readyz: docker must agree
            deadline = time.monotonic() + 60
            while inspect(name, "{{.State.Health.Status}}") != "healthy":
                assert time.monotonic() < deadline, inspect(name, "{{json .State.Health}}")
                time.sleep(0.5)

        run([*docker(), "stop", "--time", "30", name], timeout=60)
        assert inspect(name, "{{.State.ExitCode}}") == "0", container_log(name)
    finally:
        log = container_log(name)
        subprocess.run([*docker(), "rm", "--force", name], capture_output=True, check=False)
    assert "Traceback" not in log, log
    balance = run_db(container_database, lambda engine: assert_books_balance(engine, account_id))
    assert balance == 1_000_000 - 4_000


def container_log(name: str) -> str:
    done = subprocess.run([*docker(), "logs", name], capture_output=True, text=True, check=False)
    return done.stdout + done.stderr


def test_pip_ca_bundle_is_in_no_layer_of_the_image(image: str, base_image: str) -> None:
    """Certificates that only this machine's bundle has (not the base image's own bundle)
    must not be anywhere in the final image: the secret stayed in the build stage."""
    cert = os.environ.get("PIP_CERT")
    if not cert or not Path(cert).is_file():
        pytest.skip("no PIP_CERT bundle on this machine: nothing that could leak")
    ours = set(pem_bodies(Path(cert).read_text()))
    in_base = [*docker(), "run", "--rm", "--network", "none", "--entrypoint", "cat", base_image]
    bundle = run([*in_base, "/etc/ssl/certs/ca-certificates.crt"], check=False).stdout
    theirs = set(pem_bodies(bundle))
    local_only = sorted(ours - theirs)
    if not local_only:
        pytest.skip("this machine's CA bundle has no certificate the base image lacks")
    # one line of each local-only certificate, searched for in every file of the image
    needles = [body.splitlines()[len(body.splitlines()) // 2] for body in local_only]
    patterns = [arg for needle in needles for arg in ("-e", needle)]
    folders = ["/opt", "/srv", "/etc", "/usr", "/root", "/home", "/tmp", "/var"]
    grep = [*docker(), "run", "--rm", "--network", "none", "--user", "0", "--entrypoint", "grep"]
    scan = run([*grep, image, "-rlF", *patterns, *folders], check=False, timeout=600)
    # grep: 1 = no file matched (0 = found, 2 = could not search)
    assert scan.returncode == 1, f"the build's CA bundle leaked into: {scan.stdout}{scan.stderr}"
    history = run([*docker(), "history", "--no-trunc", image]).stdout
    assert not any(needle in history for needle in needles)


def pem_bodies(text: str) -> list[str]:
    return [
        match.group(1).strip()
        for match in re.finditer(
            r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", text, re.S
        )
    ]


# -- docker-compose.yml ------------------------------------------------------------------------
def compose_config(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run(
        ["docker-compose", "--file", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        env={**base, **env},
        cwd=ROOT,
        check=False,
        timeout=120,
    )


def test_compose_file_is_valid_and_passes_every_provider_variable_through() -> None:
    docker_or_skip(engine=False, tool="docker-compose")
    done = compose_config(GATEWAY_ADMIN_TOKEN="x" * 40, OPENAI_API_KEY="sk-from-the-shell")
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    assert set(config["services"]) == {"gateway", "postgres", "redis"}
    gateway = config["services"]["gateway"]
    environment = gateway["environment"]
    variables = provider_variables()
    assert {"OPENAI_API_KEY", "OPENAI_BASE_URL", "FAL_KEY"} <= variables  # read the catalog
    assert variables <= set(environment), sorted(variables - set(environment))
    assert environment["OPENAI_API_KEY"] == "sk-from-the-shell"
    assert environment["GATEWAY_ADMIN_TOKEN"] == "x" * 40
    assert environment["DATABASE_URL"].startswith("postgresql://")
    assert environment["REDIS_URL"].startswith("redis://redis:")
    assert "/readyz" in " ".join(gateway["healthcheck"]["test"])
    assert gateway["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert any(
        "/srv/image-gateway/config/models.yaml" in str(volume) for volume in gateway["volumes"]
    )


def test_compose_refuses_to_start_without_an_admin_token() -> None:
    docker_or_skip(engine=False, tool="docker-compose")
    done = compose_config()
    assert done.returncode != 0
    assert "GATEWAY_ADMIN_TOKEN" in done.stderr
