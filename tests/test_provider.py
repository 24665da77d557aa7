"""The package registers itself with Airflow as a provider, with its connection type and form."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import airflow_provider_wdata
from airflow_provider_wdata import get_provider_info
from airflow_provider_wdata.connection_form import CONN_FIELDS
from airflow_provider_wdata.hooks.wdata import WdataHook

AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def test_provider_info_matches_airflow_schema():
    import jsonschema
    from airflow import providers_manager

    schema_path = Path(providers_manager.__file__).with_name("provider_info.schema.json")
    jsonschema.validate(get_provider_info(), json.loads(schema_path.read_text()))
    info = get_provider_info()
    assert info["package-name"] == "airflow-provider-wdata"
    assert info["versions"] == [airflow_provider_wdata.__version__]
    [conn_type] = info["connection-types"]
    assert conn_type["connection-type"] == WdataHook.conn_type == "wdata"
    assert conn_type["hook-name"] == WdataHook.hook_name == "Workiva Wdata"
    assert conn_type["hook-class-name"] == f"{WdataHook.__module__}.{WdataHook.__qualname__}"


def test_every_listed_module_imports():
    import importlib

    info = get_provider_info()
    for kind in ("hooks", "sensors", "triggers", "operators"):
        for entry in info[kind]:
            for module in entry["python-modules"]:
                importlib.import_module(module)


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-home")
    return {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {"AIRFLOW_HOME": str(home)}


def airflow_cli(env, *args: str) -> str:
    result = subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_airflow_lists_the_provider_and_its_hook(cli_env):
    providers = airflow_cli(cli_env, "providers", "list", "--output", "plain")
    assert any(line.split()[:1] == ["airflow-provider-wdata"] for line in providers.splitlines()), providers
    hooks = airflow_cli(cli_env, "providers", "hooks", "--output", "plain")
    [line] = [line for line in hooks.splitlines() if line.split()[:1] == ["wdata"]]
    assert "airflow_provider_wdata.hooks.wdata.WdataHook" in line


def test_legacy_form_uses_only_field_classes_that_airflow_renders():
    """Airflow 2.11-3.1 drop the whole hook (no form, no Test button, no get_hook) when one of its form fields
    is of another class than these four."""
    wtforms = pytest.importorskip("wtforms")
    pytest.importorskip("flask_appbuilder")
    widgets = WdataHook.get_connection_form_widgets()
    assert set(widgets) == set(CONN_FIELDS)
    allowed = {wtforms.StringField, wtforms.IntegerField, wtforms.BooleanField, wtforms.PasswordField}
    assert {name: field.field_class for name, field in widgets.items() if field.field_class not in allowed} == {}


def test_the_ui_gets_the_whole_form():
    """What the React UI (Airflow 3.1+) reads from GET /ui/connections/hook_meta."""
    from importlib.metadata import version

    if version("apache-airflow").startswith(("2.", "3.0.")):
        pytest.skip("no hook_meta form without the FAB provider before Airflow 3.1")
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    meta = next(m for m in HookMetaService.hook_meta_data() if m.connection_type == "wdata")
    assert meta.hook_name == "Workiva Wdata"
    standard = meta.standard_fields
    assert (standard.login.title, standard.password.title, standard.host.title) == (
        "Client ID",
        "Client Secret",
        "Base URL (optional)",
    )
    assert standard.url_schema.hidden and standard.port.hidden
    assert set(meta.extra_fields) == set(CONN_FIELDS)
    assert meta.extra_fields["region"]["schema"]["enum"] == ["us", "eu", "apac"]
    assert [meta.extra_fields[name]["schema"]["title"] for name in CONN_FIELDS] == [
        field["label"] for field in CONN_FIELDS.values()
    ]
