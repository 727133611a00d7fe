"""`/openapi.json` describes what the gateway really does; `/docs` works offline.

The schemathesis runs (`tests/e2e/test_openapi_fuzz.py`) check the answers against the
document; these check the document's own promises, on the application without a server.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.support.live import ADMIN_TOKEN


def _document(tmp_path: Path, admin_token: str = ADMIN_TOKEN) -> dict[str, Any]:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/x.db", admin_token=admin_token))
    return app.openapi()


def test_the_image_routes_document_their_real_bodies(tmp_path: Path) -> None:
    paths = _document(tmp_path)["paths"]
    generation = paths["/v1/images/generations"]["post"]["requestBody"]["content"]
    edit = paths["/v1/images/edits"]["post"]["requestBody"]["content"]
    assert set(generation) == {"application/json"}
    assert set(edit) == {"multipart/form-data", "application/json"}
    schemas = _document(tmp_path)["components"]["schemas"]
    form = schemas["ImageEditForm"]["properties"]
    assert form["image"]["format"] == "binary" and form["image[]"]["items"]["format"] == "binary"
    assert {"model", "prompt"} <= set(schemas["ImageGenerationRequest"]["required"])
    assert "images" in schemas["ImageEditJsonRequest"]["required"]
    answer = paths["/v1/images/generations"]["post"]["responses"]["200"]["content"]
    assert set(answer) == {"application/json", "text/event-stream"}


def test_every_operation_has_its_security_and_the_error_object_and_no_422(
    tmp_path: Path,
) -> None:
    document = _document(tmp_path)
    schemes = document["components"]["securitySchemes"]
    assert schemes["ApiKey"]["scheme"] == schemes["AdminToken"]["scheme"] == "bearer"
    assert "HTTPValidationError" not in document["components"]["schemas"]
    seen: set[str] = set()
    for path, operations in document["paths"].items():
        for operation in operations.values():
            expected = "AdminToken" if path.startswith("/admin/") else "ApiKey"
            assert operation["security"] == [{expected: []}]
            assert "422" not in operation["responses"]
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    seen.add(status)
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorResponse"}
    assert seen == {"400", "401", "402", "403", "404", "409", "413", "429", "502", "503", "504"}


def test_admin_paths_are_documented_only_when_the_admin_api_is_on(tmp_path: Path) -> None:
    assert any(path.startswith("/admin/") for path in _document(tmp_path)["paths"])
    off = _document(tmp_path, admin_token="")
    assert not any(path.startswith("/admin/") for path in off["paths"])
    assert "AccountOut" not in off["components"]["schemas"]


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/x.db", admin_token=ADMIN_TOKEN))
    return TestClient(app)  # no lifespan needed: the docs touch no database


def test_swagger_ui_is_served_without_any_cdn(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    urls += re.findall(r"""url: ?["']([^"']+)["']""", page.text)
    assert urls and all(url.startswith("/") for url in urls), urls
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
    bundle = client.get("/docs/assets/swagger-ui-bundle.js")
    assert len(bundle.content) > 500_000 and b"SwaggerUIBundle" in bundle.content
    assert client.get("/docs/assets/LICENSE").text.lstrip().startswith("Apache License")
