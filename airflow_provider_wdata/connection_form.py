"""How the ``wdata`` connection looks in the Airflow UI.

Airflow 3.2+ reads ``CONN_FIELDS`` and ``UI_FIELD_BEHAVIOUR`` from the provider info; older versions call
``WdataHook.get_connection_form_widgets`` and ``WdataHook.get_ui_field_behaviour``, which build the same
form from these definitions.
"""

from __future__ import annotations

from typing import Any

REGIONS = ("us", "eu", "apac")

CONN_FIELDS: dict[str, dict[str, Any]] = {
    "region": {
        "label": "Region",
        "schema": {"type": ["string", "null"], "enum": list(REGIONS), "default": "us"},
        "description": "Workiva region of the workspace: us, eu or apac. Ignored when Base URL is set.",
    },
    "workspace_id": {
        "label": "Workspace ID",
        "schema": {"type": ["string", "null"], "maxLength": 40},
        "description": "Default workspaceId sent with every call (optional).",
    },
    "token_url": {
        "label": "Token URL",
        "schema": {"type": ["string", "null"]},
        "description": "OAuth2 token endpoint override, for instance https://api.app.wdesk.com/oauth2/token.",
    },
    "timeout": {
        "label": "Timeout (seconds)",
        "schema": {"type": ["number", "null"], "default": 30},
        "description": "Timeout of each HTTP request.",
    },
    "verify": {
        "label": "Verify TLS certificates",
        "schema": {"type": ["boolean", "null"], "default": True},
        "description": "Keep on. Turn off only for a trusted test environment.",
    },
}

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port", "extra"],
    "relabeling": {"login": "Client ID", "password": "Client Secret", "host": "Base URL (optional)"},
    "placeholders": {
        "login": "OAuth2 client id of the API grant",
        "password": "OAuth2 client secret",
        "host": "https://h.app.wdesk.com/s/wdata/prep (leave empty to use the region)",
        "region": "us",
        "workspace_id": "optional",
        "token_url": "https://api.app.wdesk.com/iam/v1/oauth2/token",
        "timeout": "30",
    },
}


def legacy_widgets() -> dict[str, Any]:
    """The same extra fields as WTForms widgets, for the Flask UI of Airflow before 3.2."""
    from flask_appbuilder.fieldwidgets import BS3TextFieldWidget, Select2Widget
    from flask_babel import lazy_gettext
    from wtforms import BooleanField, FloatField, SelectField, StringField
    from wtforms.validators import Length, NumberRange, Optional

    return {
        "region": SelectField(
            lazy_gettext(CONN_FIELDS["region"]["label"]),
            choices=[(r, r) for r in REGIONS],
            default="us",
            widget=Select2Widget(),
            description=CONN_FIELDS["region"]["description"],
        ),
        "workspace_id": StringField(
            lazy_gettext(CONN_FIELDS["workspace_id"]["label"]),
            widget=BS3TextFieldWidget(),
            validators=[Optional(), Length(max=40)],
        ),
        "token_url": StringField(lazy_gettext(CONN_FIELDS["token_url"]["label"]), widget=BS3TextFieldWidget()),
        "timeout": FloatField(
            lazy_gettext(CONN_FIELDS["timeout"]["label"]),
            widget=BS3TextFieldWidget(),
            validators=[Optional(), NumberRange(min=0.1)],
            default=30,
        ),
        "verify": BooleanField(lazy_gettext(CONN_FIELDS["verify"]["label"]), default=True),
    }
