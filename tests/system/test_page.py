"""System: the page at / in headless Chromium against a real server (`make serve`'s gunicorn).

The form built from the schema and prefilled from the artifact's example row answers what
/predict answers; the pinned graph run in the browser (onnxruntime-web, preprocessing in
JavaScript from the same spec) answers what the server answers, within 1e-5, on 300 rows; a CSV
goes in and comes back scored; a bad value shows the API's message beside its field; a
screenshot is not blank; /docs renders with no network. Then the same page on models it was
not written for: a regression behind a shadow, integer classes and Unicode names behind a
canary. Chromium is Debian's (`make browser`), never a download.
"""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from contract.artifact import read
from contract.features import FeatureBuilder
from tests.browser import chromium, compare, instances, on_device, sampled, tab
from tests.conftest import ROOT, build_table_artifact, pinned_repo
from tests.servers import SERVER, http, json_lines, running

pytestmark = pytest.mark.system

PARITY = 1e-5


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_repo_template):
    """The template repo's model (v2 at HEAD) served as `make serve` serves the workspace."""
    base = tmp_path_factory.mktemp("page-server")
    with running(
        SERVER,
        ROOT,
        base / "log",
        LOCKSERVE_REPO=str(model_repo_template / "repo"),
        WEB_CONCURRENCY="2",
    ) as server:
        yield server


@pytest.fixture(scope="module")
def test_split(tmp_path_factory, params, tiny_csv) -> pd.DataFrame:
    """The served model's test split: prepare on the table and params the artifact came from."""
    from src import prepare

    root = tmp_path_factory.mktemp("split")
    (root / "raw.csv").write_text(tiny_csv)
    prepare.run(params["prepare"], root / "prepared", root / "raw.csv")
    return pd.read_parquet(root / "prepared" / "test.parquet")


# --- the penguins model ------------------------------------------------------------------------


def test_the_form_starts_from_a_real_row_and_answers_what_predict_answers(browser, server):
    with tab(browser, server.base + "/") as seen:
        page = seen.page
        model = page.evaluate("window.lockserve.model")
        example = model["example"]
        assert example and set(example) == {f["name"] for f in model["input_schema"]["features"]}
        page.click("#predict")
        page.wait_for_selector("#server-answer:not([hidden])")
        label = page.inner_text("#server-answer .label")
        meta = page.locator("#server-answer .meta")
        status, expected = http("POST", server.base + "/predict", {"instances": [example]})
        assert status == 200
        assert label == str(expected["predictions"][0]["label"])
        assert meta.get_attribute("data-md5") == expected["model"]["md5"] == model["md5"]
        bars = page.locator("#server-answer .bar")
        shown = {
            bars.nth(i).get_attribute("data-class"): float(
                bars.nth(i).get_attribute("data-probability")
            )
            for i in range(bars.count())
        }
        assert shown == expected["predictions"][0]["probabilities"]
        assert seen.exceptions == [] and seen.console_errors == []
        assert seen.hosts() == {"127.0.0.1"}


def test_on_device_answers_equal_the_servers_on_300_rows(browser, server, test_split, artifacts):
    schema = read(artifacts["v2"]).schema
    rows = sampled(schema, test_split, 300)
    assert len(rows) == 300 and any(None in r.values() for r in rows)
    status, expected = http("POST", server.base + "/predict", {"instances": rows})
    assert status == 200
    with tab(browser, server.base + "/") as seen:
        device = on_device(seen.page, rows)
        # the JavaScript preprocessing reads the spec exactly as the numpy one does
        spec = read(artifacts["v2"]).preprocess
        matrix = seen.page.evaluate(
            """async ([spec, names, rows]) => {
                 const { FeatureBuilder } = await import("/page/features.js");
                 return Array.from(new FeatureBuilder(spec, names).rows(
                   rows.map((r) => names.map((n) => r[n]))));
               }""",
            [spec, schema.names, rows],
        )
        assert seen.exceptions == [] and seen.console_errors == []
    numpy = FeatureBuilder(spec, schema.names).rows([[r[n] for n in schema.names] for r in rows])
    assert np.array_equal(np.asarray(matrix, np.float32).reshape(numpy.shape), numpy)
    assert device["model"]["md5"] == expected["model"]["md5"]
    worst, differing = compare(expected["predictions"], device["predictions"])
    assert differing == 0 and worst <= PARITY


def test_the_on_device_switch_shows_both_answers_from_checked_bytes(browser, server):
    with tab(browser, server.base + "/") as seen:
        page = seen.page
        page.check("#device-toggle")
        page.click("#predict")
        page.wait_for_selector("#device-status[data-done=true]")
        assert page.inner_text("#device-answer .label") == page.inner_text("#server-answer .label")
        device_md5 = page.get_attribute("#device-answer .meta", "data-md5")
        assert device_md5 == page.get_attribute("#server-answer .meta", "data-md5")
        status = page.inner_text("#device-status")
        assert "SHA-256" in status and "largest difference from the server" in status
        model_urls = [u for u in seen.requests if "/model/onnx" in u or "/model/preprocess" in u]
        assert len(model_urls) == 2 and all(f"md5={device_md5}" in u for u in model_urls)
        # a second answer reuses the checked session: nothing is downloaded again
        page.click("#predict")
        page.wait_for_function("!document.querySelector('#device-answer').hidden")
        page.wait_for_selector("#device-status[data-done=true]")
        assert len([u for u in seen.requests if "/model/onnx" in u]) == 1
        assert seen.exceptions == [] and seen.console_errors == []


def test_a_graph_whose_bytes_do_not_match_their_sha256_is_not_run(browser, server):
    with tab(browser, server.base + "/") as seen:
        page = seen.page
        page.route(
            lambda url: "/model/onnx" in url,
            lambda route: route.fulfill(response=route.fetch(), body=b"\x08\x07tampered"),
        )
        page.check("#device-toggle")
        page.click("#predict")
        page.wait_for_selector("#device-status.error")
        assert "does not match" in page.inner_text("#device-status")
        assert page.is_hidden("#device-answer")
        assert seen.exceptions == []


def test_a_csv_goes_in_and_comes_back_scored(browser, server, test_split, artifacts, tmp_path):
    schema = read(artifacts["v2"]).schema
    frame = test_split.copy()
    frame.insert(0, "note", [f'bird "{i}", measured' for i in range(len(frame))])
    upload = tmp_path / "birds.csv"
    frame.to_csv(upload, index=False)
    rows = instances(frame, schema)
    status, expected = http("POST", server.base + "/predict", {"instances": rows})
    assert status == 200
    with tab(browser, server.base + "/") as seen:
        page = seen.page
        page.set_input_files("#batch-file", str(upload))
        page.wait_for_function("document.querySelector('#batch-csv').value.includes('measured')")
        page.click("#batch-run")
        page.wait_for_selector("#batch-status[data-done=true]")
        with page.expect_download() as download:
            page.click("#batch-download")
        path = tmp_path / "predictions.csv"
        download.value.save_as(path)
        assert page.locator("#batch-table tr").count() == len(frame) + 1
        assert seen.exceptions == [] and seen.console_errors == []
    back = list(csv.DictReader(io.StringIO(path.read_text())))
    assert len(back) == len(frame)
    assert [r["note"] for r in back] == frame["note"].tolist()
    for got, want in zip(back, expected["predictions"], strict=True):
        assert got["label"] == want["label"]
        assert {c: float(got[f"p_{c}"]) for c in want["probabilities"]} == want["probabilities"]
        assert got["md5"] == expected["model"]["md5"]


def test_a_bad_value_shows_the_apis_message_beside_its_field(browser, server, tmp_path):
    with tab(browser, server.base + "/") as seen:
        page = seen.page
        model = page.evaluate("window.lockserve.model")
        features = model["input_schema"]["features"]
        i = next(i for i, f in enumerate(features) if f["type"] == "number")
        bad = dict(model["example"], **{features[i]["name"]: features[i]["max"] + 100})
        status, error = http("POST", server.base + "/predict", {"instances": [bad]})
        assert status == 422
        page.fill(f"#field-{i}", str(features[i]["max"] + 100))
        page.click("#predict")
        page.wait_for_selector(f"#error-{i}:not(:empty)")
        assert page.inner_text(f"#error-{i}") == error["error"]["details"][0]["message"]
        assert page.is_hidden("#server-answer")
        # a table with the same value names its line and column
        names = [f["name"] for f in features]
        good = ",".join(str(model["example"][n]) for n in names)
        page.fill(
            "#batch-csv", "\n".join([",".join(names), good, ",".join(str(bad[n]) for n in names)])
        )
        page.click("#batch-run")
        page.wait_for_selector("#batch-error:not([hidden])")
        assert page.inner_text("#batch-error") == (
            f"line 3, column '{features[i]['name']}': {error['error']['details'][0]['message']}"
        )
        page.fill("#batch-csv", f"{features[i]['name']}\n{features[i]['max'] + 100}\n")
        page.click("#batch-run")
        page.wait_for_selector("#batch-error:not([hidden])")
        assert page.inner_text("#batch-error").startswith("the CSV has no column")
        assert seen.exceptions == []
        # the one console error is Chromium's note of the 422 response itself
        assert all("status of 422" in e for e in seen.console_errors), seen.console_errors
        # a row the API refuses as a whole is named by its line, with no column
        sparse = {
            f["name"]: None if f["nullable"] else model["example"][f["name"]] for f in features
        }
        blank = ",".join(names) + "\r\n" + ",".join(str(sparse[n] or "") for n in names) + "\r\n"
        status, whole = http("POST", server.base + "/predict", {"instances": [sparse]})
        assert status == 422 and "field" not in whole["error"]["details"][0]
        page.fill("#batch-csv", blank)
        page.click("#batch-run")
        page.wait_for_selector("#batch-error:not([hidden])")
        assert page.inner_text("#batch-error") == (
            f"line 2: {whole['error']['details'][0]['message']}"
        )
        # no answer at all: said on the page, nothing thrown
        page.route(lambda url: url.endswith("/predict"), lambda route: route.abort())
        page.click("#predict")
        page.wait_for_selector("#form-error:not([hidden])")
        assert page.inner_text("#form-error").startswith("the server did not answer")
        page.unroute(lambda url: url.endswith("/predict"))
        assert seen.exceptions == []
        page.unroute_all()
        page.click("#reset")
        page.click("#predict")
        page.wait_for_selector("#server-answer:not([hidden])")
        shot = tmp_path / "page.png"
        page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 30_000  # a blank page is a few kilobytes


TRICKY_CSV = [
    "a,b\r\n1,2\r\n",
    'a,b\n"x, y","say ""hi"""\n',
    'a,b\n"two\nlines",2\n',
    "height,b\n5'11\",1\n6'0\",2\n",  # a quote inside a cell that does not start with one
    'a,b\nabc "x" def,2\n',
    'a,b\n"ab"cd,2\n',
    "a,b\n\n1,2\n\n\n",
    "a,b\n1,2",
    "\ufeffa,b\n1,2\n",
    "a,b\n,\n",
]


def test_the_csv_reader_reads_what_pythons_csv_module_reads(browser, server):
    with tab(browser, server.base + "/") as seen:
        for text in TRICKY_CSV:
            got = seen.page.evaluate(
                "(text) => window.lockserve.parseCSV(text).map((row) => row.cells)", text
            )
            want = [r for r in csv.reader(io.StringIO(text.removeprefix("\ufeff"))) if r]
            assert got == want, text
        unclosed = seen.page.evaluate(
            """() => { try { window.lockserve.parseCSV('a,b\\n"open,1\\n2,3\\n'); }
                       catch (error) { return error.message; } }"""
        )
        assert unclosed == "the quoted cell that starts on line 2 is never closed"
        assert seen.exceptions == []


def test_docs_render_every_operation_with_the_network_off(browser, server):
    status, spec = http("GET", server.base + "/openapi.json")
    operations = sum(len(methods) for methods in spec["paths"].values())
    with tab(browser, server.base + "/docs", ready=".opblock") as seen:
        seen.page.wait_for_function(f"document.querySelectorAll('.opblock').length >= {operations}")
        assert seen.page.locator(".opblock").count() == operations
        assert seen.hosts() == {"127.0.0.1"}
        assert seen.exceptions == []


# --- models the page was not written for -------------------------------------------------------


@pytest.fixture(scope="module")
def unicode_artifacts(tmp_path_factory, params) -> dict[str, bytes]:
    """Integer classes and column names with spaces and non-ASCII letters, two estimators."""
    from tools import synth

    frame = synth.table(300, 6, "multiclass", names="unicode", labels="integers", seed=5)
    base = tmp_path_factory.mktemp("unicode")
    return {
        "v1": build_table_artifact(base / "v1", params, frame, "classification"),
        "v2": build_table_artifact(
            base / "v2", params, frame, "classification", estimator="logistic_regression"
        ),
    }


CASES = {
    "regression-shadow": (
        "regression_artifacts",
        "strategy: shadow\nvariants:\n"
        "  a: {rev: v1, role: primary}\n  b: {rev: v2, role: shadow}\n",
    ),
    "unicode-integer-classes-canary": (
        "unicode_artifacts",
        "strategy: canary\nvariants:\n  a: {rev: v1, weight: 50}\n  b: {rev: v2, weight: 50}\n",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_any_schema_and_strategy(browser, request, tmp_path, case):
    fixture, serving = CASES[case]
    versions = request.getfixturevalue(fixture)
    repo = pinned_repo(tmp_path / "m", versions)
    (tmp_path / "serving.yaml").write_text(serving)
    schema = read(versions["v1"]).schema
    md5s = {tag: hashlib.md5(data).hexdigest() for tag, data in versions.items()}
    with (
        running(
            SERVER,
            ROOT,
            tmp_path / "log",
            LOCKSERVE_REPO=str(repo),
            LOCKSERVE_SERVING_FILE=str(tmp_path / "serving.yaml"),
            LOCKSERVE_MAX_BATCH="25",  # the table below takes several requests:
            LOCKSERVE_MAX_BODY_BYTES="2048",  # by rows, and by bytes
        ) as server,
        tab(browser, server.base + "/") as seen,
    ):
        page = seen.page
        labels = page.locator("#fields label").all_inner_texts()
        assert labels == schema.names
        page.click("#predict")
        page.wait_for_selector("#server-answer:not([hidden])")
        answered = page.get_attribute("#server-answer .meta", "data-md5")
        assert answered in md5s.values()
        shown = page.inner_text("#server-answer .label")
        if schema.task == "regression":
            assert shown.startswith(f"{schema.target} = ")
        else:
            assert int(shown) in schema.classes
        options = page.locator("#device-variant option").all_inner_texts()
        assert options[0] == "the variant that answered"
        assert [o.split(" ")[0] for o in options[1:]] == ["a", "b"]
        rows = sampled(schema, None, 60)
        for variant, tag in (("a", "v1"), ("b", "v2")):
            device = on_device(page, rows, variant)
            assert device["model"]["md5"] == md5s[tag]
            expected = [served_output(versions[tag], rows)]
            worst, differing = compare(expected[0], device["predictions"])
            assert differing == 0 and worst <= PARITY
        # a table: one routing key, so one variant answers every request, and every row
        # names the variant that answered it
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(schema.names)
        writer.writerows([["" if r[n] is None else r[n] for n in schema.names] for r in rows])
        page.fill("#batch-csv", text.getvalue())
        bodies: list[int] = []
        page.on(
            "request",
            lambda r: (
                bodies.append(len(r.post_data_buffer)) if r.url.endswith("/predict") else None
            ),
        )
        page.click("#batch-run")
        page.wait_for_selector("#batch-status[data-done=true]")
        with page.expect_download() as download:
            page.click("#batch-download")
        back = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
        assert len(back) == len(rows) and len({r["md5"] for r in back}) == 1
        tag = next(t for t, m in md5s.items() if m == back[0]["md5"])
        want = served_output(versions[tag], rows)
        if schema.task == "regression":
            assert [float(r[f"predicted_{schema.target}"]) for r in back] == [
                w["value"] for w in want
            ]
        else:
            assert [int(r["label"]) for r in back] == [w["label"] for w in want]
        assert seen.exceptions == [] and seen.console_errors == []
    # more requests than the row limit alone makes, each within the body limit
    assert len(bodies) > -(-len(rows) // 25) and max(bodies) <= 2048
    table = [line for line in json_lines(server.output()) if line.get("path") == "/predict"][1:]
    assert [line["status"] for line in table] == [200] * len(bodies)
    assert sum(line["batch_size"] for line in table) == len(rows)


def served_output(data: bytes, rows: list[dict]) -> list[dict]:
    """What the server's ONNX backend answers for ``rows`` on this artifact."""
    from api.artifact import load
    from api.backends import OnnxBackend, decide, predictions

    artifact = load(data, hashlib.md5(data).hexdigest())
    backend = OnnxBackend(artifact)
    values = [[row[n] for n in artifact.schema.names] for row in rows]
    output = backend.predict(values)
    return predictions(
        backend.task, backend.classes, output, decide(backend.task, backend.classes, output)
    )
