"""Writes the MLflow model the ``mlflow`` target describes, with MLflow itself.

Run by .venv-clients' Python (MLflow pins pandas < 3, so it is not in the main venv) as
``python -I -B write.py SPEC`` in the target's scratch folder; SPEC is the JSON file the target
wrote (paths relative to that folder). It saves the pyfunc ("models from code": model.py, with
``contract/`` as its code and the verified model zip as its artifact), then loads what it saved
and answers the input example with it, so a model that does not load is never published. On
success it writes one JSON line of facts to stdout; on failure one line to stderr, exit 1.
"""

import json
import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("lockserve.package")


def save(spec: dict[str, Any]) -> dict[str, Any]:
    """Save the model SPEC describes, load it back, answer the example; the facts."""
    sys.path.insert(0, str(Path(spec["code"]).resolve().parent))  # model.py imports contract
    import mlflow
    import pandas as pd
    from mlflow.models import Model, ModelSignature
    from mlflow.types import Schema

    signature = ModelSignature(
        Schema.from_json(json.dumps(spec["signature"]["inputs"])),
        Schema.from_json(json.dumps(spec["signature"]["outputs"])),
    )
    example = pd.DataFrame([spec["example"]]) if spec.get("example") else None
    mlflow.pyfunc.save_model(
        spec["path"],
        python_model=spec["model_code"],
        artifacts={spec["artifact_name"]: spec["artifact"]},
        code_paths=[spec["code"]],
        signature=signature,
        input_example=example,
        pip_requirements=spec["pip_requirements"],
        metadata=spec["metadata"],
        model_config={"md5": spec["md5"]},
    )
    # MLflow records where the code and the artifact were copied from: the scratch folder's
    # absolute path, which only its base name is read of; record the repo's own names instead
    saved = Model.load(spec["path"])
    flavor = saved.flavors["python_function"]
    flavor["model_code_path"] = Path(spec["model_code"]).name
    flavor["artifacts"][spec["artifact_name"]]["uri"] = spec["artifact_source"]
    saved.save(str(Path(spec["path"]) / "MLmodel"))
    loaded = mlflow.pyfunc.load_model(spec["path"])
    answered = loaded.predict(example).to_dict("records") if example is not None else None
    return {"mlflow_version": mlflow.__version__, "example_answer": answered}


def main(argv: list[str]) -> int:
    """0 and the facts on stdout, or 1 and one line on stderr."""
    logging.basicConfig(level=logging.ERROR, format="%(message)s")
    try:
        spec = json.loads(Path(argv[0]).read_text())
        facts = save(spec)
    except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds; the target shows one line
        message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        log.error("%s: %s", type(exc).__name__, message)
        return 1
    sys.stdout.write(json.dumps(facts) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
