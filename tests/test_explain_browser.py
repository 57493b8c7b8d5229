"""The HTML explanation, opened in a real headless browser (slow).

The page must render offline: every formula laid out as MathML (no raw TeX or `$`
left in the text), and the data-flow diagram an SVG with a node per intermediate
variable. The browser is the distribution's chromium, driven by Playwright's Python
package with `executable_path` (`playwright install` would download a browser and
fails without network); `.ci/run` installs both. Skips, saying why, only where no
browser can be found.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLES, Example, example_id

from gradgen import pipeline

ROOT = Path(__file__).resolve().parent.parent
BROWSERS = ("chromium", "chromium-browser", "google-chrome")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def page() -> Any:
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="Playwright is not installed (pip install playwright; .ci/run does)",
    )
    executable = next((p for b in BROWSERS if (p := shutil.which(b))), None)
    if executable is None:
        pytest.skip("no chromium on PATH (apt-get install chromium; .ci/run does)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox"]
        )
        context = browser.new_context(offline=True)  # no network at all
        yield context.new_page()
        browser.close()


CHECK = """() => {
  const MATHML = "http://www.w3.org/1998/Math/MathML";
  const formulas = [...document.querySelectorAll("math")];
  return {
    text: document.body.innerText,
    formulas: formulas.length,
    mathml: formulas.filter(m => m.namespaceURI === MATHML).length,
    laidOut: formulas.filter(m => {
      const r = m.getBoundingClientRect();
      return r.width > 0 && r.height > 0;
    }).length,
    unknown: [...document.querySelectorAll("math *")]
      .filter(e => e.namespaceURI !== MATHML).map(e => e.tagName),
    nodes: [...document.querySelectorAll("svg g.node")].map(g => g.dataset.name),
    svgWidth: document.querySelector("svg").getBoundingClientRect().width,
    // laid out by a MathML engine: a fraction's numerator sits above its
    // denominator (as plain inline text they would share a line)
    fractions: [...document.querySelectorAll("mfrac")].map(f => {
      const [top, bottom] = [...f.children].map(c => c.getBoundingClientRect());
      return top.bottom <= bottom.top + 1;
    }),
    scripts: document.scripts.length,
  };
}"""


@pytest.mark.parametrize("ex", EXAMPLES, ids=example_id)
def test_the_html_explanation_renders_in_a_browser(
    ex: Example, page: Any, tmp_path: Path
) -> None:
    g = pipeline.generate(ex.path, ROOT / "generated", explain="html")
    assert g.explanation is not None
    html = tmp_path / f"{ex.name}.html"
    html.write_text(g.explanation, encoding="utf-8")
    page.goto(html.as_uri())
    seen = page.evaluate(CHECK)
    assert seen["scripts"] == 0
    assert seen["formulas"] > 0
    assert seen["mathml"] == seen["formulas"] == seen["laidOut"]
    assert seen["unknown"] == []
    assert seen["fractions"] and all(seen["fractions"])
    for raw in ("$", "\\frac", "\\partial", "\\left", "\\top", "\\odot"):
        assert raw not in seen["text"], raw
    assert "\u2202" in seen["text"]  # the partial sign, as MathML text
    from test_explain import explained

    names = [v.name for v in explained(ex).variables]
    assert set(names) <= set(seen["nodes"])
    assert seen["svgWidth"] > 0
