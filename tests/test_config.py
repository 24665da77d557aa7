"""The ``wdata`` connection: every field read, and every mistake named with its fix."""

from __future__ import annotations

import pytest

from airflow_provider_wdata.config import build_config
from airflow_provider_wdata.constants import API_BASE_URLS, TOKEN_URLS
from airflow_provider_wdata.exceptions import WdataConfigError


def config(extras=None, **fields):
    values = {"login": "id", "password": "secret", "host": None, "port": None} | fields
    return build_config("my_conn", extras=extras or {}, **values)


@pytest.mark.parametrize("region", ["us", "eu", "apac", "EU"])
def test_region_picks_api_and_token_hosts(region):
    c = config({"region": region})
    assert c.base_url == API_BASE_URLS[region.lower()]
    assert c.token_url == TOKEN_URLS[region.lower()]


def test_defaults():
    c = config()
    assert (c.base_url, c.timeout, c.verify, c.workspace_id) == (API_BASE_URLS["us"], 30.0, True, None)


def test_host_overrides_region_and_token_url_follows_it():
    c = config({"region": "eu"}, host="https://wdata.example.test/s/wdata/prep/", port=None)
    assert c.base_url == "https://wdata.example.test/s/wdata/prep"
    assert c.token_url == "https://wdata.example.test/iam/v1/oauth2/token"


def test_bare_host_gets_https_and_port():
    assert config(host="wdata.example.test", port=8443).base_url == "https://wdata.example.test:8443"


def test_bare_extras_win_over_prefixed_ones_and_prefixed_ones_are_read():
    extras = {
        "extra__wdata__region": "apac",
        "extra__wdata__workspace_id": "ws-old",
        "workspace_id": "ws-new",
        "extra__wdata__timeout": "12.5",
        "extra__wdata__token_url": "https://api.apac.wdesk.com/oauth2/token",
    }
    c = config(extras)
    assert (c.base_url, c.workspace_id, c.timeout) == (API_BASE_URLS["apac"], "ws-new", 12.5)
    assert c.token_url == "https://api.apac.wdesk.com/oauth2/token"


@pytest.mark.parametrize(
    ("value", "expected"), [(False, False), ("false", False), ("True", True), ("/ca.pem", "/ca.pem")]
)
def test_verify(value, expected):
    assert config({"verify": value}).verify == expected


def test_secret_is_not_in_the_repr():
    assert "secret" not in repr(config(password="s3cr3t-value")).replace("client_secret", "")
    assert "s3cr3t-value" not in repr(config(password="s3cr3t-value"))


@pytest.mark.parametrize(
    ("fields", "extras", "message"),
    [
        ({"login": None}, {}, "'my_conn' has no client id: set its login"),
        ({"password": ""}, {}, "'my_conn' has no client secret: set its password"),
        ({}, {"region": "mars"}, "'my_conn': unknown region 'mars' in extra 'region'; use one of us, eu, apac"),
        ({"host": "ftp://x.test"}, {}, "host 'ftp://x.test' is not a valid URL"),
        ({"host": "https://"}, {}, "is not a valid URL"),
        ({"host": "https://x.test:99999"}, {}, "is not a valid URL"),
        ({"host": "https://u:p@x.test"}, {}, "must not hold a query, fragment or credentials"),
        ({"host": "http://wdata.example.test"}, {}, "plain http"),
        (
            {},
            {"token_url": "http://api.example.test/token"},
            "token_url 'http://api.example.test/token' uses plain http",
        ),
        ({}, {"timeout": "soon"}, "timeout 'soon' is not a number of seconds above 0 and at most 3600"),
        ({}, {"timeout": 0}, "is not a number of seconds above 0"),
        ({}, {"timeout": "nan"}, "timeout 'nan' is not a number"),
        ({}, {"timeout": True}, "timeout True is not a number"),
        ({}, {"timeout": 10**400}, "is not a number of seconds above 0 and at most 3600"),
        ({}, {"timeout": "inf"}, "timeout 'inf' is not a number"),
        ({}, {"timeout": "1e12"}, "timeout '1e12' is not a number of seconds above 0 and at most 3600"),
        ({}, ["region", "eu"], "its extra is a JSON list, not an object"),
        ({}, "eu", "its extra is a JSON str, not an object"),
        ({}, {"workspace_id": "w" * 41}, "at most 40"),
        ({}, {"verify": "maybe?"}, None),
        ({}, {"allow_insecure_http": "perhaps"}, "allow_insecure_http"),
    ],
)
def test_mistakes_name_the_connection_and_the_field(fields, extras, message):
    if message is None:  # a string that is not a boolean is a CA bundle path
        assert config(extras, **fields).verify == "maybe?"
        return
    with pytest.raises(WdataConfigError) as info:
        config(extras, **fields)
    assert message in str(info.value)
    assert "my_conn" in str(info.value)


def test_plain_http_allowed_on_loopback_or_when_asked():
    assert config(host="http://127.0.0.1:8080").base_url == "http://127.0.0.1:8080"
    assert config(host="http://localhost:8080").base_url == "http://localhost:8080"
    assert config(host="http://[::1]:8080").base_url == "http://[::1]:8080"
    allowed = config({"allow_insecure_http": True}, host="http://wdata.internal.test")
    assert allowed.base_url == "http://wdata.internal.test"


@pytest.mark.parametrize("region", ["us", "eu", "apac"])
def test_a_regional_host_keeps_its_regions_token_url(region):
    assert config(host=API_BASE_URLS[region]).token_url == TOKEN_URLS[region]


def test_ports_and_ipv6_hosts():
    assert config(host="http://[::1]", port=9000).base_url == "http://[::1]:9000"
    with pytest.raises(WdataConfigError, match="give the port once"):
        config(host="https://x.test:8443", port=9000)
    with pytest.raises(WdataConfigError, match="no credentials in host"):
        config(host="https://user@x.test", port=9000)


@pytest.mark.parametrize(
    "host",
    [
        "https://client:S3CRET-in-host@h.app.wdesk.com:44x",  # a bad port: refused before the credentials check
        "https://client:S3CRET-in-host@bad host.test",  # not a host name
        "ftp://client:S3CRET-in-host@x.test",  # not http(s)
        "client:S3CRET-in-host@localhost:8080",  # no scheme, on this machine
        "https://client:S3CRET#in/host?@h.eu.wdesk.com",  # a secret holding URL delimiters
        "https://client:S3CRET@in-host@h.eu.wdesk.com:44x",
    ],
)
def test_a_secret_written_into_the_host_is_masked_in_every_message(host):
    with pytest.raises(WdataConfigError) as info:
        config(host=host)
    assert "S3CRET" not in str(info.value) and "in-host" not in str(info.value) and "in/host" not in str(info.value)
    assert "***@" in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("host", "region"),
    [("h.eu.wdesk.com", "eu"), ("https://H.app.wdesk.com/", "us"), ("https://h.apac.wdesk.com:443", "apac")],
)
def test_a_regional_host_written_without_its_path_gets_the_api_path(host, region):
    written = config(host=host)
    assert written.base_url == API_BASE_URLS[region] and written.token_url == TOKEN_URLS[region]


def test_another_host_keeps_the_path_as_written():
    assert config(host="https://wdata.example.test").base_url == "https://wdata.example.test"
    assert config(host="https://h.app.wdesk.com/other").base_url == "https://h.app.wdesk.com/other"
