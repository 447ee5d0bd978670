"""The HTML page `dvc plots show` fills, with vega, vega-lite and vega-embed inlined.

Owns .dvc/plots-page.html, the template .dvc/config names as ``plots.html_template``. DVC's
default page loads the three libraries from a CDN and is blank offline; this one carries their
minified builds from tools/plots/node_modules (exact versions pinned by
tools/plots/package-lock.json, installed by ``npm ci --prefix tools/plots``), so the page works
wherever ``dvc plots show -o`` writes it and needs no network at all.

The page wraps ``vegaEmbed`` (which DVC calls once per plot) to render SVG, so every mark is an
element of the page, and to record each plot's outcome on its div: ``data-plot-status`` is
``rendered`` or ``error``, and an error's message is shown in the div instead of a blank space.

``python -m tools.plots_page [OUT]`` writes the page (default .dvc/plots-page.html); ``make``
does it before ``dvc repro`` and the tests.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import re
from pathlib import Path

log = logging.getLogger("lockserve.plots_page")

ROOT = Path(__file__).resolve().parents[1]
MODULES = ROOT / "tools" / "plots" / "node_modules"
OUT = ROOT / ".dvc" / "plots-page.html"
# Load order matters: vega-lite needs the global `vega`, vega-embed both.
LIBRARIES = ("vega", "vega-lite", "vega-embed")
SOURCE_MAP = re.compile(r"^//# sourceMappingURL=.*$", re.MULTILINE)
# DVC substitutes these in the template; `{scripts}` is left out on purpose (it is where DVC
# would put its CDN <script> tags).
PLACEHOLDERS = ("{plot_divs}", "{refresh_tag}", "{scripts}")

EMBED = """\
(function () {
  "use strict";
  var embed = window.vegaEmbed;
  function failed(el, error) {
    el.setAttribute("data-plot-status", "error");
    var message = document.createElement("pre");
    message.className = "plot-error";
    message.textContent = "plot failed to render: " + (error && error.message || error);
    el.appendChild(message);
    console.error(error);
  }
  function wrapped(target, spec, options) {
    var el = typeof target === "string" ? document.querySelector(target) : target;
    var done = embed(target, spec, Object.assign({ renderer: "svg" }, options || {}));
    if (el) {
      done.then(function () { el.setAttribute("data-plot-status", "rendered"); },
                function (error) { failed(el, error); });
    }
    return done;
  }
  Object.assign(wrapped, embed);
  window.vegaEmbed = wrapped;
})();
"""

PAGE = """\
<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    <meta name="generator" content="{generator}">
    {{refresh_tag}}
    <title>DVC Plot</title>
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
        .plot-error {{
            color: #b00020;
            white-space: pre-wrap;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def version(name: str, modules: Path = MODULES) -> str:
    """The installed version of package ``name``."""
    package = modules / name / "package.json"
    if not package.is_file():
        raise FileNotFoundError(f"{package} is missing: run `npm ci --prefix tools/plots` first")
    return json.loads(package.read_text(encoding="utf-8"))["version"]


def library(name: str, modules: Path = MODULES) -> str:
    """The minified browser build of package ``name``, ready to inline in a <script>."""
    build = modules / name / "build" / f"{name}.min.js"
    if not build.is_file():
        raise FileNotFoundError(f"{build} is missing: run `npm ci --prefix tools/plots` first")
    code = SOURCE_MAP.sub("", build.read_text(encoding="utf-8")).rstrip()
    # "</script" would end the inline element early; "<\/" means the same inside JS strings.
    code = re.sub(r"</(script)", r"<\\/\1", code, flags=re.IGNORECASE)
    leftover = [p for p in PLACEHOLDERS if p in code]
    if leftover:  # DVC would substitute inside the library's code
        raise ValueError(f"{build} contains the template placeholder(s) {leftover}")
    return code


def page(modules: Path = MODULES) -> str:
    """The whole template: the three libraries, the vegaEmbed wrapper, DVC's placeholders."""
    scripts = [library(name, modules) for name in LIBRARIES] + [EMBED.rstrip()]
    return PAGE.format(
        generator=html.escape(", ".join(f"{n} {version(n, modules)}" for n in LIBRARIES)),
        scripts="\n".join(
            f'    <script type="text/javascript">\n{s}\n    </script>' for s in scripts
        ),
    )


def write(out: Path = OUT, modules: Path = MODULES) -> Path:
    """Write the page to ``out`` (atomically) and return its path."""
    text = page(modules)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    versions = ", ".join(f"{n} {version(n, modules)}" for n in LIBRARIES)
    log.info("wrote %s (%d bytes; %s)", out, len(text.encode()), versions)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=OUT, help="default: %(default)s")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write(args.out)


if __name__ == "__main__":
    main()
