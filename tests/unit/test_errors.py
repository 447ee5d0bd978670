"""Unit: every error is JSON {"error": {"code", "message", "details"}} with the right status,
and a schema violation names which instance and which field."""

import logging

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from pydantic import BaseModel, ValidationError

from api.errors import STATUS, body_of, error_body, error_response, install
from api.middleware import RequestContext
from api.problems import (
    INTERNAL,
    Kind,
    ServiceError,
    from_validation,
    summary,
    validation_details,
)


class Instance(BaseModel):
    x: float
    y: str


class Body(BaseModel):
    instances: list[Instance]


class Tags(BaseModel):
    tags: list[int]


class Meta(BaseModel):
    name: str


class Nested(BaseModel):
    meta: Meta


def errors_of(model: type[BaseModel], body: bytes) -> list[dict]:
    with pytest.raises(ValidationError) as err:
        model.model_validate_json(body)
    return err.value.errors()


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "malformed_json"),
        (404, "not_found"),
        (405, "method_not_allowed"),
        (409, "conflict"),
        (413, "body_too_large"),
        (415, "unsupported_media_type"),
        (422, "invalid_request"),
        (500, "internal_error"),
        (503, "not_ready"),
        (418, "error"),
    ],
)
def test_each_status_has_its_code(status, code):
    assert error_body(status, "why") == {"error": {"code": code, "message": "why", "details": []}}


def test_a_service_error_carries_kind_message_and_details():
    error = ServiceError(Kind.CONFLICT, "already counted", [{"request_id": "r1"}])
    assert str(error) == "already counted"
    assert (error.kind, error.message, error.details) == (
        Kind.CONFLICT,
        "already counted",
        [{"request_id": "r1"}],
    )
    assert ServiceError(Kind.NOT_FOUND, "gone").details == []


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        (Kind.MALFORMED, 400, "malformed_json"),
        (Kind.INVALID, 422, "invalid_request"),
        (Kind.NOT_FOUND, 404, "not_found"),
        (Kind.CONFLICT, 409, "conflict"),
        (Kind.TOO_LARGE, 413, "body_too_large"),
        (Kind.UNAVAILABLE, 503, "not_ready"),
        (Kind.INTERNAL, 500, "internal_error"),
    ],
)
def test_each_kind_has_its_http_status_and_code(kind, status, code):
    assert STATUS[kind] == status
    assert body_of(ServiceError(kind, "why", [{"x": 1}])) == (
        status,
        {"error": {"code": code, "message": "why", "details": [{"x": 1}]}},
    )


def test_every_kind_has_an_http_status():
    assert set(STATUS) == set(Kind)


def test_error_response_carries_its_details():
    response = error_response(422, "bad", [{"field": "x"}])
    assert response.body == (
        b'{"error":{"code":"invalid_request","message":"bad","details":[{"field":"x"}]}}'
    )


def test_error_response_is_json_with_status_and_headers():
    response = error_response(405, "no", headers={"Allow": "POST"})
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.headers["content-type"] == "application/json"
    assert response.body == b'{"error":{"code":"method_not_allowed","message":"no","details":[]}}'


def test_details_name_the_instance_and_the_field():
    body = b'{"instances": [1, {"x": "a", "y": 2}]}'
    details = validation_details(errors_of(Body, body))
    assert [(d.get("instance"), d.get("field"), d["type"], d["loc"]) for d in details] == [
        (0, None, "model_type", ["instances", 0]),  # instance 0 is not an object at all
        (1, "x", "float_parsing", ["instances", 1, "x"]),
        (1, "y", "string_type", ["instances", 1, "y"]),
    ]
    assert details[0]["message"] == "Input should be an object"


def test_details_outside_the_instances_name_the_field_or_nothing():
    assert validation_details(errors_of(Body, b'{"instances": 5}')) == [
        {
            "type": "list_type",
            "message": "Input should be a valid array",
            "loc": ["instances"],
            "field": "instances",
        }
    ]
    (item,) = validation_details(errors_of(Tags, b'{"tags": [1, "x"]}'))
    assert (item["field"], item["loc"], "instance" not in item) == ("tags", ["tags", 1], True)
    (nested,) = validation_details(errors_of(Nested, b'{"meta": {"name": 3}}'))
    assert (nested["field"], nested["loc"]) == ("name", ["meta", "name"])
    (whole,) = validation_details(errors_of(Body, b"[]"))
    assert whole["loc"] == [] and "field" not in whole and "instance" not in whole
    # FastAPI puts "body" first; it names no field
    (routed,) = validation_details(
        [{"type": "missing", "msg": "Field required", "loc": ("body", "y")}]
    )
    assert (routed["loc"], routed["field"]) == (["y"], "y")
    (bare,) = validation_details([{"type": "value_error", "msg": "bad"}])
    assert bare == {"type": "value_error", "message": "bad", "loc": []}


def test_summary_names_the_first_three_problems_and_counts_the_rest():
    details = [
        {"instance": 0, "field": "x", "message": "m0"},
        {"instance": 1, "message": "m1"},
        {"field": "instances", "message": "m2"},
        {"message": "m3"},
        {"message": "m4"},
    ]
    assert summary(details[:1]) == "instance 0, field 'x': m0"
    assert (
        summary(details[:3]) == "instance 0, field 'x': m0; instance 1: m1; field 'instances': m2"
    )
    assert summary(details[3:4]) == "body: m3"
    assert summary(details[:4]).endswith("field 'instances': m2 (+1 more)")
    assert summary(details).endswith("field 'instances': m2 (+2 more)")


def test_a_schema_violation_is_invalid_input_with_every_detail():
    error = from_validation(errors_of(Body, b'{"instances": [{"x": "a", "y": "b"}]}'))
    assert error.kind == Kind.INVALID
    assert error.message == (
        "instance 0, field 'x': Input should be a valid number, unable to parse string as a number"
    )
    assert [d["field"] for d in error.details] == ["x"]


def test_json_that_does_not_parse_is_malformed_with_the_parser_reason():
    error = from_validation(errors_of(Body, b"{bad"))
    assert (error.kind, error.details) == (Kind.MALFORMED, [])
    assert (
        error.message == "request body is not valid JSON: key must be a string at line 1 column 2"
    )
    without_context = [{"type": "json_invalid", "msg": "JSON decode error", "loc": ("body", 0)}]
    assert from_validation(without_context).message == (
        "request body is not valid JSON: JSON decode error"
    )
    # the first unparseable error decides, whatever comes before it
    mixed = [{"type": "missing", "msg": "Field required", "loc": ("x",)}, *without_context]
    assert from_validation(mixed).kind == Kind.MALFORMED


@pytest.fixture()
def client():
    app = FastAPI(redirect_slashes=False)
    install(app)

    @app.post("/items")
    def items(body: Body) -> dict:
        return {"n": len(body.instances)}

    @app.get("/refused")
    def refused() -> dict:
        raise ServiceError(Kind.CONFLICT, "already counted", [{"why": "twice"}])

    @app.get("/gone")
    def gone() -> dict:
        raise HTTPException(404, "that one is gone")

    @app.get("/read-only")
    def read_only() -> dict:
        raise HTTPException(405, "read-only today")

    @app.get("/no-allow")
    def no_allow() -> dict:
        raise HTTPException(405)

    @app.get("/teapot")
    def teapot() -> dict:
        raise HTTPException(418, "short and stout", headers={"X-Spout": "yes"})

    @app.get("/boom")
    def boom() -> dict:
        raise RuntimeError("secret internals")

    with TestClient(RequestContext(app, 4096), raise_server_exceptions=False) as c:
        yield c


def test_a_route_body_violation_is_422_naming_the_field(client):
    r = client.post("/items", json={"instances": [{"x": 1.0}]})
    assert r.status_code == 422
    assert r.json() == {
        "error": {
            "code": "invalid_request",
            "message": "instance 0, field 'y': Field required",
            "details": [
                {
                    "type": "missing",
                    "message": "Field required",
                    "loc": ["instances", 0, "y"],
                    "instance": 0,
                    "field": "y",
                }
            ],
        }
    }


def test_a_route_body_that_is_not_json_is_400(client):
    r = client.post("/items", content=b"{bad", headers={"content-type": "application/json"})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "malformed_json" and error["details"] == []
    assert error["message"].startswith("request body is not valid JSON: ")
    assert error["message"] != "request body is not valid JSON: JSON decode error"


def test_a_refusal_keeps_its_status_message_and_details(client):
    r = client.get("/refused")
    assert r.status_code == 409 and "www-authenticate" not in r.headers
    assert r.json() == {
        "error": {"code": "conflict", "message": "already counted", "details": [{"why": "twice"}]}
    }


def test_http_errors_keep_their_detail_and_headers(client):
    r = client.get("/teapot")
    assert (r.status_code, r.headers["x-spout"]) == (418, "yes")
    assert r.json() == {"error": {"code": "error", "message": "short and stout", "details": []}}
    r = client.get("/nowhere")
    assert r.status_code == 404
    assert r.json() == {
        "error": {"code": "not_found", "message": "no such path '/nowhere'", "details": []}
    }
    for path, message in (
        ("/refused/", "no such path '/refused/'; did you mean '/refused'?"),
        ("/refused//", "no such path '/refused//'; did you mean '/refused'?"),
        ("/MAX/", "no such path '/MAX/'; did you mean '/MAX'?"),
        ("/", "no such path '/'"),
    ):
        assert client.get(path).json()["error"]["message"] == message, path
    # what a route says itself is kept; the method and path only replace Starlette's words
    assert client.get("/gone").json()["error"]["message"] == "that one is gone"
    assert client.get("/read-only").json()["error"]["message"] == "read-only today"
    no_allow = client.get("/no-allow")
    assert (no_allow.status_code, no_allow.json()["error"]["message"]) == (
        405,
        "GET is not allowed on '/no-allow'",
    )
    r = client.delete("/refused")
    assert (r.status_code, r.headers["allow"]) == (405, "GET")
    assert r.json()["error"] == {
        "code": "method_not_allowed",
        "message": "DELETE is not allowed on '/refused'; use GET",
        "details": [],
    }


def test_an_unexpected_failure_is_500_logged_with_the_request_id(client, caplog):
    with caplog.at_level(logging.ERROR, logger="lockserve.errors"):
        r = client.get("/boom", headers={"x-request-id": "req-42"})
    assert r.status_code == 500
    assert r.json() == {"error": {"code": "internal_error", "message": INTERNAL, "details": []}}
    assert "secret internals" not in r.text
    (record,) = [r for r in caplog.records if r.name == "lockserve.errors"]
    assert record.getMessage() == "unhandled error on GET /boom"
    assert record.fields == {"request_id": "req-42"}
    assert record.exc_info and record.exc_info[0] is RuntimeError


def test_an_unexpected_failure_outside_the_request_context_is_still_json(caplog):
    app = FastAPI()
    install(app)

    @app.get("/boom")
    def boom() -> dict:
        raise RuntimeError("secret internals")

    with TestClient(app, raise_server_exceptions=False) as bare:  # no RequestContext: no id
        with caplog.at_level(logging.ERROR, logger="lockserve.errors"):
            r = bare.get("/boom")
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "internal_error"
    (record,) = [r for r in caplog.records if r.name == "lockserve.errors"]
    assert record.fields == {"request_id": None}


def test_a_failure_never_escapes_the_request_context_to_the_servers_plain_log(caplog):
    """Starlette answers 500 and then re-raises, which the server would print as a plain-text
    traceback; the request context keeps it (the handler logged it as JSON)."""
    app = FastAPI()
    install(app)

    @app.get("/boom")
    def boom() -> dict:
        raise RuntimeError("secret internals")

    async def bare(scope, receive, send):  # fails before any answer
        raise RuntimeError("before any answer")

    with TestClient(RequestContext(app, 4096)) as c:  # raises whatever escapes
        r = c.get("/boom")
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
    with caplog.at_level(logging.ERROR, logger="lockserve.access"):
        r = TestClient(RequestContext(bare, 4096)).get("/x", headers={"x-request-id": "req-7"})
    assert r.status_code == 500 and r.json()["error"]["message"] == INTERNAL
    (record,) = [r for r in caplog.records if r.name == "lockserve.access"]
    assert record.getMessage() == "unhandled error on GET /x"
    assert record.fields == {"request_id": "req-7"}
