"""Packaging figures: `make bench-package` (python -m bench.package; not part of `make test`).

Builds the three artifacts of the model dvc.lock pins at HEAD and measures, in one run:
- build time per target with the base root filesystem and the installed dependencies cached,
  and the two cold steps on their own (mmdebstrap's base, the dependency install);
- sizes: the image unpacked and as an archive, the Lambda zip and what it unzips to, the
  systemd tarball; and the serving dependencies against a deploy host's (requirements/api.lock,
  the baseline: DVC, scikit-learn, pandas);
- start to first answer, ``--runs`` times each: the Lambda zip through awslambdaric and a local
  Runtime API, the container in podman, the systemd install's command, and the baseline, the
  repo's own server resolving the rev through DVC as `make deploy` does.
Figures: bench/results/package.json, package.md and the README.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from bench import publish
from package import deps, oci, tree_bytes
from tests.conftest import PENGUIN, venv_env
from tests.containers import PODMAN, RUN
from tests.lambda_runtime import FakeRuntimeApi, http_api_v2_event, start_runtime
from tests.servers import GUNICORN, Server, free_port, http

log = logging.getLogger("lockserve.bench")

ROOT = Path(__file__).resolve().parents[1]
BODY = {"instances": [PENGUIN]}
DEBIAN_PYTHON = "/usr/bin/python3.11"


def _package(target: str, out: Path, cache: Path) -> dict[str, Any]:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "package", "--target", target, "--out", str(out)],
        cwd=ROOT,
        env=venv_env(LOCKSERVE_PACKAGE_CACHE=str(cache)),
        check=True,
        capture_output=True,
    )
    facts = json.loads((out / target / "manifest.json").read_text())
    return {**facts, "wall_s": round(time.perf_counter() - started, 1)}


def _first_answer(start: Any, base: str, deadline_s: float = 120) -> float:
    """Seconds from ``start()`` to the first 200 from POST /predict at ``base``."""
    started = time.perf_counter()
    start()
    while time.perf_counter() - started < deadline_s:
        with contextlib.suppress(OSError):
            if http("POST", f"{base}/predict", BODY, timeout=2)[0] == 200:
                return time.perf_counter() - started
        time.sleep(0.02)
    raise RuntimeError(f"no answer from {base} in {deadline_s} s")


def lambda_cold(zip_path: Path, scratch: Path) -> float:
    task = scratch / "task"
    if not task.exists():
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(task)
    with FakeRuntimeApi() as api:
        started = time.perf_counter()
        proc = start_runtime(api, task, None)
        try:
            kind, answer = api.invoke(http_api_v2_event("POST", "/predict", BODY))
            assert kind == "response" and answer["statusCode"] == 200, answer
            return time.perf_counter() - started
        finally:
            proc.kill()
            proc.wait()


def podman_true(image: str) -> float:
    """The container runtime's own share: podman running /bin/true in the same image."""
    started = time.perf_counter()
    subprocess.run(
        [*PODMAN, *RUN, "--entrypoint", "/bin/true", image], check=True, capture_output=True
    )
    return time.perf_counter() - started


def imports(task: Path, modules: str) -> float:
    """Seconds to import ``modules`` in the unpacked zip (Debian's python3.11 -S), best of 5."""
    code = f"import time; t = time.perf_counter(); import {modules}; print(time.perf_counter() - t)"
    runs = [
        float(
            subprocess.run(
                [DEBIAN_PYTHON, "-S", "-c", code],
                cwd=task,
                env={"PYTHONPATH": str(task), "LOCKSERVE_BUNDLE": str(task / "bundle")},
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        for _ in range(5)
    ]
    return min(runs)


def container_cold(image: str, scratch: Path) -> float:
    port = free_port()
    name = f"lockserve-bench-{port}"
    command = [*PODMAN, *RUN, "--name", name, "-e", "HOST=127.0.0.1"]
    command += ["-e", f"PORT={port}", "-e", "LOCKSERVE_GRPC_PORT=0", "-e", "WEB_CONCURRENCY=1"]
    holder: list[subprocess.Popen] = []

    def start() -> None:
        holder.append(
            subprocess.Popen(
                [*command, image], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )

    try:
        return _first_answer(start, f"http://127.0.0.1:{port}")
    finally:
        subprocess.run([*PODMAN, "rm", "--force", name], capture_output=True)
        for proc in holder:
            proc.wait(30)


def server_cold(command: list[str], cwd: Path, log_path: Path, **env: str) -> float:
    port = free_port()
    holder: list[Server] = []
    try:
        return _first_answer(
            lambda: holder.append(Server(command, cwd, port, log_path, **env)),
            f"http://127.0.0.1:{port}",
        )
    finally:
        for server in holder:
            server.stop()


def systemd_cold(tarball: Path, manifest: dict, scratch: Path) -> float:
    root = scratch / "host"
    if not root.exists():
        root.mkdir()
        subprocess.run(["tar", "-C", str(root), "-xzf", str(tarball)], check=True)
    prefix = root / manifest["prefix"].lstrip("/")
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{prefix}:{prefix}/site",
        "LOCKSERVE_BUNDLE": str(prefix / "bundle"),
        "LOCKSERVE_BUNDLE_MD5": manifest["md5"],
        "LOCKSERVE_GRPC_PORT": "0",
        "WEB_CONCURRENCY": "1",
    }
    command = [manifest["python"], "-S", "-m", "api.serve"]
    return server_cold(command, prefix, scratch / "systemd.log", **env)


def site_bytes(requirements: Path, scratch: Path) -> int:
    """Installed size of a lock's wheels for the packaged platform (no .pyc)."""
    target = scratch / requirements.stem
    deps.install(requirements, target, wheels_only=False)  # sdists too: antlr4 has no wheel
    shutil.rmtree(target / "bin", ignore_errors=True)
    return tree_bytes(target)


def summary(stats: list[float]) -> dict[str, float]:
    return {
        "median_s": round(statistics.median(stats), 2),
        "min_s": round(min(stats), 2),
        "max_s": round(max(stats), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="cold starts of each kind")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    with tempfile.TemporaryDirectory(prefix="lockserve-bench-package-") as tmp:
        scratch = Path(tmp)
        cache = scratch / "cache"
        log.info("base root filesystem, cold (mmdebstrap)")
        started = time.perf_counter()
        subprocess.run([*oci.BASE_COMMAND, str(scratch / "base.tar")], check=True)
        mmdebstrap_s = time.perf_counter() - started
        base_bytes = (scratch / "base.tar").stat().st_size
        (scratch / "base.tar").unlink()
        runtime_bytes = site_bytes(ROOT / "requirements" / "runtime.lock", scratch)
        api_bytes = site_bytes(ROOT / "requirements" / "api.lock", scratch)

        log.info("the Lambda zip with an empty cache (dependencies installed and compiled)")
        cold_lambda = _package("lambda", scratch / "cold", cache)
        built: dict[str, dict[str, Any]] = {}
        for target in ("oci", "lambda", "systemd"):
            log.info("building %s (caches warm)", target)
            _package(target, scratch / "warm-up", cache)  # the base image in storage too
            built[target] = _package(target, scratch / "dist", cache)
        md5 = built["oci"]["md5"]
        (zip_name,) = list(built["lambda"]["files"])
        (tar_name,) = [n for n in built["systemd"]["files"] if n.endswith(".tar.gz")]
        (archive_name,) = list(built["oci"]["files"])

        starts: dict[str, list[float]] = {
            k: [] for k in ("lambda", "oci", "podman_true", "systemd", "repo")
        }
        for run in range(args.runs):
            log.info("cold starts, run %d of %d", run + 1, args.runs)
            starts["lambda"].append(lambda_cold(scratch / "dist" / "lambda" / zip_name, scratch))
            starts["oci"].append(container_cold(built["oci"]["image"], scratch))
            starts["podman_true"].append(podman_true(built["oci"]["image"]))
            starts["systemd"].append(
                systemd_cold(scratch / "dist" / "systemd" / tar_name, built["systemd"], scratch)
            )
            starts["repo"].append(
                server_cold(
                    GUNICORN,
                    ROOT,
                    scratch / "repo.log",
                    LOCKSERVE_REV="HEAD",
                    LOCKSERVE_GRPC_PORT="0",
                    WEB_CONCURRENCY="1",
                )
            )
        task = scratch / "task"
        import_s = {
            "core": imports(task, "onnxruntime, numpy, pydantic, orjson, api.core, api.store"),
            "app": imports(task, "api.app"),
            "handler": imports(task, "api.lambda_handler"),
        }
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "md5": md5,
        "runs": args.runs,
        "mmdebstrap_s": round(mmdebstrap_s, 1),
        "base_tar_bytes": base_bytes,
        "lambda_cold_cache_build_s": cold_lambda["build_s"],
        "cpus": os.cpu_count(),
        "import_s": {k: round(v, 3) for k, v in import_s.items()},
        "runtime_deps_bytes": runtime_bytes,
        "api_deps_bytes": api_bytes,
        "build_s": {t: built[t]["build_s"] for t in built},
        "image_bytes": built["oci"]["image_bytes"],
        "oci_archive_bytes": built["oci"]["files"][archive_name]["bytes"],
        "lambda_zip_bytes": built["lambda"]["files"][zip_name]["bytes"],
        "lambda_unzipped_bytes": built["lambda"]["unzipped_bytes"],
        "systemd_tar_bytes": built["systemd"]["files"][tar_name]["bytes"],
        "first_answer": {kind: summary(values) for kind, values in starts.items()},
    }
    publish("package", "bench-package", result, render(result))
    return 0


def render(r: dict[str, Any]) -> str:
    """The README's table and notes from a result."""
    mb = 1e6
    first = r["first_answer"]

    def spread(kind: str) -> str:
        f = first[kind]
        return f"{f['median_s']} s ({f['min_s']}-{f['max_s']})"

    rows = [
        f"| artifact | size | build (caches warm) | start to first answer, median of {r['runs']}"
        " (min-max) |",
        "|---|---|---|---|",
        f"| OCI image | {r['image_bytes'] / mb:.0f} MB unpacked, {r['oci_archive_bytes'] / mb:.0f}"
        f" MB archive | {r['build_s']['oci']} s | {spread('oci')} with podman; podman running "
        f"`/bin/true` in the same image: {spread('podman_true')} |",
        f"| Lambda zip | {r['lambda_zip_bytes'] / mb:.0f} MB, "
        f"{r['lambda_unzipped_bytes'] / 2**20:.0f} MiB unzipped (limit 250) | "
        f"{r['build_s']['lambda']} s | {spread('lambda')} through awslambdaric |",
        f"| systemd tarball | {r['systemd_tar_bytes'] / mb:.0f} MB | {r['build_s']['systemd']} s "
        f"| {spread('systemd')}, the unit's command |",
        f"| baseline: this repo's server, the rev resolved through DVC | - | - | "
        f"{spread('repo')} |",
    ]
    imports = r["import_s"]
    notes = (
        f"Cold steps, cached after the first build: the base root filesystem (mmdebstrap, "
        f"{r['base_tar_bytes'] / mb:.0f} MB) {r['mmdebstrap_s']} s; the Lambda zip with an empty "
        f"cache (dependencies installed from uv's wheel cache, pruned, byte-compiled) "
        f"{r['lambda_cold_cache_build_s']} s. Serving dependencies installed: "
        f"{r['runtime_deps_bytes'] / mb:.0f} MB (requirements/runtime.lock) against "
        f"{r['api_deps_bytes'] / mb:.0f} MB for a deploy host (requirements/api.lock, with "
        f"DVC, scikit-learn, pandas). Imports in the unpacked zip (python3.11 -S, best of 5): "
        f"what the core alone needs {imports['core']:.2f} s, the app with FastAPI and every "
        f"adapter {imports['app']:.2f} s, the whole handler (model verified, loaded, app built) "
        f"{imports['handler']:.2f} s. Model md5 {r['md5']}; {r['date']}, {r['cpus']} cores."
    )
    return "\n".join(rows) + "\n\n" + notes


if __name__ == "__main__":
    sys.exit(main())
