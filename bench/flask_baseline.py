"""The lecture's baseline for comparison: a minimal Flask app under `gunicorn -w 4` (sync).

It serves the same artifact the same way the lecture does: load the model once, build a
DataFrame per request, call predict_proba, jsonify. No validation beyond what pandas does.
"""

import os
import pickle
import zipfile

import pandas as pd
from flask import Flask, jsonify, request

ARTIFACT = os.environ.get("BASELINE_ARTIFACT", "models/model.zip")

with zipfile.ZipFile(ARTIFACT) as zf:
    model = pickle.loads(zf.read("model.pkl"))  # noqa: S301 - the bench's own artifact

app = Flask(__name__)


@app.post("/predict")
def predict() -> object:
    frame = pd.DataFrame(request.get_json()["instances"])
    proba = model.predict_proba(frame)
    classes = [str(c) for c in model.classes_]
    return jsonify(
        predictions=[
            {
                "label": classes[p.argmax()],
                "probabilities": dict(zip(classes, p.tolist(), strict=True)),
            }
            for p in proba
        ]
    )


@app.get("/health/ready")
def ready() -> object:
    return {"status": "ready"}
