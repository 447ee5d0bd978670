"""System: the `dvc plots show` page draws every chart offline, checked in headless Chromium.

Both tasks: the committed penguins reports (classification) and a throwaway git + DVC repo
whose reports/plots/ come from running the four stages in-process on a synthetic regression
table. Chromium loads each page from file:// with no host name resolving; the page may request
nothing but itself and log no error, and its DOM must hold every plot dvc.yaml declares, drawn
as SVG marks that match the plot table's rows. A control shows the check can fail: DVC's
default page (libraries from a CDN) asks the network for them and draws nothing.

Chromium is /usr/bin/chromium (`make browser`); the page template is .dvc/plots-page.html
(`make .dvc/plots-page.html`). Either missing is a failure, not a skip.
"""

import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import yaml
from dvc_render.base import Renderer
from dvc_render.html import PAGE_HTML

from tests.browser import Visit, visit
from tests.conftest import ROOT, dvc, run

pytestmark = pytest.mark.system

PREDICTIONS = "reports/plots/predictions.csv"
CURVES = "reports/plots/curves.csv"
IMPORTANCE = "reports/plots/importance.csv"
# The page is settled once every plot div DVC wrote has its outcome, or vegaEmbed never loaded.
SETTLED = """
typeof vegaEmbed === "undefined" || [...document.querySelectorAll("div[id] > script")]
  .every((script) => script.parentElement.hasAttribute("data-plot-status"))
"""


def plots_show(repo: Path, out: Path, *args: str) -> Path:
    """`dvc plots show -o out` in ``repo``; the page it wrote."""
    dvc("plots", "show", "-o", str(out), *args, cwd=repo)
    return out / "index.html"


def browse(page: Path) -> Visit:
    return visit(page.as_uri(), SETTLED)


# --- the DOM Chromium leaves -----------------------------------------------------------------


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list["Element"] = field(default_factory=list)

    def walk(self) -> Iterator["Element"]:
        yield self
        for child in self.children:
            yield from child.walk()

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}


class Tree(HTMLParser):
    """The serialized DOM as a tree of Elements (SVG elements come with their end tags)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.root = Element("#document", {})
        self.open = [self.root]
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.open[-1].children.append(element)
        if tag not in VOID:
            self.open.append(element)

    def handle_startendtag(self, tag, attrs):
        self.open[-1].children.append(Element(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag):
        for depth in range(len(self.open) - 1, 0, -1):
            if self.open[depth].tag == tag:
                del self.open[depth:]
                return


def charts(dom: str) -> dict[str, Element]:
    """DVC's plot divs by plot path (the div id is the path with special characters as _)."""
    ids = {Renderer.remove_special_chars(p): p for p in CHECKS}
    return {
        ids[e.attrs["id"]]: e
        for e in Tree(dom).root.walk()
        if e.tag == "div" and e.attrs.get("id") in ids
    }


def marks(chart: Element, kind: str) -> list[list[Element]]:
    """The items of each `kind` mark group (rect, symbol, line, rule) Vega drew in the chart."""
    wanted = {f"mark-{kind}", "role-mark"}
    return [g.children for g in chart.walk() if g.tag == "g" and wanted <= g.classes()]


def datum(item: Element) -> dict[str, str]:
    """The fields Vega describes a mark item by (its aria-label, 'name: value; ...')."""
    pairs = (part.split(": ", 1) for part in item.attrs.get("aria-label", "").split("; "))
    return {pair[0]: pair[1] for pair in pairs if len(pair) == 2}


def vertices(path: Element) -> list[tuple[float, float]]:
    """The vertices of a line mark's SVG path ("Mx,yLx,y..." as Vega writes it)."""
    d = path.attrs.get("d", "")
    assert d and "NaN" not in d, f"line path d={d!r}"
    numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", d)]
    return list(zip(numbers[::2], numbers[1::2], strict=True))


def position(item: Element) -> tuple[float, float]:
    """Where Vega placed a point (its transform, translate(x,y))."""
    x, y = re.fullmatch(r"translate\(([^,]+),([^)]+)\)", item.attrs["transform"]).groups()
    return float(x), float(y)


# --- what each chart must show ---------------------------------------------------------------


def check_predictions(chart: Element, table: pd.DataFrame, task: str) -> None:
    if task == "classification":  # confusion matrix: a cell per pair, holding its row count
        cells = [datum(item) for item in marks(chart, "rect")[0]]
        counts = {(c["actual"], c["predicted"]): int(c["xy_count"].replace(",", "")) for c in cells}
        pairs = zip(table["actual"].astype(str), table["predicted"].astype(str), strict=True)
        assert {pair: n for pair, n in counts.items() if n} == Counter(pairs)
        return
    (scatter,) = marks(chart, "symbol")  # a point per row, and the y = x diagonal
    assert len(scatter) == len(table)
    ((diagonal,),) = marks(chart, "line")
    (x0, y0), (x1, y1) = vertices(diagonal)
    assert x1 > x0 and y1 < y0  # rises left to right (SVG y grows downwards)
    for x, y in map(position, scatter):  # and spans every point, both ways
        assert x0 - 1 <= x <= x1 + 1 and y1 - 1 <= y <= y0 + 1


def check_curves(chart: Element, table: pd.DataFrame, task: str) -> None:
    if task == "classification":  # a ROC line per class, through each of its grid points
        lines = [group[0] for group in marks(chart, "line") if group and "class" in datum(group[0])]
        drawn = {datum(line)["class"]: len(vertices(line)) for line in lines}
        assert drawn == table["class"].astype(str).value_counts().to_dict()
        return
    (scatter,) = marks(chart, "symbol")  # a residual per row, and the zero line
    assert len(scatter) == len(table)
    assert {"predicted", "residual"} <= set(datum(scatter[0]))
    assert [len(rules) for rules in marks(chart, "rule")] == [1]


def check_importance(chart: Element, table: pd.DataFrame, task: str) -> None:
    (bars,) = marks(chart, "rect")  # a bar per feature
    assert sorted(datum(bar)["feature"] for bar in bars) == sorted(table["feature"].astype(str))


CHECKS: dict[str, Callable[[Element, pd.DataFrame, str], None]] = {
    PREDICTIONS: check_predictions,
    CURVES: check_curves,
    IMPORTANCE: check_importance,
}


def check_page(page: Path, repo: Path, task: str) -> None:
    """Chromium draws every plot of ``repo`` on ``page``, requesting nothing but the page."""
    seen = browse(page)
    assert seen.requests == [page.as_uri()], seen.requests
    assert seen.failed == [] and seen.errors == [], (seen.failed, seen.errors)
    assert seen.ready
    drawn = charts(seen.dom)
    assert set(drawn) == set(CHECKS)
    for path, chart in drawn.items():
        error = [e for e in chart.walk() if "plot-error" in e.classes()]
        assert chart.attrs.get("data-plot-status") == "rendered", (path, error)
        table = pd.read_csv(repo / path, keep_default_na=False)
        assert len(table), f"{path} has no rows"
        CHECKS[path](chart, table, task)


# --- the two repos ---------------------------------------------------------------------------


def page_template() -> str:
    """The page template .dvc/config names (relative to .dvc/), which must exist."""
    name = dvc("config", "plots.html_template", cwd=ROOT).stdout.strip()
    assert (ROOT / ".dvc" / name).is_file(), f".dvc/{name} is missing: `make .dvc/{name}`"
    return name


def declare(frame: pd.DataFrame) -> dict[str, dict]:
    """params.yaml's `prepare.columns` for a table: each column's type and observed domain."""
    columns = {}
    for name, values in frame.items():
        present = values.dropna()
        decl: dict = {"nullable": bool(values.isna().any())}
        if pd.api.types.is_numeric_dtype(values):
            decl.update(type="number", min=float(present.min()) - 1, max=float(present.max()) + 1)
        else:
            decl.update(type="category", categories=sorted(present.unique().tolist()))
        columns[str(name)] = decl
    return columns


@pytest.fixture(scope="module")
def regression_repo(tmp_path_factory) -> Path:
    """A git + DVC repo with the project's dvc.yaml, plot templates and page template, and
    reports/plots/ from the four stages run in-process on a synthetic regression table."""
    from src import evaluate, featurize, prepare, train
    from tools import synth

    repo = tmp_path_factory.mktemp("regression") / "repo"
    repo.mkdir()
    run(["git", "init", "-q", "-b", "main"], cwd=repo)
    dvc("init", "-q", cwd=repo)
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots")
    name = page_template()
    shutil.copy(ROOT / ".dvc" / name, repo / ".dvc" / name)
    dvc("config", "plots.html_template", name, cwd=repo)

    frame = synth.table(600, 6, task="regression", seed=3)
    raw = repo / "data" / "raw" / "synth.csv"
    synth.write(frame, raw)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["prepare"].update(
        data="data/raw/synth.csv",
        target="target",
        task="regression",
        columns=declare(frame),
        features=[c for c in frame.columns if c != "target"],
    )
    params["train"].update(estimator="random_forest", onnx_parity_rows=500)
    params["train"]["random_forest"]["n_estimators"] = 20
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    prepared, features = repo / "data" / "prepared", repo / "data" / "features"
    model = repo / "models" / "model.zip"
    prepare.run(params["prepare"], prepared, raw)
    featurize.run(params["featurize"], prepared, features)
    train.run(params["train"], features, prepared, model)
    evaluate.run(params["evaluate"], model, prepared / "test.parquet", repo / "reports")
    return repo


def test_classification_page_draws_every_plot_offline(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params["prepare"]["task"] == "classification"
    page_template()
    page = plots_show(ROOT, tmp_path / "plots")
    check_page(page, ROOT, "classification")


def test_regression_page_draws_every_plot_offline(regression_repo, tmp_path):
    page = plots_show(regression_repo, tmp_path / "plots")
    check_page(page, regression_repo, "regression")


def test_default_cdn_page_needs_the_network(regression_repo, tmp_path):
    """The control: DVC's own page asks a CDN for vega and, offline, draws no chart."""
    default = tmp_path / "default.html"
    default.write_text(PAGE_HTML)
    page = plots_show(regression_repo, tmp_path / "plots", "--html-template", str(default))
    seen = browse(page)
    cdn = [url for url in seen.requests if url.startswith("https://cdn.jsdelivr.net/")]
    assert len(cdn) == 3 and len(seen.failed) == 3, (seen.requests, seen.failed)
    assert any("vegaEmbed is not defined" in error for error in seen.errors), seen.errors
    drawn = charts(seen.dom)
    assert set(drawn) == set(CHECKS)
    assert not [e for chart in drawn.values() for e in chart.walk() if e.tag == "svg"]
