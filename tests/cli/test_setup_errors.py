"""Operator mistakes through the real `image-gateway` executable: one line, exit 2, no traceback.

Subprocesses, not CliRunner, so what is checked is everything a shell would show (logging
included): a warning printed twice or a traceback on stderr would fail these tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).parent / "image-gateway"
#: a port nothing listens on (bound and closed just now)
DEAD_POSTGRES = "postgresql://postgres@127.0.0.1:{port}/nowhere"

UNKNOWN_ADAPTER = """
providers:
  preview: {adapter: local-preview}
  hidden: {adapter: no-such-adapter, api_key: "${IGW_TEST_UNSET_KEY}"}
models:
  local-preview:
    owned_by: me
    routes: [{provider: preview, upstream_model: x}]
    pricing: {per_image: 0.01}
  ghost:
    owned_by: me
    routes: [{provider: hidden, upstream_model: x}]
    pricing: {per_image: 0.01}
"""


def image_gateway(
    *args: str, cwd: Path, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "GATEWAY_"))}
    clean = {k: v for k, v in clean.items() if not k.endswith(("_API_KEY", "_API_TOKEN"))}
    return subprocess.run(
        [str(CLI), *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_exit_2(result: subprocess.CompletedProcess[str], setting: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {setting}: "), result.stderr


def assert_refused_exit_2(result: subprocess.CompletedProcess[str], setting: str) -> None:
    """A catalog error may list several mistakes, one per line, after the first."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {setting}: "), result.stderr


@pytest.mark.parametrize(
    "command",
    [["accounts", "list"], ["keys", "list"], ["requests"], ["ledger", "acct_x"], ["migrate"],
     ["serve", "--port", "0"]],
)  # fmt: skip
def test_an_unreachable_database_is_one_line_naming_database_url(
    command: list[str], tmp_path: Path
) -> None:
    url = DEAD_POSTGRES.format(port=free_port())
    result = image_gateway(*command, cwd=tmp_path, DATABASE_URL=url)
    assert_one_line_exit_2(result, "DATABASE_URL")
    assert "127.0.0.1" in result.stderr and "curl" not in result.stdout


@pytest.mark.parametrize(
    ("setting", "value"),
    [("GATEWAY_DB_POOL_SIZE", "lots"), ("GATEWAY_UPSTREAM_TRANSPORT", "pigeon")],
)
def test_a_bad_setting_is_one_line_naming_it(setting: str, value: str, tmp_path: Path) -> None:
    for command in (["accounts", "list"], ["config", "check"], ["serve"]):
        result = image_gateway(*command, cwd=tmp_path, **{setting: value})
        assert_one_line_exit_2(result, setting)
        assert repr(value) in result.stderr


def test_an_unknown_adapter_on_a_hidden_provider_fails_check_and_serve(tmp_path: Path) -> None:
    catalog = tmp_path / "models.yaml"
    catalog.write_text(UNKNOWN_ADAPTER)
    env = {"GATEWAY_CONFIG": str(catalog), "DATABASE_URL": f"sqlite:///{tmp_path}/gw.db"}
    check = image_gateway("config", "check", cwd=tmp_path, **env)
    assert_one_line_exit_2(check, "GATEWAY_CONFIG")
    assert "providers.hidden" in check.stderr and "'no-such-adapter'" in check.stderr

    serve = image_gateway("serve", "--port", str(free_port()), cwd=tmp_path, **env)
    assert_one_line_exit_2(serve, "GATEWAY_CONFIG")
    assert serve.stderr == check.stderr
    assert serve.stdout == ""  # no banner, no demo key
    assert not (tmp_path / "gw.db").exists()  # nothing migrated either


def test_a_broken_catalog_stops_serve_before_any_banner(tmp_path: Path) -> None:
    catalog = tmp_path / "models.yaml"
    catalog.write_text("providers: {}\nmodels:\n  x: {routes: [{provider: nope}]}\n")
    env = {"GATEWAY_CONFIG": str(catalog), "DATABASE_URL": f"sqlite:///{tmp_path}/gw.db"}
    serve = image_gateway("serve", "--port", str(free_port()), cwd=tmp_path, **env)
    assert_refused_exit_2(serve, "GATEWAY_CONFIG")
    assert "models.x.pricing" in serve.stderr
    assert serve.stdout == ""


def test_config_check_prints_each_warning_once(tmp_path: Path) -> None:
    result = image_gateway("config", "check", cwd=tmp_path)  # shipped catalog, no keys set
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line]
    assert warnings and all(line.startswith("warning: ") for line in warnings), result.stderr
    assert len(warnings) == len(set(warnings))
    assert any("OPENAI_API_KEY" in line for line in warnings)
    assert sum("OPENAI_API_KEY" in line for line in warnings) == 1


def test_the_cli_finds_the_checkout_from_any_directory(tmp_path: Path) -> None:
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    result = image_gateway("config", "check", "--json", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert '"local-preview"' in result.stdout  # ROOT/config/models.yaml, not ./config


def test_settings_defaults_live_under_gateway_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.settings import Settings

    for name in ("DATABASE_URL", "GATEWAY_CONFIG", "GATEWAY_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.gateway_config == ROOT / "config" / "models.yaml"
    assert settings.database_url == f"sqlite+aiosqlite:///{ROOT}/data/image-gateway.db"
    monkeypatch.setenv("GATEWAY_HOME", str(tmp_path))
    assert Settings().gateway_config == tmp_path / "config" / "models.yaml"
    monkeypatch.setenv("GATEWAY_CONFIG", "mine.yaml")  # an explicit path is taken as given
    assert Settings().gateway_config == Path("mine.yaml")


SLOW_MODEL = """
providers:
  preview: {adapter: local-preview, timeout_s: 60}
  slow: {adapter: local-preview, timeout_s: 700}
models:
  local-preview:
    owned_by: me
    routes: [{provider: preview, upstream_model: x}]
    pricing: {per_image: 0.01}
  slow-model:
    owned_by: me
    routes: [{provider: preview, upstream_model: x}, {provider: slow, upstream_model: y}]
    pricing: {per_image: 0.01}
"""


def test_a_model_that_can_outlive_its_hold_stops_check_and_serve(tmp_path: Path) -> None:
    # slow-model's worst case: 60 + 700 s on its routes, plus 120 s (with the default pool and
    # statement timeouts) to finish and settle = 880 s; local-preview's is 180 s
    catalog = tmp_path / "models.yaml"
    catalog.write_text(SLOW_MODEL)
    env = {"GATEWAY_CONFIG": str(catalog), "DATABASE_URL": f"sqlite:///{tmp_path}/gw.db"}
    assert image_gateway("config", "check", cwd=tmp_path, **env).returncode == 0  # 880 < 900

    env["GATEWAY_HOLD_TIMEOUT_S"] = "880"
    check = image_gateway("config", "check", cwd=tmp_path, **env)
    assert_one_line_exit_2(check, "GATEWAY_HOLD_TIMEOUT_S")
    assert '"slow-model"' in check.stderr and "880 s" in check.stderr
    assert "local-preview" not in check.stderr
    serve = image_gateway("serve", "--port", str(free_port()), cwd=tmp_path, **env)
    assert serve.stderr == check.stderr and serve.stdout == ""
    assert not (tmp_path / "gw.db").exists()

    # a statement timeout counts in the margin: 60 + 700 + 60 + 30 + 10 = 860
    env.update(GATEWAY_HOLD_TIMEOUT_S="870", GATEWAY_DB_STATEMENT_TIMEOUT_S="10")
    assert image_gateway("config", "check", cwd=tmp_path, **env).returncode == 0


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("GATEWAY_HOLD_TIMEOUT_S", "0"),
        ("GATEWAY_SWEEP_INTERVAL_S", "-1"),
        ("GATEWAY_IDEMPOTENCY_TTL_S", "0"),
        ("GATEWAY_DB_POOL_TIMEOUT_S", "0"),
        ("GATEWAY_DB_CONNECT_TIMEOUT_S", "0"),
        ("GATEWAY_DB_STATEMENT_TIMEOUT_S", "-5"),
        ("GATEWAY_MAX_REQUEST_BYTES", "0"),
        ("GATEWAY_UPSTREAM_MAX_CONNECTIONS", "0"),
        ("GATEWAY_STREAM_KEEPALIVE_S", "0"),
        ("GATEWAY_DEFAULT_KEY_RPM", "0"),
        ("GATEWAY_LOG_LEVEL", "chatty"),
        ("GATEWAY_DEMO_BALANCE", "1e30"),
    ],
)
def test_settings_out_of_bounds_are_refused_naming_them(setting: str, value: str) -> None:
    from app.preflight import SetupError, load_settings

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(setting, value)
        with pytest.raises(SetupError, match=f"^{setting}: .*{value!r}"):
            load_settings()


@pytest.mark.parametrize(
    ("env", "first"),
    [
        ({"GATEWAY_SWEEP_INTERVAL_S": "900"}, "GATEWAY_SWEEP_INTERVAL_S"),
        ({"GATEWAY_SWEEP_INTERVAL_S": "100", "GATEWAY_HOLD_TIMEOUT_S": "50"},
         "GATEWAY_SWEEP_INTERVAL_S"),
    ],
)  # fmt: skip
def test_settings_that_contradict_each_other_are_refused(
    env: dict[str, str], first: str, tmp_path: Path
) -> None:
    result = image_gateway("config", "check", cwd=tmp_path, **env)
    assert_one_line_exit_2(result, first)


def test_log_level_is_an_enum_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.settings import LogLevel, Settings

    monkeypatch.setenv("GATEWAY_LOG_LEVEL", " DEBUG ")
    assert Settings().log_level is LogLevel.DEBUG
