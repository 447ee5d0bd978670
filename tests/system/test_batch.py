"""System: `python -m batch.score` against a Dask scheduler and workers started on their own
(`dask scheduler`, `dask worker --nworkers 2` on loopback), the model resolved at a rev of a
real git + DVC repo; then the same with the table read from and written to the test suite's
S3 server (SeaweedFS)."""

from __future__ import annotations

import contextlib
import hashlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from batch.rows import Scorer
from tests.conftest import ROOT, venv_env
from tests.integration.test_batch import BAD, GOOD
from tests.servers import free_port

pytestmark = pytest.mark.system

DASK = str(Path(sys.executable).parent / "dask")


@contextlib.contextmanager
def dask_cluster(tmp: Path, workers: int = 2, with_code: bool = True) -> Iterator[str]:
    """A scheduler and a worker process (``workers`` processes of one thread), each in its own
    session, on loopback only; stopped by process id. ``with_code``: started from this checkout
    with it on PYTHONPATH, as the README says (else they cannot import batch/)."""
    from distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = []
    with open(tmp / "dask.log", "wb") as log:
        for cmd in (
            [
                DASK,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--dashboard-address",
                "127.0.0.1:0",
            ],
            [
                DASK,
                "worker",
                address,
                "--nworkers",
                str(workers),
                "--nthreads",
                "1",
                "--host",
                "127.0.0.1",
                "--dashboard-address",
                "127.0.0.1:0",
            ],
        ):
            procs.append(  # from a checkout: the scheduler and workers import batch/
                subprocess.Popen(
                    cmd,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=venv_env(PYTHONPATH=str(ROOT)) if with_code else venv_env(),
                    start_new_session=True,
                )
            )
        try:
            with Client(address, timeout=60) as client:
                client.wait_for_workers(workers, timeout=60)
            yield address
        finally:
            for proc in reversed(procs):
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def batch_score(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "batch.score", *args],
        cwd=ROOT,
        env=venv_env(LOCKSERVE_GRPC_PORT="0", **env),
        capture_output=True,
        text=True,
        timeout=600,
    )


def table(n_copies: int) -> pd.DataFrame:
    frame = pd.DataFrame((GOOD + BAD) * n_copies)
    frame.insert(0, "id", range(len(frame)))
    return frame


def expected(data: bytes, frame: pd.DataFrame) -> pd.DataFrame:
    return Scorer(data, hashlib.md5(data).hexdigest())(frame, keep=["id"])


def test_scoring_on_a_separate_scheduler_and_workers(model_repo, artifacts, tmp_path):
    frame = table(500)  # 3,500 rows
    source = tmp_path / "in"
    source.mkdir()
    for i, part in enumerate(range(0, len(frame), 700)):
        frame.iloc[part : part + 700].to_parquet(source / f"part.{i}.parquet", index=False)
    with dask_cluster(tmp_path) as address:
        done = batch_score(
            str(source),
            str(tmp_path / "out"),
            "--rev",
            "v1",
            "--keep",
            "id",
            "--scheduler",
            address,
            LOCKSERVE_REPO=str(model_repo),
        )
        assert done.returncode == 0, done.stderr
        log = (tmp_path / "dask.log").read_text()
    md5 = hashlib.md5(artifacts["v1"]).hexdigest()
    assert (
        f"scored {len(frame)} rows of {source} (2000 refused, their reasons in `error`) with "
        f"penguin-classifier md5 {md5} (v1)" in done.stderr
    )
    scored = pd.read_parquet(tmp_path / "out")
    pd.testing.assert_frame_equal(scored, expected(artifacts["v1"], frame), check_dtype=False)
    files = sorted((tmp_path / "out").glob("*.parquet"))
    assert len(files) == 5
    assert pq.read_metadata(files[0]).metadata[b"lockserve.md5"] == md5.encode()
    assert "Traceback" not in log  # no worker failed a task


def test_a_missing_column_fails_in_one_line_and_writes_nothing(model_repo, tmp_path):
    source = tmp_path / "in.parquet"
    table(1).drop(columns=["island"]).to_parquet(source)
    done = batch_score(
        str(source), str(tmp_path / "out"), "--workers", "1", LOCKSERVE_REPO=str(model_repo)
    )
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if "lockserve.batch" in line]
    assert lines and lines[-1].endswith(f"batch scoring failed: {source} has no column 'island'")
    assert "Traceback" not in done.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("out")]


def test_scoring_reads_and_writes_s3(model_repo, artifacts, s3, tmp_path):
    import s3fs

    fs = s3fs.S3FileSystem(key=s3.access_key, secret=s3.secret_key, endpoint_url=s3.endpoint)
    bucket = f"batch-{tmp_path.name[-8:].lower()}".replace("_", "-")
    fs.mkdir(bucket)
    frame = table(100)
    with fs.open(f"{bucket}/in.csv", "w") as out:
        frame.to_csv(out, index=False)
    done = batch_score(
        f"s3://{bucket}/in.csv",
        f"s3://{bucket}/scored",
        "--rev",
        "v2",
        "--workers",
        "2",
        LOCKSERVE_REPO=str(model_repo),
        **s3.env(),
    )
    assert done.returncode == 0, done.stderr
    with fs.open(f"{bucket}/scored/part.0.parquet", "rb") as f:
        meta = pq.read_metadata(f).metadata
    assert meta[b"lockserve.md5"] == hashlib.md5(artifacts["v2"]).hexdigest().encode()
    assert not [p for p in fs.ls(bucket) if ".partial-" in p]
    scored = pd.read_parquet(
        f"s3://{bucket}/scored",
        storage_options={
            "key": s3.access_key,
            "secret": s3.secret_key,
            "endpoint_url": s3.endpoint,
        },
    )
    want = expected(artifacts["v2"], frame)
    assert scored["label"].tolist() == want["label"].tolist()
    assert scored["error"].fillna("").tolist() == want["error"].fillna("").tolist()


def test_a_cluster_that_cannot_import_the_code_is_refused_in_one_line(model_repo, tmp_path):
    source = tmp_path / "in.parquet"
    table(1).to_parquet(source)
    with dask_cluster(tmp_path, workers=1, with_code=False) as address:
        done = batch_score(
            str(source),
            str(tmp_path / "out"),
            "--rev",
            "v1",
            "--scheduler",
            address,
            LOCKSERVE_REPO=str(model_repo),
        )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if "batch scoring failed" in line]
    assert "the Dask cluster cannot import lockserve's batch code" in line
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("out")]


def test_a_bad_csv_line_in_a_later_block_fails_in_one_line_without_worker_traces(
    model_repo, tmp_path
):
    source = tmp_path / "in.csv"
    table(300).to_csv(source, index=False)
    with open(source, "a") as out:
        out.write("1,Biscoe,15.0,217.0,5200.0,male,surplus\n")  # one field too many
    done = batch_score(
        str(source),
        str(tmp_path / "out"),
        "--workers",
        "1",
        "--blocksize",
        "16kB",
        LOCKSERVE_REPO=str(model_repo),
    )
    assert done.returncode == 1
    assert (
        done.stderr.rstrip()
        .splitlines()[-1]
        .endswith("(a line counted within one block of --blocksize bytes)")
    )
    assert "Expected 6 fields" in done.stderr and "saw 7" in done.stderr
    assert "Traceback" not in done.stderr and "distributed.worker" not in done.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("out")]


def test_sigterm_while_scoring_removes_what_was_written(model_repo, tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    frame = table(4000)  # 28,000 rows in 40 parts: seconds of work on one worker
    for i, part in enumerate(range(0, len(frame), 700)):
        frame.iloc[part : part + 700].to_parquet(source / f"part.{i:02d}.parquet", index=False)
    proc = subprocess.Popen(
        [sys.executable, "-m", "batch.score", str(source), str(tmp_path / "out"), "--workers", "1"],
        cwd=ROOT,
        env=venv_env(LOCKSERVE_GRPC_PORT="0", LOCKSERVE_REPO=str(model_repo)),
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("out.partial-*/*.parquet")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert (
        err.rstrip()
        .splitlines()[-1]
        .endswith(f"batch scoring stopped: nothing written to {tmp_path / 'out'}")
    )
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("out")]
