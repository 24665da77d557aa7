"""Turn an Airflow connection of type ``wdata`` into a checked :class:`WdataConfig`. Pure: no I/O."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import ipaddress
import math
import re
import reprlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_wdata.constants import (
    API_BASE_URLS,
    DEFAULT_REGION,
    DEFAULT_TIMEOUT_SECONDS,
    MAX_TIMEOUT_SECONDS,
    MAX_WORKSPACE_ID_LENGTH,
    REGIONS,
    TOKEN_PATH,
    TOKEN_URLS,
)
from airflow_provider_wdata.exceptions import WdataConfigError

DEFAULT_TIMEOUT = float(DEFAULT_TIMEOUT_SECONDS)
#: A DNS name or an IP address (IPv6 without its brackets, as urlsplit gives it).
_HOSTNAME = re.compile(r"[A-Za-z0-9._-]+|[0-9A-Fa-f:.%]+")


@dataclasses.dataclass(frozen=True)
class WdataConfig:
    """Everything a call needs from the connection. The secret never shows in the repr."""

    conn_id: str
    client_id: str
    client_secret: str = dataclasses.field(repr=False)
    base_url: str
    token_url: str
    scope: str | None = None
    workspace_id: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    #: True, False, or the path of a CA bundle.
    verify: bool | str = True

    @functools.cached_property
    def token_key(self) -> tuple[str, str, str, str]:
        """Identifies one credential in the token cache; a changed secret is a different credential."""
        digest = hashlib.sha256(self.client_secret.encode()).hexdigest()
        return (self.token_url, self.client_id, self.scope or "", digest)

    @functools.cached_property
    def fetch_key(self) -> tuple[Any, ...]:
        """Calls share a token fetch, and its failure, per credential and connection: an error names the connection,
        and its TLS and timeout settings are the ones the fetch used."""
        return (self.token_key, self.conn_id, self.timeout, self.verify)

    @functools.cached_property
    def throttle_key(self) -> tuple[str, str]:
        """The service's rate limit applies per API origin and client id."""
        parts = urlsplit(self.base_url)
        return (f"{parts.scheme}://{parts.netloc}", self.client_id)


def _extra(extras: Mapping[str, Any], name: str) -> Any:
    """Bare extra keys win over the older ``extra__wdata__<name>`` form; empty strings count as unset."""
    for key in (name, f"extra__wdata__{name}"):
        value = extras.get(key)
        if value is not None and value != "":
            return value
    return None


def _is_loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _as_bool(value: Any, *, conn_id: str, field: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise WdataConfigError(f"Connection {conn_id!r}: extra {field!r} must be true or false, not {value!r}.")


#: Everything up to the last ``@``: a secret may hold ``/``, ``?``, ``#`` or ``@`` itself.
_USERINFO = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*://)?).*@", re.DOTALL)


def _shown(url: str) -> str:
    """``url`` for an error message: credentials written into it (``user:secret@``) are masked."""
    return _USERINFO.sub(r"\1***@", url)


def _with_port(host: str, port: int | None, conn_id: str) -> str:
    if "://" in host:
        url = host
    else:
        url = f"https://{host}"
        hostname = _hostname(url)
        if hostname is not None and _is_loopback(hostname):
            # Without a scheme we would speak TLS to what is most likely a plain-HTTP test server.
            raise WdataConfigError(
                f"Connection {conn_id!r}: host {_shown(host)!r} has no scheme. Write it as https://{_shown(host)}, "
                f"or as http://{_shown(host)} for a plain-HTTP server on this machine (such as the Wdata simulator)."
            )
    if not port:
        return url
    parts = urlsplit(url)
    try:
        has_port = parts.port is not None
    except ValueError:
        has_port = True
    if has_port or parts.username or not parts.hostname:
        raise WdataConfigError(
            f"Connection {conn_id!r}: give the port once, either in host or in port, and no credentials in host."
        )
    name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return parts._replace(netloc=f"{name}:{port}").geturl()


def _hostname(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def _with_api_path(base_url: str) -> str:
    """A regional API host written without a path (``h.eu.wdesk.com``) means that region's API base: every call
    to the bare host would answer 404, which reads as a wrong id."""
    parts = urlsplit(base_url)
    if parts.scheme == "https" and not parts.path.strip("/") and parts.port in (None, 443):
        for regional_base in API_BASE_URLS.values():
            if urlsplit(regional_base).hostname == parts.hostname:  # hostname is lowercased
                return regional_base
    return base_url


def _default_token_url(base_url: str) -> str:
    """A regional API host has its region's token host; any other host serves the token path itself."""
    origin = urlsplit(base_url)
    for region, api_base in API_BASE_URLS.items():
        if urlsplit(api_base).netloc == origin.netloc:
            return TOKEN_URLS[region]
    return f"{origin.scheme}://{origin.netloc}{TOKEN_PATH}"


def _checked_url(url: str, *, conn_id: str, field: str, allow_http: bool, written: str | None = None) -> str:
    """``url`` when it is a usable http(s) URL; ``written`` is the value as the user wrote it, for messages."""
    shown = _shown(written if written is not None else url)
    problem = None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        problem = f" ({exc})" if "@" not in url else ""  # urllib quotes what it failed to read: a secret, maybe
    if problem is not None:  # raised outside the except block: no exception chained to it
        raise WdataConfigError(f"Connection {conn_id!r}: {field} {shown!r} is not a valid URL{problem}.")
    if parts.scheme not in ("http", "https") or not parts.hostname or not _HOSTNAME.fullmatch(parts.hostname):
        raise WdataConfigError(
            f"Connection {conn_id!r}: {field} {shown!r} is not a valid URL; expected https://host[:port][/path]."
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise WdataConfigError(
            f"Connection {conn_id!r}: {field} must not hold a query, fragment or credentials; "
            "put the client id and secret in login and password."
        )
    if parts.scheme == "http" and not (allow_http or _is_loopback(parts.hostname)):
        raise WdataConfigError(
            f"Connection {conn_id!r}: {field} {url!r} uses plain http, which would send credentials "
            "unencrypted. Use https, or set extra allow_insecure_http to true for a trusted network."
        )
    return url.rstrip("/")


def undefined_connection(conn_id: str) -> WdataConfigError:
    """The error for an Airflow connection id that is not defined (the same in every mode)."""
    variable = f"AIRFLOW_CONN_{conn_id.upper()}"  # as Airflow's environment variables backend names it
    return WdataConfigError(
        f"Airflow connection {conn_id!r} is not defined: add a connection of type 'wdata' with that id (Admin > "
        f"Connections, `airflow connections add`, or the environment variable {variable}), or pass wdata_conn_id "
        "naming the one you have."
    )


def build_config(
    conn_id: str,
    *,
    login: str | None,
    password: str | None,
    host: str | None,
    port: int | None,
    extras: Mapping[str, Any],
    timeout: float | None = None,
) -> WdataConfig:
    """Check the connection fields and build the config, or raise naming the field to fix."""
    if not isinstance(extras, Mapping):
        raise WdataConfigError(
            f"Connection {conn_id!r}: its extra is a JSON {type(extras).__name__}, not an object; write it as an "
            'object of named fields, e.g. {"region": "eu", "workspace_id": "..."}.'
        )
    if not login:
        raise WdataConfigError(
            f"Connection {conn_id!r} has no client id: set its login to the OAuth2 client id of the API grant."
        )
    if not password:
        raise WdataConfigError(
            f"Connection {conn_id!r} has no client secret: set its password to the OAuth2 client secret."
        )
    allow_http = _as_bool(_extra(extras, "allow_insecure_http") or False, conn_id=conn_id, field="allow_insecure_http")
    region = str(_extra(extras, "region") or DEFAULT_REGION).strip().lower()
    if region not in REGIONS:
        raise WdataConfigError(
            f"Connection {conn_id!r}: unknown region {region!r} in extra 'region'; "
            f"use one of {', '.join(REGIONS)}, or set host to the API base URL."
        )

    if host:
        base_url = _with_api_path(
            _checked_url(
                _with_port(host.strip(), port, conn_id),
                conn_id=conn_id,
                field="host",
                allow_http=allow_http,
                written=host.strip(),
            )
        )
    else:
        base_url = API_BASE_URLS[region]

    token_url = _extra(extras, "token_url")
    if token_url:
        token_url = _checked_url(str(token_url), conn_id=conn_id, field="token_url", allow_http=allow_http)
    else:
        token_url = _default_token_url(base_url)

    raw_timeout = timeout if timeout is not None else _extra(extras, "timeout")
    timeout_s = -1.0  # refused below: not a number (true and false are not seconds either)
    if raw_timeout is None:
        timeout_s = DEFAULT_TIMEOUT
    elif not isinstance(raw_timeout, bool):
        with contextlib.suppress(TypeError, ValueError, OverflowError):
            timeout_s = float(raw_timeout)
    if not (timeout_s > 0 and math.isfinite(timeout_s)) or timeout_s > MAX_TIMEOUT_SECONDS:
        raise WdataConfigError(
            f"Connection {conn_id!r}: timeout {reprlib.repr(raw_timeout)} is not a number of seconds above 0 and "
            f"at most {MAX_TIMEOUT_SECONDS} (the service ends a request after about 29 s)."
        )

    verify_raw = _extra(extras, "verify")
    verify: bool | str = True
    if verify_raw is not None:
        text = str(verify_raw).strip()
        looks_boolean = isinstance(verify_raw, bool) or text.lower() in (
            "true",
            "false",
            "1",
            "0",
            "yes",
            "no",
        )
        verify = _as_bool(verify_raw, conn_id=conn_id, field="verify") if looks_boolean else text

    workspace_id = _extra(extras, "workspace_id")
    if workspace_id is not None:
        workspace_id = str(workspace_id).strip()
        if len(workspace_id) > MAX_WORKSPACE_ID_LENGTH:
            raise WdataConfigError(
                f"Connection {conn_id!r}: workspace_id is {len(workspace_id)} characters long; "
                f"the service accepts at most {MAX_WORKSPACE_ID_LENGTH}."
            )

    scope = _extra(extras, "scope")
    return WdataConfig(
        conn_id=conn_id,
        client_id=str(login),
        client_secret=str(password),
        base_url=base_url,
        token_url=token_url,
        scope=str(scope) if scope else None,
        workspace_id=workspace_id or None,
        timeout=timeout_s,
        verify=verify,
    )
