"""How the ``wdata`` connection looks in the Airflow UI.

Airflow 3.2+ reads ``CONN_FIELDS`` and ``UI_FIELD_BEHAVIOUR`` from the provider info (``get_provider_info``);
older versions call ``WdataHook.get_connection_form_widgets`` and ``WdataHook.get_ui_field_behaviour``,
which build the same form from these definitions (:func:`legacy_widgets`).

What each Airflow does with them:

- 3.2+ (React UI): every entry of ``CONN_FIELDS`` becomes a row of "Extra Fields", chosen by its JSON schema:
  ``enum`` a dropdown, ``boolean`` a switch, ``integer`` a number input, ``string`` a text input; ``label`` is
  the row's label and ``description`` the help text under it. That UI shows no placeholder for extra fields, so
  the descriptions carry the hints. A field is masked only with ``"format": "password"``; the client secret is
  the standard password field, masked anyway. ``hidden-fields``, ``relabeling`` and ``placeholders`` apply to
  the standard fields (description, host, schema, login, password, port).
- 3.1 (React UI) turns the WTForms fields of :func:`legacy_widgets` into the same schema through stand-ins for
  ``wtforms`` (3.0 too, but only where the FAB provider is installed; without it 3.0 shows no provider's extra
  fields): only ``StringField``, ``IntegerField``, ``BooleanField`` and ``PasswordField`` exist there, a choice
  is a ``StringField`` with the ``any_of`` validator, and the keyword arguments must stay within ``label``,
  ``validators``, ``description``, ``default`` and ``widget``.
- 2.11 (Flask UI) renders the WTForms fields, and drops the whole hook (no form, no "Test" button, no
  ``Connection.get_hook()``) if any field is of another class, e.g. ``SelectField`` or ``FloatField``.
"""

from __future__ import annotations

from typing import Any

# Airflow reads get_provider_info() while it is still starting: import only the constants.
from airflow_provider_wdata.constants import DEFAULT_REGION, DEFAULT_TIMEOUT_SECONDS, MAX_WORKSPACE_ID_LENGTH, REGIONS

_TOKEN_URL_HELP = (
    "Optional OAuth2 token endpoint. Empty: the region's, or /iam/v1/oauth2/token on the Base URL's host. "
    "The newer https://api.app.wdesk.com/oauth2/token works too."
)

CONN_FIELDS: dict[str, dict[str, Any]] = {
    "region": {
        "label": "Region",
        "schema": {"type": ["string", "null"], "enum": list(REGIONS), "default": DEFAULT_REGION},
        "description": "Workiva region of the workspace: us (default), eu or apac. Ignored when Base URL is set.",
    },
    "workspace_id": {
        "label": "Workspace ID",
        "schema": {"type": ["string", "null"], "maxLength": MAX_WORKSPACE_ID_LENGTH},
        "description": "Optional: the workspaceId sent with every call unless a task gives its own.",
    },
    "token_url": {
        "label": "Token URL",
        "schema": {"type": ["string", "null"]},
        "description": _TOKEN_URL_HELP,
    },
    "timeout": {
        "label": "Timeout (seconds)",
        "schema": {"type": ["integer", "null"], "minimum": 1, "default": DEFAULT_TIMEOUT_SECONDS},
        "description": "Timeout of each HTTP request, in seconds (default 30).",
    },
    "verify": {
        "label": "Verify TLS certificates",
        "schema": {"type": ["boolean", "null"], "default": True},
        "description": (
            "Keep on. Turn off only for a trusted test environment. "
            'To trust a private CA instead, set "verify" to the path of its CA bundle in the extra JSON.'
        ),
    },
}

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    # The extra JSON stays visible: scope, allow_insecure_http or a CA bundle path are set there.
    "hidden-fields": ["schema", "port"],
    "relabeling": {"login": "Client ID", "password": "Client Secret", "host": "Base URL (optional)"},
    "placeholders": {
        "login": "OAuth2 client id of the API grant",
        "password": "OAuth2 client secret",
        "host": "https://h.app.wdesk.com/s/wdata/prep (leave empty to use the region)",
        # Extra fields: shown by the Flask UI of Airflow 2.11; the React UI shows their descriptions instead.
        "region": DEFAULT_REGION,
        "workspace_id": "optional",
        "token_url": "https://api.app.wdesk.com/iam/v1/oauth2/token",
        "timeout": str(DEFAULT_TIMEOUT_SECONDS),
    },
}


def legacy_field_behaviour(hook_class: type) -> dict[str, Any]:
    """``UI_FIELD_BEHAVIOUR`` as ``get_ui_field_behaviour`` returns it (Airflow < 3.2)."""
    return {
        "hidden_fields": UI_FIELD_BEHAVIOUR["hidden-fields"],
        "relabeling": UI_FIELD_BEHAVIOUR["relabeling"],
        "placeholders": UI_FIELD_BEHAVIOUR["placeholders"],
    }


def legacy_widgets(hook_class: type) -> dict[str, Any]:
    """The extra fields of ``CONN_FIELDS`` as WTForms fields, for ``get_connection_form_widgets`` (Airflow < 3.2).

    Only the field classes and keyword arguments that every one of those Airflow versions accepts are used (see
    the module docstring): a region dropdown is a ``StringField`` with ``any_of``, the timeout an ``IntegerField``.
    """
    from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
    from flask_babel import lazy_gettext
    from wtforms import BooleanField, IntegerField, StringField
    from wtforms.validators import Length, NumberRange, Optional, any_of

    def label(name: str) -> Any:
        return lazy_gettext(CONN_FIELDS[name]["label"])

    def description(name: str) -> str:
        return CONN_FIELDS[name]["description"]

    return {
        "region": StringField(
            label("region"),
            validators=[Optional(), any_of(list(REGIONS))],
            description=description("region"),
            default=DEFAULT_REGION,
            widget=BS3TextFieldWidget(),
        ),
        "workspace_id": StringField(
            label("workspace_id"),
            validators=[Optional(), Length(max=MAX_WORKSPACE_ID_LENGTH)],
            description=description("workspace_id"),
            widget=BS3TextFieldWidget(),
        ),
        "token_url": StringField(
            label("token_url"),
            validators=[Optional()],
            description=description("token_url"),
            widget=BS3TextFieldWidget(),
        ),
        "timeout": IntegerField(
            label("timeout"),
            validators=[Optional(), NumberRange(min=1)],
            description=description("timeout"),
            default=DEFAULT_TIMEOUT_SECONDS,
            widget=BS3TextFieldWidget(),
        ),
        "verify": BooleanField(label("verify"), description=description("verify"), default=True),
    }


def without_conn_id(message: str, conn_id: str) -> str:
    """The UI's "Test" button checks a copy of the connection saved under a random id: leave that id out."""
    named = f"Connection {conn_id!r}"
    if message.startswith(f"{named}: "):
        rest = message[len(named) + 2 :]
        return rest[:1].upper() + rest[1:]
    return message.replace(named, "The connection", 1)
