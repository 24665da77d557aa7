"""The pure protocol layer, without a server: build requests, read responses, classify errors."""

from __future__ import annotations

import json
import re

import pendulum
import pytest

from airflow_provider_wdata import protocol, request_fields
from airflow_provider_wdata.config import build_config
from airflow_provider_wdata.constants import MAX_BATCH_SIZE, MAX_PAGE_SIZE, MAX_WORKSPACE_ID_LENGTH
from airflow_provider_wdata.exceptions import (
    WdataApiError,
    WdataAuthError,
    WdataConfigError,
    WdataError,
    WdataRefreshMayHaveStartedError,
    WdataTransportError,
)
from airflow_provider_wdata.protocol import ApiRequest, RawResponse

SECRET = "s3cr+t/with=odd&chars"
CONFIG = build_config(
    "wdata_test", login="client-1", password=SECRET, host=None, port=None, extras={"scope": "wdata.read"}
)
GET = protocol.get_batch_refresh("b-1")
START = protocol.start_batch_refresh(["conn-1"])


def raw(status: int, body: object = b"", headers: dict | None = None, too_large: bool = False) -> RawResponse:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return RawResponse(status, headers or {}, data, too_large)


# ------------------------------------------------------------------------------------------ request builders


def test_batch_status_request():
    request = protocol.get_batch_refresh("b-1", workspace_id="ws-1")
    assert request == ApiRequest(
        "GET", "/api/v1/connections/batch/refresh/b-1", (("workspaceId", "ws-1"),), polled=True
    )
    assert not request.starts_refresh
    assert (
        request.url("https://h.test/s/wdata/prep") == "https://h.test/s/wdata/prep/api/v1/connections/batch/refresh/b-1"
    )
    assert str(request) == "GET /api/v1/connections/batch/refresh/b-1"
    assert protocol.get_batch_refresh("b-1").params == ()


def test_ids_of_unreserved_characters_go_into_the_path_as_they_are_others_are_percent_encoded():
    assert protocol.path_param("id", "Ab0-._~") == "Ab0-._~"
    assert protocol.path_param("id", "a:b;c&d") == "a%3Ab%3Bc%26d"
    assert protocol.path_param("id", "café") == "caf%C3%A9"
    assert protocol.get_connection("a b".replace(" ", "+")).path == "/api/v1/connections/a%2Bb"


@pytest.mark.parametrize(
    "bad", ["", "  ", "a/b", "a\\b", "a?b", "a#b", "a%2F", "a b", "a\tb", "a\x00", "a\x7f", ".", "..", None, 7]
)
def test_ids_that_could_change_the_path_are_refused_naming_the_argument(bad):
    with pytest.raises(WdataConfigError, match=r"^batch_id "):
        protocol.path_param("batch_id", bad)


def test_dots_inside_an_id_are_fine():
    assert protocol.path_param("id", "a..b") == "a..b"
    assert protocol.path_param("id", "...") == "..."


@pytest.mark.parametrize("workspace", ["", "x" * (MAX_WORKSPACE_ID_LENGTH + 1), 5])
def test_workspace_ids_are_checked(workspace):
    with pytest.raises(WdataConfigError, match="workspace_id must be a string of 1 to 40"):
        protocol.get_batch_refresh("b", workspace_id=workspace)


def test_a_workspace_id_of_the_longest_length_is_fine():
    longest = "w" * MAX_WORKSPACE_ID_LENGTH
    assert protocol.get_connection("c", workspace_id=longest).params == (("workspaceId", longest),)
    protocol.validate_workspace_id("w")


def test_start_batch_request_body_and_flags():
    request = protocol.start_batch_refresh(
        [
            "conn-1",
            {
                "connection_id": "conn-2",
                "source_parameters": {"y": 1},
                "destination_parameters": {},
                "use_previous_source_parameters": False,
                "use_previous_destination_parameters": True,
                "workspace_id": "ws-own",
            },
        ],
        cancel_unwritables=True,
        workspace_id="ws-all",
    )
    assert (request.method, request.path, request.starts_refresh) == ("POST", "/api/v1/connections/batch/refresh", True)
    assert request.params == (("cancelUnwritables", "true"),)
    assert request.json_body == [
        {"connectionId": "conn-1", "workspaceId": "ws-all"},
        {
            "connectionId": "conn-2",
            "sourceParameters": {"y": 1},
            "destinationParameters": {},
            "usePreviousSourceParameters": False,
            "usePreviousDestinationParameters": True,
            "workspaceId": "ws-own",
        },
    ]
    assert protocol.start_batch_refresh(["c"]).params == (("cancelUnwritables", "false"),)
    assert protocol.start_batch_refresh(["c"]).json_body == [{"connectionId": "c"}], "no workspace unless given"


def test_none_fields_are_left_out():
    body = request_fields.refresh_connection_item({"connection_id": "c", "source_parameters": None})
    assert body == {"connectionId": "c"}


@pytest.mark.parametrize("size", [1, MAX_BATCH_SIZE])
def test_batch_sizes_at_the_limits_are_accepted(size):
    items = protocol.validate_batch_connections([f"c-{i}" for i in range(size)])
    assert len(items) == size


@pytest.mark.parametrize("size", [0, MAX_BATCH_SIZE + 1])
def test_batch_sizes_outside_the_limits_are_refused(size):
    with pytest.raises(WdataConfigError, match=f"1 to 100 connections; got {size}"):
        protocol.start_batch_refresh([f"c-{i}" for i in range(size)])


@pytest.mark.parametrize("connections", ["conn-1", {"connection_id": "c"}, 42, None])
def test_batch_connections_must_be_a_list(connections):
    with pytest.raises(WdataConfigError, match="connections must be a list"):
        protocol.validate_batch_connections(connections)


def test_duplicates_are_refused_naming_the_connection():
    with pytest.raises(WdataConfigError, match="'c-1' appears more than once"):
        protocol.validate_batch_connections(["c-1", {"connection_id": "c-1"}])


def test_unknown_keys_are_refused_naming_them_and_the_item():
    with pytest.raises(WdataConfigError, match=r"connections\[1\] has unknown key\(s\) 'bogus', 'connectionId'"):
        protocol.validate_batch_connections(["c-1", {"connection_id": "c-2", "connectionId": "x", "bogus": 1}])


@pytest.mark.parametrize(
    ("item", "says"),
    [
        (3, r"connections\[0\] must be a connection id or a dict of RefreshConnection fields, not int"),
        ({"connection_id": "c", "source_parameters": "y=1"}, "source_parameters must be a dict, not str"),
        ({"connection_id": "c", "destination_parameters": []}, "destination_parameters must be a dict, not list"),
        ({"connection_id": "c", "use_previous_source_parameters": "yes"}, "must be true or false, not 'yes'"),
        ({"connection_id": "c", "use_previous_destination_parameters": 1}, "must be true or false, not 1"),
        ({"connection_id": "c/d"}, r"connections\[0\] connection_id 'c/d' is not a valid Wdata id"),
        ({"source_parameters": {}}, r"connections\[0\] connection_id must be a non-empty string"),
        ({"connection_id": "c", "workspace_id": "w" * 41}, "workspace_id must be a string"),
    ],
)
def test_mistyped_fields_are_refused(item, says):
    with pytest.raises(WdataConfigError, match=says):
        protocol.validate_batch_connections([item])


@pytest.mark.parametrize(
    ("parameters", "says"),
    [
        ({"as_of": pendulum.datetime(2026, 12, 3)}, r"connections\[0\] source_parameters\['as_of'\] is a DateTime"),
        ({"rate": float("nan")}, r"source_parameters\['rate'\] is nan"),
        ({"rows": [1, float("inf")]}, r"source_parameters\['rows'\]\[1\] is inf"),
        ({"ids": {1, 2}}, r"source_parameters\['ids'\] is a set"),
        ({"nested": {3: "x"}}, r"source_parameters\['nested'\] has the key 3, not a string"),
    ],
)
def test_parameters_a_json_body_cannot_carry_are_refused_naming_where_they_are(parameters, says):
    # Refused before any request: sent, NaN would be refused by requests after the start was counted as sent, and
    # a date would escape as a bare TypeError.
    with pytest.raises(WdataConfigError, match=says) as info:
        protocol.validate_batch_connections([{"connection_id": "c", "source_parameters": parameters}])
    assert "a date as a string" in str(info.value)


def test_json_parameters_of_every_kind_are_taken_as_they_are():
    parameters = {"a": "x", "b": 1, "c": 1.5, "d": True, "e": None, "f": [1, "2", {"g": [False]}], "h": (3,)}
    (item,) = protocol.validate_batch_connections([{"connection_id": "c", "destination_parameters": parameters}])
    assert item["destinationParameters"] == {**parameters, "h": [3]}, "a tuple is sent as the JSON list it encodes to"


def test_single_refresh_request():
    request = protocol.refresh_connection("conn:1", workspace_id="ws", use_previous_source_parameters=True)
    assert (request.method, request.path) == ("POST", "/api/v1/connections/conn%3A1/refresh")
    assert request.starts_refresh and request.params == ()
    assert request.json_body == {"usePreviousSourceParameters": True, "workspaceId": "ws"}
    with pytest.raises(WdataConfigError, match="unknown key"):
        protocol.validate_refresh_fields("c", sourceParameters={})


def test_connection_run_status_request():
    request = protocol.get_connection_refresh("conn-1", "job-9", workspace_id="ws")
    assert request == ApiRequest(
        "GET", "/api/v1/connections/conn-1/status", (("jobId", "job-9"), ("workspaceId", "ws")), polled=True
    )
    with pytest.raises(WdataConfigError, match="job_id"):
        protocol.get_connection_refresh("conn-1", "../x")


def test_list_connections_request():
    request = protocol.list_connections(source_type="s", destination_id="d", cursor="cur", limit=5)
    assert request.path == "/api/v1/connections"
    assert request.params == (("sourceType", "s"), ("destinationId", "d"), ("cursor", "cur"), ("limit", "5"))
    assert protocol.list_connections().params == (("limit", str(MAX_PAGE_SIZE)),)
    assert protocol.list_connections(limit=1).params == (("limit", "1"),)


@pytest.mark.parametrize("limit", [0, MAX_PAGE_SIZE + 1, "10", 1.5])
def test_list_limits_are_checked(limit):
    with pytest.raises(WdataConfigError, match="limit must be an integer from 1 to 1000"):
        protocol.list_connections(limit=limit)


def test_headers_and_token_form():
    headers = protocol.request_headers("tok")
    assert headers == {"Authorization": "Bearer tok", "Accept": "application/json", "User-Agent": protocol.USER_AGENT}
    assert protocol.USER_AGENT.startswith("airflow-provider-wdata/")
    assert protocol.token_request_form(CONFIG) == {
        "grant_type": "client_credentials",
        "client_id": "client-1",
        "client_secret": SECRET,
        "scope": "wdata.read",
    }
    unscoped = build_config("c", login="i", password="p", host=None, port=None, extras={})
    assert "scope" not in protocol.token_request_form(unscoped)


# ------------------------------------------------------------------------------------------ envelopes


def test_a_success_envelope_gives_body_code_and_cursor():
    envelope = protocol.read_envelope(GET, raw(200, {"body": {"a": 1}, "code": 200, "cursor": "c2"}), 100)
    assert envelope == protocol.Envelope({"a": 1}, 200, "c2")
    plain = protocol.read_envelope(GET, raw(201, {"body": [1], "code": "x", "cursor": ""}), 100)
    assert plain == protocol.Envelope([1], None, None), "a non-integer code and an empty cursor read as absent"


@pytest.mark.parametrize(
    ("body", "says"),
    [(b"", "is empty"), (b"  \n", "is empty"), (b"<html>oops", "is not JSON"), (b'{"data": 1}', "has no 'body'")],
)
def test_unreadable_success_answers_are_clear_errors(body, says):
    with pytest.raises(WdataApiError, match=says) as info:
        protocol.read_envelope(GET, raw(200, body), 100)
    assert info.value.status == 200 and not info.value.retryable
    assert not isinstance(info.value, WdataRefreshMayHaveStartedError), "a read is never a start"


def test_a_300_is_not_a_success_even_with_an_envelope():
    with pytest.raises(WdataApiError, match="redirected to") as info:
        protocol.read_envelope(GET, raw(300, {"body": {"a": 1}}), 100)
    assert info.value.status == 300
    assert protocol.read_envelope(GET, raw(299, {"body": 2}), 100).body == 2


def test_an_unreadable_answer_names_the_call():
    with pytest.raises(WdataApiError) as info:
        protocol.read_envelope(GET, raw(200, b"<html>"), 100)
    assert (info.value.method, info.value.path) == ("GET", GET.path)


def test_a_json_list_is_not_an_envelope():
    with pytest.raises(WdataApiError, match="has no 'body' field"):
        protocol.read_envelope(GET, raw(200, [1, 2]), 100)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (None, "a 'body' that is null, not an object"),
        ([{"batchRefreshId": "b-1"}], "a 'body' that is a list"),
        ("queued", "a 'body' that is a string"),
        (3, "a 'body' that is a number"),
        (True, "a 'body' that is a boolean"),
        ({"childRefreshes": [{"connectionId": "c-1"}, None]}, "a childRefreshes[1] that is null"),
        ({"childRefreshes": ["c-1"]}, "a childRefreshes[0] that is a string"),
    ],
)
def test_an_answer_that_is_no_object_is_a_clear_error(body, says):
    answer = raw(200, {"body": body, "code": 200})
    with pytest.raises(WdataApiError, match=re.escape(says)) as info:
        protocol.read_object(GET, answer, body)
    assert (info.value.status, info.value.path, info.value.retryable) == (200, GET.path, False)
    assert "check that the connection's host is the Wdata API base URL" in str(info.value)
    assert not isinstance(info.value, WdataRefreshMayHaveStartedError), "a read is never a start"
    with pytest.raises(WdataRefreshMayHaveStartedError, match=re.escape(says)):
        protocol.read_object(START, answer, body)


@pytest.mark.parametrize(
    "body", [{}, {"sourceStatus": None}, {"childRefreshes": "not a list"}, {"childRefreshes": [{}, {"x": 1}]}]
)
def test_an_object_with_missing_or_odd_fields_is_read_as_it_is(body):
    assert protocol.read_object(GET, raw(200, {"body": body}), body) is body


def test_an_answer_over_the_limit_is_refused_unread():
    with pytest.raises(WdataApiError, match="more than 1234 bytes") as info:
        protocol.read_envelope(GET, raw(200, too_large=True), 1234)
    assert info.value.path == GET.path and info.value.method == "GET"
    with pytest.raises(WdataRefreshMayHaveStartedError, match="more than 1234 bytes"):
        protocol.read_envelope(START, raw(201, too_large=True), 1234)


def test_error_envelope_with_a_string_body_and_details():
    payload = {
        "body": "Bad connection",
        "code": 4001,
        "details": [{"message": "must be set", "target": "connectionId"}, {"code": "E2"}, "not-a-dict"],
    }
    with pytest.raises(WdataApiError) as info:
        protocol.read_envelope(GET, raw(400, payload, {"Retry-After": "5"}), 10_000)
    error = info.value
    assert (error.status, error.method, error.path, error.service_code) == (400, "GET", GET.path, 4001)
    assert error.messages == ("Bad connection",)
    assert error.details == ({"message": "must be set", "target": "connectionId"}, {"code": "E2"})
    assert error.retry_after == 5.0 and not error.retryable
    assert str(error) == (
        f"Wdata API {GET} answered HTTP 400: Bad connection; must be set (connectionId); E2. "
        "The service rejected the request as invalid; check the arguments named above."
    )


def test_error_envelope_with_a_list_body():
    with pytest.raises(WdataApiError, match=r"answered HTTP 404: One; Two\. Nothing with this id") as info:
        protocol.read_envelope(GET, raw(404, {"body": ["One", "Two"]}), 10_000)
    assert info.value.messages == ("One", "Two") and info.value.service_code is None


def test_an_unreadable_error_body_is_quoted_shortly():
    with pytest.raises(WdataApiError) as info:
        protocol.read_envelope(GET, raw(502, b"<html>\n  <b>Bad   gateway</b>" + b"x" * 1000), 10_000)
    message = str(info.value)
    assert "answered HTTP 502: unreadable body: <html> <b>Bad gateway</b>xx" in message
    assert "The service failed; it may recover." in message
    assert info.value.retryable and info.value.messages == ()


def test_an_error_without_a_hint_ends_cleanly():
    error = protocol.api_error(GET, raw(418, {"body": "teapot"}))
    assert str(error) == f"Wdata API {GET} answered HTTP 418: teapot."


def test_redirects_are_errors_naming_the_location():
    error = protocol.api_error(GET, raw(302, b"", {"Location": "https://elsewhere.test/x"}))
    assert "redirected to https://elsewhere.test/x" in str(error) and "not followed" in str(error)
    assert not error.retryable
    assert "redirected to an unnamed location" in str(protocol.api_error(GET, raw(307)))


# ------------------------------------------------------------------------------------------ classification


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_reads_are_retried_on_429_and_5xx(status):
    assert protocol.api_error(GET, raw(status)).retryable


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 423, 501, 505, 520])
def test_reads_are_not_retried_on_other_statuses(status):
    assert not protocol.api_error(GET, raw(status)).retryable


@pytest.mark.parametrize(
    ("status", "headers", "retryable"),
    [
        (429, {}, True),
        (503, {"Retry-After": "5"}, True),
        (503, {}, False),  # a proxy's answer too, when the service dropped the connection after taking the start
        (500, {}, False),
        (502, {}, False),
        (504, {}, False),
    ],
)
def test_starts_are_retried_only_when_the_service_certainly_did_not_take_them(status, headers, retryable):
    assert protocol.api_error(START, raw(status, headers=headers)).retryable is retryable


def test_retry_after_in_seconds_and_as_an_http_date():
    now = pendulum.datetime(2026, 1, 2, 3, 4, 5, tz="UTC")
    assert protocol.retry_after_seconds("7") == 7.0
    assert protocol.retry_after_seconds(" 2.5 ") == 2.5
    assert protocol.retry_after_seconds("-3") == 0.0
    assert protocol.retry_after_seconds("86400") == 86400.0, "no cap here: the hook caps it"
    assert protocol.retry_after_seconds("Fri, 02 Jan 2026 03:04:35 GMT", now=now) == 30.0
    assert protocol.retry_after_seconds("Fri, 02 Jan 2026 03:00:00 GMT", now=now) == 0.0, "a past date: at once"


def test_retry_after_http_date_is_measured_from_now_by_default():
    soon = pendulum.now("UTC").add(seconds=100).format("ddd, DD MMM YYYY HH:mm:ss [GMT]")
    assert 90 <= protocol.retry_after_seconds(soon) <= 100


@pytest.mark.parametrize("value", [None, "", "soon", "Fri, 99 Foo 2026"])
def test_unreadable_retry_after_is_absent(value):
    assert protocol.retry_after_seconds(value) is None


# ------------------------------------------------------------------------------------------ refine_error


def test_refine_error_leaves_reads_alone():
    error = WdataTransportError("dropped", request_sent=True)
    assert protocol.refine_error(GET, error) is error


@pytest.mark.parametrize(
    "error",
    [
        WdataTransportError("dropped after sending", request_sent=True),
        WdataApiError("unreadable 200", status=200, method="POST", path="/p"),
        WdataApiError("unreadable 299", status=299, method="POST", path="/p"),
        WdataApiError("500", status=500, method="POST", path="/p"),
        WdataApiError("502", status=502, method="POST", path="/p"),
        WdataApiError("520", status=520, method="POST", path="/p"),
        WdataApiError("503", status=503, method="POST", path="/p"),
    ],
    ids=["sent", "200", "299", "500", "502", "520", "503 without Retry-After"],
)
def test_start_failures_after_which_it_may_have_started(error):
    refined = protocol.refine_error(START, error)
    assert isinstance(refined, WdataRefreshMayHaveStartedError)
    assert str(refined).startswith(str(error)) and "may have started" in str(refined)
    assert not refined.retryable


@pytest.mark.parametrize(
    "error",
    [
        WdataTransportError("refused", request_sent=False),
        WdataApiError("429", status=429, method="POST", path="/p"),
        WdataApiError("503", status=503, method="POST", path="/p", retry_after=5.0),
        WdataApiError("400", status=400, method="POST", path="/p"),
        WdataApiError("404", status=404, method="POST", path="/p"),
        WdataApiError("300", status=300, method="POST", path="/p"),
        WdataError("something else"),
    ],
    ids=["refused", "429", "503 with Retry-After", "400", "404", "300", "other"],
)
def test_start_failures_that_certainly_started_nothing_stay_as_they_are(error):
    assert protocol.refine_error(START, error) is error


# ------------------------------------------------------------------------------------------ tokens


def test_read_token():
    assert protocol.read_token(CONFIG, raw(200, {"access_token": "t", "expires_in": 90})) == ("t", 90.0)
    assert protocol.read_token(CONFIG, raw(200, {"access_token": "t", "expires_in": "45"})) == ("t", 45.0)


@pytest.mark.parametrize("expires_in", [None, "soon", [1]])
def test_an_unusable_expiry_means_the_default_lifetime(expires_in):
    body = {"access_token": "t"} if expires_in is None else {"access_token": "t", "expires_in": expires_in}
    assert protocol.read_token(CONFIG, raw(200, body)) == ("t", protocol.DEFAULT_TOKEN_LIFETIME)
    assert protocol.DEFAULT_TOKEN_LIFETIME == 300.0


@pytest.mark.parametrize("expires_in", [float("nan"), "nan", "inf", "1e400", -5, 0])
def test_an_expiry_that_is_not_a_positive_number_means_the_default_lifetime(expires_in):
    # NaN or 0 made every call fetch a token; inf a token never renewed before it expired.
    body = json.dumps({"access_token": "t", "expires_in": expires_in}).encode()
    assert protocol.read_token(CONFIG, raw(200, body)) == ("t", protocol.DEFAULT_TOKEN_LIFETIME)


@pytest.mark.parametrize("token", ["QZX-abc\n", "QZX abc", "QZX\x00abc", "QZX-é", " QZX"])
def test_a_token_no_header_can_carry_is_refused_without_quoting_it(token):
    # requests refused such a header quoting it, as a failure "after the request was sent"; aiohttp raised raw.
    with pytest.raises(WdataAuthError, match="an access_token that an Authorization header cannot carry") as info:
        protocol.read_token(CONFIG, raw(200, {"access_token": token, "expires_in": 600}))
    assert "QZX" not in str(info.value) and not info.value.retryable
    good = "eyJhbGciOi.J9-_~+/abc=="
    assert protocol.read_token(CONFIG, raw(200, {"access_token": good}))[0] == good


def test_a_client_secret_echoed_in_an_oauth_error_is_blanked():
    body = {"error": "invalid_client", "error_description": f"client_secret '{SECRET}' is wrong"}
    with pytest.raises(WdataAuthError) as info:
        protocol.read_token(CONFIG, raw(401, body))
    assert SECRET not in str(info.value) and "client_secret '***' is wrong" in str(info.value)


@pytest.mark.parametrize(
    "answer",
    [
        raw(502, b"<html>Bad gateway. Request: GET /x Authorization: Bearer tok.EN-1 Host: h</html>"),
        raw(400, {"body": ["header was bearer tok.EN-1"], "details": [{"message": "Bearer tok.EN-1", "target": "h"}]}),
        raw(403, {"body": f"client {SECRET} may not"}),
    ],
)
def test_a_credential_echoed_in_an_api_error_is_blanked(answer):
    with pytest.raises(WdataApiError) as info:
        protocol.read_response(GET, answer, CONFIG, 10_000)
    error = info.value
    quoted = " ".join([str(error), *error.messages, *(str(d) for d in error.details)])
    assert "tok.EN-1" not in quoted and SECRET not in quoted
    assert "***" in str(error)


TOKEN = "tok.en123/x"


@pytest.mark.parametrize(
    "answer",
    [
        raw(400, {"body": "bad", "details": [{"message": "no", "target": {"header": f"Bearer {TOKEN}"}}]}),
        raw(400, {"body": "bad", "details": [{"code": ["ok", f"client {SECRET}"]}]}),
        raw(403, {"body": f"token {TOKEN} may not read this"}),
        raw(502, b"<html>" + b" " * 788 + SECRET.encode() + b"</html>"),
        raw(502, b"<html>" + b" " * 788 + TOKEN.encode() + b"</html>"),
        raw(500, b'{"echo": "' + json.dumps(SECRET)[1:-1].replace("/", "\\/").encode() + b'" truncated'),
        raw(302, headers={"Location": f"https://elsewhere.example/?access_token={TOKEN}"}),
    ],
    ids=["nested detail", "detail list", "bare token", "secret cut", "token cut", "json-escaped", "redirect"],
)
def test_no_part_of_a_credential_is_quoted_from_any_error_answer(answer):
    with pytest.raises(WdataApiError) as info:
        protocol.read_response(GET, answer, CONFIG, 10_000, TOKEN)
    error = info.value
    quoted = " ".join([str(error), *error.messages, *(str(d) for d in error.details)])
    for credential in (SECRET, TOKEN):
        for part in (credential[:4], credential[-4:]):
            assert part not in quoted, (part, quoted)


def test_a_credential_cut_where_the_quote_ends_shows_no_part_of_it():
    # Whitespace is folded after the cut, so a credential lying far into a padded body can come into view.
    for padding in range(780, 840):
        for credential in (SECRET, TOKEN):
            body = b"<html>" + b" " * padding + credential.encode() + b" and more</html>"
            with pytest.raises(WdataApiError) as info:
                protocol.read_response(GET, raw(502, body), CONFIG, 10_000, TOKEN)
            assert credential[:3] not in str(info.value), (padding, str(info.value))


@pytest.mark.parametrize("details", [5, "oops", {"message": "x"}, [1, None, {"message": "kept"}]])
def test_error_details_of_any_shape_give_the_api_error(details):
    with pytest.raises(WdataApiError, match="Bad connection") as info:
        protocol.read_envelope(GET, raw(400, {"body": "Bad connection", "details": details}), 1000)
    assert info.value.details == (({"message": "kept"},) if isinstance(details, list) else ())


@pytest.mark.parametrize("status", [400, 401])
def test_an_oauth_error_names_the_connection_and_the_error(status):
    body = {"error": "invalid_client", "error_description": "Client authentication failed"}
    with pytest.raises(WdataAuthError) as info:
        protocol.read_token(CONFIG, raw(status, body))
    error = info.value
    assert error.oauth_error == "invalid_client" and error.status == status and not error.retryable
    assert str(error).startswith(
        "Connection 'wdata_test': the token endpoint https://api.app.wdesk.com/iam/v1/oauth2/token refused the "
        "client credentials (invalid_client: Client authentication failed). Check the client id"
    )
    assert (error.method, error.path) == ("POST", CONFIG.token_url)
    bare = protocol.read_token
    with pytest.raises(WdataAuthError, match=r"\(invalid_grant\)\."):
        bare(CONFIG, raw(status, {"error": "invalid_grant"}))


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (503, True), (429, True), (404, False), (403, False)])
def test_a_token_endpoint_failure_quotes_the_body_without_the_secret(status, retryable):
    body = f"upstream says client_secret={SECRET}".encode()
    with pytest.raises(WdataAuthError) as info:
        protocol.read_token(CONFIG, raw(status, body, {"Retry-After": "4"}))
    error = info.value
    assert error.retryable is retryable and error.status == status and error.retry_after == 4.0
    assert f"answered HTTP {status}: upstream says client_secret=***." in str(error)
    assert ("It may recover." in str(error)) is retryable
    assert ("Check extra token_url" in str(error)) is not retryable
    assert SECRET not in str(error)


def test_an_oauth_error_with_a_5xx_is_a_server_failure():
    with pytest.raises(WdataAuthError, match="answered HTTP 500") as info:
        protocol.read_token(CONFIG, raw(500, {"error": "server_error"}))
    assert info.value.oauth_error is None and info.value.retryable


@pytest.mark.parametrize("body", [{}, {"access_token": ""}, {"access_token": 5}, b"", b"not json", [1]])
def test_a_token_answer_without_a_token_says_so_without_quoting_it(body):
    with pytest.raises(WdataAuthError, match="answered HTTP 200 without an access_token") as info:
        protocol.read_token(CONFIG, raw(200, body))
    assert "not json" not in str(info.value)
    assert not info.value.retryable


def test_a_401_after_a_fresh_token_is_an_auth_error_naming_the_grant():
    with pytest.raises(WdataAuthError) as info:
        protocol.read_response(GET, raw(401, {"body": "token revoked"}), CONFIG, 100)
    assert str(info.value).startswith("Connection 'wdata_test': the API refused a freshly issued token for GET ")
    assert "(token revoked)" in str(info.value) and info.value.status == 401
    with pytest.raises(WdataAuthError, match=r"\(HTTP 401\)"):
        protocol.read_response(GET, raw(401), CONFIG, 100)
    assert protocol.read_response(GET, raw(200, {"body": 1}), CONFIG, 100).body == 1
