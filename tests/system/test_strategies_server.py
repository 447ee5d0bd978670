"""System: serving.yaml strategies on real gunicorn with 2 workers — canary, shadow, bandit
state shared by workers and kept across a restart, /metrics, and a reload under load."""

import hashlib
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import FLUSH_S
from tests.conftest import PENGUIN, ROOT
from tests.servers import SERVER, http, refused, running

pytestmark = pytest.mark.system


def serve(model_repo, tmp_path, text, **env):
    serving = tmp_path / "serving.yaml"
    serving.write_text(text)
    return running(
        SERVER,
        ROOT,
        tmp_path / "log",
        LOCKSERVE_REPO=str(model_repo),
        LOCKSERVE_SERVING_FILE=str(serving),
        WEB_CONCURRENCY="2",
        LOCKSERVE_STATE_DB=str(tmp_path / "state.sqlite"),
        LOCKSERVE_PIDFILE=str(tmp_path / "server.pid"),
        **env,
    )


def md5s(artifacts):
    return {tag: hashlib.md5(artifacts[tag]).hexdigest() for tag in ("v1", "v2")}


def post(base, body, key=None):
    import urllib.request

    headers = {"content-type": "application/json"}
    if key:
        headers["x-routing-key"] = key
    req = urllib.request.Request(
        base + "/predict", data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status, json.loads(resp.read()), resp.headers["x-request-id"]


def scrape(base):
    import urllib.request

    with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
        return {f.name: f for f in text_string_to_metric_families(resp.read().decode())}


def test_canary_on_two_workers_with_metrics(model_repo, artifacts, tmp_path):
    text = (
        "strategy: canary\nvariants:\n  stable: {rev: v1, weight: 80}\n"
        "  candidate: {rev: v2, weight: 20}\n"
    )
    expected = md5s(artifacts)
    with serve(model_repo, tmp_path, text) as server:
        seen = {}
        for i in range(60):
            _, body, _ = post(server.base, {"instances": [PENGUIN]}, key=f"user-{i}")
            _, again, _ = post(server.base, {"instances": [PENGUIN]}, key=f"user-{i}")
            assert again["model"] == body["model"]
            seen[i] = body["model"]
        # each worker writes its counts at most FLUSH_S after a request: scrape until then
        deadline = time.monotonic() + 10 * FLUSH_S
        while True:
            families = scrape(server.base)
            counted = sum(
                s.value
                for s in families["lockserve_requests"].samples
                if s.name == "lockserve_requests_total"
                and s.labels["path"] == "/predict"
                and s.labels["status"] == "200"
            )
            if counted >= 120 or time.monotonic() > deadline:
                break
            time.sleep(FLUSH_S / 5)
    assert {m["variant"] for m in seen.values()} == {"stable", "candidate"}
    for model in seen.values():
        assert model["md5"] == expected["v1" if model["variant"] == "stable" else "v2"]
    assert counted == 120  # both workers' samples, added up
    assert "lockserve_request_seconds" in families


def test_shadow_answers_with_primary_and_logs_the_shadow(model_repo, artifacts, tmp_path):
    text = (
        "strategy: shadow\nvariants:\n  stable: {rev: v1, role: primary}\n"
        "  candidate: {rev: v2, role: shadow}\n"
    )
    with serve(model_repo, tmp_path, text) as server:
        ids = []
        for _ in range(10):
            _, body, request_id = post(server.base, {"instances": [PENGUIN]})
            assert body["model"]["variant"] == "stable"
            ids.append(request_id)
        time.sleep(1.0)
        families = scrape(server.base)
        lines = [
            json.loads(line)
            for line in server.output().splitlines()
            if line.startswith("{") and '"lockserve.shadow"' in line
        ]
    assert {line["request_id"] for line in lines} == set(ids)
    scored = sum(
        s.value for s in families["lockserve_shadow_instances"].samples if s.name.endswith("_total")
    )
    assert scored == 10


def test_bandit_state_is_shared_by_workers_and_survives_a_restart(model_repo, tmp_path):
    text = (
        "strategy: bandit\nvariants:\n  a: {rev: v1}\n  b: {rev: v2}\n"
        "bandit: {algorithm: epsilon_greedy, epsilon: 0.2, seed: 0}\n"
    )
    with serve(model_repo, tmp_path, text) as server:
        ids = [post(server.base, {"instances": [PENGUIN]})[2] for _ in range(30)]
        for request_id in ids:  # feedback lands on either worker
            status, body = http(
                "POST", server.base + "/feedback", {"request_id": request_id, "label": "Gentoo"}
            )
            assert status == 200, body
        time.sleep(0.3)
        before = {v["variant"]: v for v in http("GET", server.base + "/model")[1]["variants"]}
        assert sum(v["pulls"] for v in before.values()) == 30
        assert sum(v["feedbacks"] for v in before.values()) == 30
    with serve(model_repo, tmp_path, text) as server:
        status, body = http("POST", server.base + "/feedback", {"request_id": ids[0], "reward": 1})
        assert status == 409 and body["error"]["code"] == "conflict"
        after = {v["variant"]: v for v in http("GET", server.base + "/model")[1]["variants"]}
    assert {k: (v["pulls"], v["feedbacks"]) for k, v in after.items()} == {
        k: (v["pulls"], v["feedbacks"]) for k, v in before.items()
    }


def test_bad_serving_file_refuses_to_start_naming_the_field(model_repo, tmp_path):
    serving = tmp_path / "serving.yaml"
    serving.write_text("strategy: canary\nvariants:\n  a: {rev: v1, weight: 1}\n  b: {rev: v2}\n")
    message, _ = refused(
        SERVER,
        ROOT,
        tmp_path / "log",
        LOCKSERVE_REPO=str(model_repo),
        LOCKSERVE_SERVING_FILE=str(serving),
    )
    assert message == (
        f"refusing to start: {serving}: variants.b.weight: canary needs a weight per variant"
    )


def test_reload_under_load_switches_models_without_a_failed_request(
    model_repo, artifacts, tmp_path
):
    canary = (
        "strategy: canary\nvariants:\n  stable: {rev: v1, weight: 90}\n"
        "  candidate: {rev: v2, weight: 10}\n"
    )
    expected = md5s(artifacts)
    results: list[tuple[float, int, str]] = []
    failures: list[str] = []
    stop = threading.Event()

    def client():
        while not stop.is_set():
            try:
                status, body, _ = post(server.base, {"instances": [PENGUIN]})
                results.append((time.monotonic(), status, body["model"]["md5"]))
            except Exception as exc:  # noqa: BLE001 - every failure is counted
                failures.append(repr(exc))

    with serve(model_repo, tmp_path, canary) as server:
        with ThreadPoolExecutor(50) as pool:
            for _ in range(50):
                pool.submit(client)
            time.sleep(2.0)
            (tmp_path / "serving.yaml").write_text(
                "strategy: single\nvariants:\n  candidate: {rev: v2}\n"
            )
            reloaded = time.monotonic()
            os.kill(int((tmp_path / "server.pid").read_text()), signal.SIGHUP)
            time.sleep(6.0)
            stop.set()
        described = http("GET", server.base + "/model")[1]
    assert failures == [] and all(status == 200 for _, status, _ in results)
    assert len(results) > 200
    late = [md5 for at, _, md5 in results if at > reloaded + 4.0]
    assert late and set(late) == {expected["v2"]}
    assert {md5 for at, _, md5 in results if at < reloaded} == {expected["v1"], expected["v2"]}
    assert described["strategy"] == "single" and described["variant"] == "candidate"


def reload_command(tmp_path):
    """`make reload` as the Makefile runs it, against this test's server."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "api.reload", "--pidfile", str(tmp_path / "server.pid")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_reload_reports_what_serves_or_why_it_was_refused(model_repo, artifacts, tmp_path):
    expected = md5s(artifacts)
    with serve(model_repo, tmp_path, "strategy: single\nvariants:\n  a: {rev: v1}\n") as server:
        (tmp_path / "serving.yaml").write_text(
            "strategy: canary\nvariants:\n  a: {rev: v1, weight: 50}\n  b: {rev: v2, weight: 50}\n"
        )
        done = reload_command(tmp_path)
        assert (done.returncode, done.stdout) == (
            0,
            f"reloaded: a {expected['v1']} (v1), b {expected['v2']} (v2)\n",
        )
        (tmp_path / "serving.yaml").write_text("strategy: single\nvariants:\n  a: {rev: v9}\n")
        refused_reload = reload_command(tmp_path)
        assert refused_reload.returncode == 1
        assert refused_reload.stdout.startswith("refused: ") and "v9" in refused_reload.stdout
        assert refused_reload.stdout.count("\n") == 1
        assert http("GET", server.base + "/model")[1]["strategy"] == "canary"
        assert server.stop() == 0
        log = server.output()
    gone = reload_command(tmp_path)
    assert gone.returncode == 2
    assert gone.stdout.startswith("no lockserve server: no running master in pidfile")
    assert "Errno" not in log and "Traceback" not in log
    assert log.count("reload refused, still serving the previous models") == 1
