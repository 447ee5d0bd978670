"""The page's JavaScript reads the artifact contract with the Python side's constants: the
answer rule's tie margin and the graph's output names (api/page/static/features.js)."""

import json
import re

from contract.artifact import OUTPUTS
from contract.labels import TIE
from contract.values import NA_VALUES
from tests.conftest import ROOT

FEATURES_JS = (ROOT / "api/page/static/features.js").read_text()


def constant(name: str) -> str:
    found = re.search(rf"^export const {name} = (.+);$", FEATURES_JS, re.MULTILINE)
    assert found, f"features.js declares no {name}"
    return found.group(1)


def test_the_tie_margin_is_the_label_rules():
    assert float(constant("TIE")) == TIE


def test_the_output_names_are_the_artifacts():
    as_json = re.sub(r"(\w+):", r'"\1":', constant("OUTPUTS"))
    assert json.loads(as_json) == OUTPUTS


def test_the_page_reads_as_missing_what_the_pipeline_does():
    app_js = (ROOT / "api/page/static/app.js").read_text()
    found = re.search(r"^export const MISSING = (\[.*\]);$", app_js, re.MULTILINE)
    assert found, "app.js declares no MISSING"
    assert json.loads(found.group(1)) == NA_VALUES
