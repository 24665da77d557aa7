"""Apache Airflow provider for the Workiva Wdata Prep API."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "get_provider_info"]


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow's providers manager (entry point ``apache_airflow_provider``)."""
    from airflow_provider_wdata.connection_form import CONN_FIELDS, UI_FIELD_BEHAVIOUR

    # The ``wdata`` asset URI scheme (see airflow_provider_wdata.assets): Airflow 3 reads ``asset-uris``,
    # Airflow 2.11 ``dataset-uris``.
    uri_schemes = [
        {
            "schemes": ["wdata"],
            "handler": "airflow_provider_wdata.assets.normalize_uri",
            "factory": "airflow_provider_wdata.assets.create_asset",
            "to_openlineage_converter": "airflow_provider_wdata.openlineage.convert_asset_to_openlineage",
        }
    ]
    return {
        "package-name": "airflow-provider-wdata",
        "name": "Workiva Wdata",
        "description": "Refresh Workiva Wdata connections and wait for them from Airflow.",
        "versions": [__version__],
        "connection-types": [
            {
                "connection-type": "wdata",
                "hook-class-name": "airflow_provider_wdata.hooks.wdata.WdataHook",
                "hook-name": "Workiva Wdata",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
        "hooks": [{"integration-name": "Workiva Wdata", "python-modules": ["airflow_provider_wdata.hooks.wdata"]}],
        "triggers": [
            {"integration-name": "Workiva Wdata", "python-modules": ["airflow_provider_wdata.triggers.wdata"]}
        ],
        "sensors": [{"integration-name": "Workiva Wdata", "python-modules": ["airflow_provider_wdata.sensors.wdata"]}],
        "operators": [
            {
                "integration-name": "Workiva Wdata",
                "python-modules": ["airflow_provider_wdata.operators.wdata"],
            }
        ],
        "asset-uris": uri_schemes,
        "dataset-uris": uri_schemes,
    }
