"""Integration: schemathesis generates requests from the served OpenAPI document — every
operation, data that follows the schema and data that breaks it — and checks that no answer
is a 5xx, that every answer is one the document describes (status code, content type, body
schema) and that data breaking the document is refused. The bandit strategy is served, so
/feedback takes part too."""

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import positive_data_acceptance
from schemathesis.generation import GenerationMode

from api.app import create_app
from api.serving import parse
from api.settings import Settings
from api.store import ModelStore
from api.strategies import build
from tests.conftest import served_model

EXAMPLES = 100  # at most, per operation and mode: over 1,000 requests in all (asserted below)
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
BANDIT = "strategy: bandit\nvariants:\n  a: {rev: v1}\n  b: {rev: v2}\n"
# MLflow's scoring server answers these with text under an application/json content type
# ("\n", the version); lockserve answers as MLflow does, so clients see no difference: their
# bodies are not read as JSON (their status codes and the absence of 5xx are checked).
WIRE_AS_MLFLOW = {"GET /ping", "GET /health", "GET /version"}
# Whether these take a document-valid request depends on what no static document says: the
# request id must have been issued and the label be a class (/feedback), the rows must follow
# the served model's schema (/invocations: MLflow's formats carry no schema), a row may miss at
# most the artifact's max_missing_features values (/predict). Their refusals are still checked
# for status, shape and 5xx; /predict's are checked to be that rule and nothing else.
STATE_DEPENDENT = {"POST /feedback", "POST /invocations", "POST /predict"}


@pytest.fixture(scope="module")
def schema(artifacts, tmp_path_factory):
    store = ModelStore(
        {name: served_model(name, artifacts[tag], tag) for name, tag in (("a", "v1"), ("b", "v2"))}
    )
    state = tmp_path_factory.mktemp("fuzz") / "state.sqlite"
    app = create_app(Settings(max_batch=20), store, build(parse(BANDIT), state))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def operations(schema):
    return [result.ok() for result in schema.get_all_operations()]


def only_the_training_rule(response) -> bool:
    details = response.json()["error"]["details"]
    return bool(details) and all(d["type"] == "max_missing_features" for d in details)


def fuzz(op, mode, statuses: Counter) -> None:
    """Run ``EXAMPLES`` generated requests of one operation in one mode, checking each."""
    excluded = [positive_data_acceptance] if op.label in STATE_DEPENDENT else []

    @given(case=op.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        response = case.call()
        statuses[response.status_code] += 1
        assert response.status_code < 500, (op.label, case.body)
        if op.label in WIRE_AS_MLFLOW:
            assert response.status_code == 200, op.label
            return
        case.validate_response(response, excluded_checks=excluded)
        if op.label == "POST /predict" and mode is GenerationMode.POSITIVE:
            assert response.status_code == 200 or only_the_training_rule(response), response.text

    run()


def test_every_generated_request_gets_a_documented_answer_and_never_a_5xx(schema):
    statuses: Counter[int] = Counter()
    ops = operations(schema)
    assert {op.label for op in ops} >= {"POST /predict", "POST /feedback", "GET /model"}
    for op in ops:
        for mode in MODES:
            try:
                fuzz(op, mode, statuses)
            except Unsatisfiable:  # no request breaks it: no body, any string in the path
                assert mode is GenerationMode.NEGATIVE and not op.body, op.label
    assert sum(statuses.values()) >= 1000, statuses
    assert not any(code >= 500 for code in statuses)
    assert statuses[200] >= 40 and statuses[422] >= 100, statuses
