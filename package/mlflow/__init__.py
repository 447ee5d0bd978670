"""Target ``mlflow``: the pinned model as an MLflow pyfunc model (``make export-mlflow``).

Writes ``lockserve-<md5>/``, an MLflow model directory that ``mlflow.pyfunc.load_model``,
``mlflow models serve`` and ``spark_udf`` take: the verified model zip as the artifact
``model``; ``model.py`` (this folder's, "models from code") as the pyfunc and ``contract/`` as
its code, so it loads with numpy, pandas, onnxruntime and MLflow alone, never unpickling
lockserve's classes; a signature from the artifact's input schema (numbers ``double``,
categories ``string``, nullable columns optional) and from batch scoring's answer columns
(``label``, ``proba_<class>``, or ``value``); the artifact's name, path, md5, rev and commit as
MLmodel ``metadata.lockserve``; the md5 as the model config, checked against the zip at every
load; pip requirements pinned as ``requirements/clients.lock`` pins them, the versions the
export is written and tested with. MLflow pins pandas < 3, so the model is written by
``write.py`` under .venv-clients' Python (``make clients``), which loads it back and answers
the artifact's example before anything is published. An artifact with no ONNX graph is
refused: the pyfunc runs the graph, as batch scoring does.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from api import artifact as artifacts
from api.resolver import Resolved
from batch.rows import output_columns
from contract.artifact import FORMAT
from contract.schema import Schema
from package import ROOT, Built, Job, PackageError

TARGET = "mlflow"
# an export for MLflow's tools, not a way to deploy lockserve: `--target all` (the default)
# builds the deployable artifacts and leaves it out; `make export-mlflow` builds it
IN_ALL = False
HERE = Path(__file__).resolve().parent
CLIENTS_PYTHON = ROOT / ".venv-clients" / "bin" / "python"
CLIENTS_LOCK = ROOT / "requirements" / "clients.lock"
# what the pyfunc's environment needs, as .venv-clients has it (MLflow pins pandas < 3)
PINNED = ("mlflow-skinny", "numpy", "onnxruntime", "pandas")
ARTIFACT = "model"  # the MLflow artifact model.py reads
WRITE_TIMEOUT_S = 300

log = logging.getLogger("lockserve.package")


def signature(schema: Schema) -> dict[str, list[dict[str, Any]]]:
    """MLflow column specs (``ColSpec`` JSON) of the model's input and answer: a number is a
    ``double``, a category a ``string``, a nullable column optional; the answer's columns are
    batch scoring's (a ``long`` label for integer classes)."""
    inputs = [
        {
            "type": "double" if f.type == "number" else "string",
            "name": f.name,
            "required": not f.nullable,
        }
        for f in schema.features
    ]
    integer_labels = schema.task == "classification" and isinstance(schema.classes[0], int)
    outputs = [
        {
            "type": ("long" if integer_labels else "string") if name == "label" else "double",
            "name": name,
            "required": True,
        }
        for name in output_columns(schema)
    ]
    return {"inputs": inputs, "outputs": outputs}


def requirements(lock: Path = CLIENTS_LOCK) -> list[str]:
    """``name==version`` of each PINNED package, as ``lock`` pins it."""
    pins: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        name, sep, version = line.split(";")[0].partition("==")
        if sep and not line.startswith((" ", "#")):
            pins[name.strip().lower()] = version.strip()
    missing = [name for name in PINNED if name not in pins]
    if missing:
        raise PackageError(
            f"{lock.name} pins no {', '.join(missing)}: the MLflow model's environment needs "
            "them (add them to the clients extra and re-lock)"
        )
    return [f"{name}=={pins[name]}" for name in PINNED]


def metadata(resolved: Resolved, schema: Schema) -> dict[str, Any]:
    """MLmodel ``metadata``: what dvc.lock pinned, and the artifact's format and task."""
    return {
        "lockserve": {
            "artifact": resolved.name,
            "path": resolved.path,
            "md5": resolved.md5,
            "rev": resolved.rev,
            "commit": resolved.commit,
            "format": FORMAT,
            "task": schema.task,
            "target": schema.target,
        }
    }


def _write(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """Run write.py under .venv-clients' Python in ``work``; its facts, or PackageError."""
    (work / "mlflow.json").write_text(json.dumps(spec, indent=2))
    # -I: nothing of this repo or the environment's PYTHON* settings on the path; -B: no
    # bytecode in the copied code. MLflow would otherwise copy a uv project it finds here.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MLFLOW_"))}
    env["MLFLOW_UV_AUTO_DETECT"] = "false"
    command = [str(CLIENTS_PYTHON), "-I", "-B", str(HERE / "write.py"), "mlflow.json"]
    done = subprocess.run(
        command,
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=WRITE_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["no output"]
        raise PackageError(f"writing the MLflow model failed: {lines[-1]}")
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise PackageError("writing the MLflow model said nothing of what it wrote") from None


def build(job: Job) -> Built:
    """The MLflow model directory; figures: MLflow's version, signature, requirements."""
    if not job.onnx:
        raise PackageError(
            "the artifact has no ONNX graph (its estimator could not be converted): the MLflow "
            "model runs the graph; package another target"
        )
    if not CLIENTS_PYTHON.exists():
        raise PackageError(
            f"{CLIENTS_PYTHON} is missing: the MLflow model is written with MLflow from "
            ".venv-clients (make clients)"
        )
    resolved = job.resolved
    try:
        loaded = artifacts.load(resolved.data, resolved.md5)  # the bytes __main__ verified
    except artifacts.ArtifactError as exc:
        raise PackageError(str(exc)) from None
    name = f"lockserve-{resolved.md5}"
    shutil.copytree(
        ROOT / "contract",
        job.work / "code" / "contract",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    shutil.copy2(HERE / "model.py", job.work / "model.py")
    described = signature(loaded.schema)
    example = loaded.metadata.get("example")  # a training row, keyed by feature
    pins = requirements()
    spec = {
        "path": name,
        "model_code": "model.py",
        "artifact_name": ARTIFACT,
        "artifact": (job.bundle / Path(resolved.path).name).relative_to(job.work).as_posix(),
        "code": "code/contract",
        "signature": described,
        "pip_requirements": pins,
        "metadata": metadata(resolved, loaded.schema),
        "md5": resolved.md5,
        "artifact_source": resolved.path,
        "example": {n: example.get(n) for n in loaded.schema.names} if example else None,
    }
    log.info("writing the MLflow model with %s", CLIENTS_PYTHON)
    facts = _write(spec, job.work)
    return Built(
        [job.work / name],
        {
            "mlflow_model": name,
            "mlflow_version": facts["mlflow_version"],
            "flavor": "python_function",
            "signature": described,
            "pip_requirements": pins,
            "example_answer": facts["example_answer"],
        },
    )
