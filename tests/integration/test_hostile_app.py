"""Integration: what a hostile or careless client meets — bearer tokens on /feedback and
/metrics, request ids that are credited once and only where issued, the training rules on
inputs, compressed bodies and zip bombs, missing content types and slash-suffixed paths."""

import gzip
import time
import zlib

import orjson
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.problems import Kind, ServiceError
from api.serving import parse
from api.settings import Settings
from api.store import ModelStore
from api.strategies import build
from tests.conftest import PENGUIN, served_model
from tests.integration.test_bandit_app import CONFIG as BANDIT

MODES = {"fast": {"fast_path": True}, "route": {"fast_path": False}}


def bandit_app(artifacts, tmp_path, ttl=86400.0, **settings):
    store = ModelStore(
        {
            name: served_model(name, artifacts[tag], tag)
            for name, tag in (("worse", "v1"), ("better", "v2"))
        }
    )
    strategy = build(parse(BANDIT), tmp_path / "state.sqlite", ttl)
    return create_app(Settings(**settings), store, strategy)


def single_app(artifacts, **settings):
    store = ModelStore({"default": served_model("default", artifacts["v1"], "v1")})
    return create_app(Settings(**settings), store)


def ask(client, **headers):
    r = client.post("/predict", json={"instances": [PENGUIN]}, headers=headers)
    assert r.status_code == 200, r.text
    return r.headers["x-request-id"]


def feedbacks(client):
    """Feedback counted in the bandit's state store (what every worker learns from)."""
    totals = client.app.state.core.strategy._state.totals()
    return sum(count for _, _, count in totals.values())


# -- who may send feedback and read metrics


def test_feedback_needs_one_of_the_tokens_when_they_are_set(artifacts, tmp_path):
    app = bandit_app(artifacts, tmp_path, feedback_token="first-token, second-token")
    with TestClient(app) as client:
        request_id = ask(client)
        body = {"request_id": request_id, "reward": 1}
        none = client.post("/feedback", json=body)
        assert none.status_code == 401 and none.headers["www-authenticate"] == "Bearer"
        assert none.json()["error"] == {
            "code": "unauthorized",
            "message": "POST /feedback needs a bearer token: send 'Authorization: Bearer <token>'",
            "details": [],
        }
        basic = client.post("/feedback", json=body, headers={"authorization": "Basic Zm9vOmJhcg=="})
        assert basic.status_code == 401
        empty = client.post("/feedback", json=body, headers={"authorization": "Bearer "})
        assert empty.status_code == 401
        for wrong in ("first-toke", "first-token2", "second-token,first-token", "FIRST-TOKEN"):
            r = client.post("/feedback", json=body, headers={"authorization": f"Bearer {wrong}"})
            assert r.status_code == 403, wrong
            assert r.json()["error"] == {
                "code": "forbidden",
                "message": "the bearer token given is not allowed for POST /feedback",
                "details": [],
            }
        assert feedbacks(client) == 0
        ok = client.post("/feedback", json=body, headers={"authorization": "bearer second-token"})
        assert ok.status_code == 200 and feedbacks(client) == 1
        other = {"request_id": ask(client), "reward": 0}
        ok = client.post("/feedback", json=other, headers={"authorization": "Bearer first-token"})
        assert ok.status_code == 200 and feedbacks(client) == 2
        # the token is checked before the body: no unauthenticated probing of request ids
        probe = client.post("/feedback", json={"request_id": "nope", "reward": 1})
        assert probe.status_code == 401


def test_metrics_need_their_own_token_and_predictions_none(artifacts):
    with TestClient(single_app(artifacts, metrics_token="scrape-me")) as client:
        assert client.get("/metrics").status_code == 401
        wrong = client.get("/metrics", headers={"authorization": "Bearer feedback"})
        assert wrong.status_code == 403
        ok = client.get("/metrics", headers={"authorization": "Bearer scrape-me"})
        assert ok.status_code == 200 and "lockserve_requests" in ok.text
        ask(client)
        assert client.get("/health/ready").status_code == 200
        assert client.get("/model").status_code == 200


def test_without_tokens_feedback_and_metrics_are_open(artifacts, tmp_path):
    with TestClient(bandit_app(artifacts, tmp_path)) as client:
        assert client.get("/metrics").status_code == 200
        r = client.post("/feedback", json={"request_id": ask(client), "reward": 1})
        assert r.status_code == 200


def test_tokens_do_not_show_in_the_settings_repr():
    settings = Settings(feedback_token="s3cret-f", metrics_token="s3cret-m")
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.model_dump())


# -- request ids: credited once, within the TTL, only where the strategy issued them


def test_a_request_id_is_credited_once_and_only_within_its_ttl(artifacts, tmp_path):
    with TestClient(bandit_app(artifacts, tmp_path, ttl=0.5)) as client:
        fresh, stale = ask(client), ask(client)
        assert client.post("/feedback", json={"request_id": fresh, "reward": 1}).status_code == 200
        again = client.post("/feedback", json={"request_id": fresh, "reward": 1})
        assert again.status_code == 409
        time.sleep(0.6)
        late = client.post("/feedback", json={"request_id": stale, "reward": 1})
        assert (late.status_code, late.json()["error"]["message"]) == (
            404,
            f"unknown or expired request id {stale!r}",
        )
        assert feedbacks(client) == 1


def test_an_answer_the_strategy_did_not_choose_takes_no_feedback(artifacts, tmp_path):
    import hashlib

    md5 = hashlib.md5(artifacts["v2"]).hexdigest()
    with TestClient(bandit_app(artifacts, tmp_path)) as client:
        body = {
            "id": "pinned-by-version",
            "inputs": [
                {
                    "name": k,
                    "datatype": "BYTES" if isinstance(v, str) else "FP64",
                    "shape": [1],
                    "data": [v],
                }
                for k, v in PENGUIN.items()
            ],
        }
        r = client.post(f"/v2/models/penguin-classifier/versions/{md5}/infer", json=body)
        assert r.status_code == 200, r.text
        fb = client.post("/feedback", json={"request_id": "pinned-by-version", "reward": 1})
        assert fb.status_code == 404 and feedbacks(client) == 0


def test_a_client_request_id_reused_does_not_take_over_the_first_answer(artifacts, tmp_path):
    with TestClient(bandit_app(artifacts, tmp_path)) as client:
        first = client.post(
            "/predict", json={"instances": [PENGUIN]}, headers={"x-request-id": "order-17"}
        ).json()["model"]["variant"]
        for _ in range(20):  # the same id again, answered by whichever variant the bandit picks
            ask(client, **{"x-request-id": "order-17"})
        r = client.post("/feedback", json={"request_id": "order-17", "reward": 1})
        assert r.status_code == 200 and r.json()["variant"] == first


@pytest.mark.parametrize(
    "given", ["x" * 129, "has space", "semi;colon", 'quote"d', "ünïcode", "{json}"]
)
def test_a_request_id_that_could_break_a_log_line_or_the_store_is_replaced(artifacts, given):
    with TestClient(single_app(artifacts)) as client:
        r = client.post(
            "/predict",
            json={"instances": [PENGUIN]},
            headers={"x-request-id": given.encode()},
        )
        assert r.status_code == 200
        assert r.headers["x-request-id"] != given
        assert len(r.headers["x-request-id"]) == 32 and r.headers["x-request-id"].isalnum()
        kept = client.post(
            "/predict", json={"instances": [PENGUIN]}, headers={"x-request-id": "a.b:c-d_e"}
        )
        assert kept.headers["x-request-id"] == "a.b:c-d_e"


@pytest.mark.parametrize("request_id", ["x" * 129, "new\nline", "", "tab\there"])
def test_feedback_refuses_a_request_id_no_request_could_have(artifacts, tmp_path, request_id):
    with TestClient(bandit_app(artifacts, tmp_path)) as client:
        r = client.post("/feedback", json={"request_id": request_id, "reward": 1})
        assert r.status_code == 422
        assert r.json()["error"]["details"][0]["field"] == "request_id"


# -- the rules the model was trained under


SPARSE = {**PENGUIN, "bill_depth_mm": None, "flipper_length_mm": None, "body_mass_g": None}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_row_training_would_have_dropped_is_refused_naming_the_rule(artifacts, mode):
    with TestClient(single_app(artifacts, **MODES[mode])) as client:
        two_missing = {**PENGUIN, "bill_depth_mm": None, "sex": None}
        assert client.post("/predict", json={"instances": [two_missing]}).status_code == 200
        r = client.post("/predict", json={"instances": [PENGUIN, SPARSE, two_missing, SPARSE]})
        assert r.status_code == 422
        error = r.json()["error"]
        rule = (
            "3 of 5 feature values are missing; the model was trained only on rows missing at "
            "most 2 (max_missing_features)"
        )
        assert error["message"] == f"instance 1: {rule}; instance 3: {rule}"
        assert [(d["instance"], d["type"], d["loc"]) for d in error["details"]] == [
            (1, "max_missing_features", ["instances", 1]),
            (3, "max_missing_features", ["instances", 3]),
        ]


def test_every_protocol_applies_the_rule(artifacts):
    with TestClient(single_app(artifacts)) as client:
        mlflow = client.post("/invocations", json={"dataframe_records": [SPARSE]})
        assert mlflow.status_code == 400 and "max_missing_features" in mlflow.text
        oip = client.post(
            "/v2/models/penguin-classifier/infer",
            json={
                "inputs": [
                    {
                        "name": k,
                        "datatype": "BYTES" if k in ("island", "sex") else "FP64",
                        "shape": [1],
                        "data": [v],
                    }
                    for k, v in SPARSE.items()
                ]
            },
        )
        assert oip.status_code == 422 and "max_missing_features" in oip.text


def test_the_rule_is_the_artifacts_own(artifacts):
    from dataclasses import replace

    core = single_app(artifacts).state.core
    assert core.schema.max_missing_features == 2
    sparser = {**SPARSE, "sex": None}  # 4 of 5 missing

    def recorded(rule):
        core.schema = replace(core.schema, max_missing_features=rule)

    recorded(None)  # an artifact that records no rule
    assert core.rows_of([sparser]) == [tuple(sparser.values())]
    recorded(4)
    assert core.rows_of([sparser]) == [tuple(sparser.values())]
    recorded(3)
    with pytest.raises(ServiceError) as refused:
        core.rows_of([sparser])
    assert refused.value.kind is Kind.INVALID


# -- bodies: compressed, bombs, no content type, paths with a slash


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("encoding", ["gzip", "deflate", "GZip", "identity"])
def test_a_compressed_body_is_inflated_on_every_json_route(artifacts, mode, encoding):
    body = orjson.dumps({"instances": [PENGUIN]})
    pack = {"gzip": gzip.compress, "deflate": zlib.compress, "identity": bytes}
    packed = pack[encoding.lower()](body)
    headers = {"content-type": "application/json", "content-encoding": encoding}
    with TestClient(single_app(artifacts, **MODES[mode])) as client:
        plain = client.post("/predict", content=body, headers={"content-type": "application/json"})
        r = client.post("/predict", content=packed, headers=headers)
        assert r.status_code == 200 and r.json() == plain.json()


@pytest.mark.parametrize("mode", sorted(MODES))
def test_bodies_that_do_not_inflate_or_inflate_too_far_are_refused(artifacts, mode):
    headers = {"content-type": "application/json"}
    limit = 64 * 1024
    bomb = gzip.compress(b" " * (50 * limit))  # 3.2 MB of spaces in about 3 KB
    assert len(bomb) < limit
    with TestClient(single_app(artifacts, max_body_bytes=limit, **MODES[mode])) as client:
        r = client.post("/predict", content=bomb, headers={**headers, "content-encoding": "gzip"})
        assert (r.status_code, r.json()["error"]["message"]) == (
            413,
            f"the gzip body inflates past the {limit}-byte limit",
        )
        r = client.post("/predict", content=b"{}", headers={**headers, "content-encoding": "br"})
        assert (r.status_code, r.json()["error"]) == (
            415,
            {
                "code": "unsupported_media_type",
                "message": "content encoding 'br' is not supported; send gzip, deflate or identity",
                "details": [],
            },
        )
        r = client.post("/predict", content=b"{}", headers={**headers, "content-encoding": "gzip"})
        assert r.status_code == 400
        assert r.json()["error"]["message"].startswith("the gzip body does not inflate")
        cut = gzip.compress(orjson.dumps({"instances": [PENGUIN]}))[:-12]
        r = client.post("/predict", content=cut, headers={**headers, "content-encoding": "gzip"})
        assert (r.status_code, r.json()["error"]["message"]) == (400, "the gzip body is truncated")


def test_a_body_exactly_at_the_limit_once_inflated_is_taken():
    from api.middleware import BodyProblem, inflate

    data = b"a" * 1000
    assert inflate(gzip.compress(data), "gzip", 1000) == data
    with pytest.raises(BodyProblem) as too_far:
        inflate(gzip.compress(data + b"b"), "gzip", 1000)
    assert too_far.value.status == 413
    assert inflate(data, " Identity ", 10) == data  # identity is not inflated, nor limited here


@pytest.mark.parametrize("path", ["/predict/", "/feedback/", "/health/live/", "/model/"])
def test_a_path_with_a_trailing_slash_is_a_404_that_says_so_not_a_redirect(artifacts, path):
    with TestClient(single_app(artifacts), follow_redirects=False) as client:
        r = client.request(
            "POST" if "predict" in path or "feedback" in path else "GET",
            path,
            json={"instances": [PENGUIN]},
        )
    assert r.status_code == 404 and "location" not in r.headers
    assert r.json()["error"]["message"] == (
        f"no such path {path!r}; did you mean {path.rstrip('/')!r}?"
    )


@pytest.mark.parametrize("path", ["/health/live", "/health/ready", "/model", "/metrics"])
def test_head_answers_like_get_without_a_body(artifacts, path):
    with TestClient(single_app(artifacts)) as client:
        head, get = client.head(path), client.get(path)
    assert head.status_code == get.status_code == 200
    assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"]
