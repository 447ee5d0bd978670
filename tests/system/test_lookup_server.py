"""System: static serving on real gunicorn (2 workers). A table batch scoring wrote, pinned by
DVC at a rev, answers lookups; `make reload` after serving.yaml moves the table to another rev
switches every worker to the new table, and the reload line names its md5."""

import hashlib
import subprocess
import sys
import time

import pytest
import yaml

from tests import lookup_repo
from tests.conftest import ROOT, run
from tests.lookup_repo import IDS, KEY, TABLE
from tests.servers import SERVER, http, running

pytestmark = pytest.mark.system


def serving(model_rev: str, table_rev: str) -> str:
    return yaml.safe_dump(
        {
            "strategy": "single",
            "variants": {"default": {"rev": model_rev}},
            "lookup": {"path": TABLE, "key": KEY, "rev": table_rev},
        }
    )


def table_md5(repo, rev):
    text = run(["git", "show", f"{rev}:{TABLE}.dvc"], cwd=repo).stdout
    return yaml.safe_load(text)["outs"][0]["md5"]


def test_lookups_follow_a_reload_to_the_table_another_rev_pins(scored_base, artifacts, tmp_path):
    repo = lookup_repo.copy(scored_base, tmp_path / "copy")
    md5 = {tag: hashlib.md5(artifacts[tag]).hexdigest() for tag in ("v1", "v2")}
    path = tmp_path / "serving.yaml"
    path.write_text(serving("t2", "t1"))
    with running(
        SERVER,
        ROOT,
        tmp_path / "log",
        LOCKSERVE_REPO=str(repo),
        LOCKSERVE_SERVING_FILE=str(path),
        LOCKSERVE_PIDFILE=str(tmp_path / "server.pid"),
        WEB_CONCURRENCY="2",
    ) as server:
        before = [http("GET", f"{server.base}/predictions/{key}")[1] for key in IDS[:2] * 4]
        path.write_text(serving("t2", "t2"))
        done = subprocess.run(
            [sys.executable, "-m", "api.reload", "--pidfile", str(tmp_path / "server.pid")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        # the old workers finish what they hold, then stop: within seconds, only new ones answer
        t2 = table_md5(repo, "t2")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            answer = http("GET", f"{server.base}/predictions/{IDS[0]}")[1]
            if answer["table"]["md5"] == t2:
                break
            time.sleep(0.2)
        time.sleep(2.0)  # a worker the reload replaced may answer once more while it drains
        after = [http("GET", f"{server.base}/predictions/{key}")[1] for key in IDS[:2] * 4]
        status, many = http("POST", f"{server.base}/predictions", {"keys": IDS[:3]})
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == (
        f"reloaded: default {md5['v2']} (t2), lookup {TABLE} {table_md5(repo, 't2')} (t2)\n"
    )
    assert {(b["model"]["md5"], b["table"]["md5"]) for b in before} == {
        (md5["v1"], table_md5(repo, "t1"))
    }
    assert {(b["model"]["md5"], b["table"]["md5"]) for b in after} == {
        (md5["v2"], table_md5(repo, "t2"))
    }
    assert status == 200 and [p["key"] for p in many["predictions"]] == IDS[:3]
    assert all("label" in b and set(b["probabilities"]) for b in after)
