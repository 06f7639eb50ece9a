"""report.html: the summary rendered through the Jinja2 template, as one self-contained page (inline
CSS and data-URI images, no scripts, no external requests)."""
from __future__ import annotations

import jinja2

from pipeline.report.verdict import p_text

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("pipeline.report", "templates"),
                          autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined,
                          trim_blocks=True, lstrip_blocks=True)
_ENV.filters["pct"] = lambda x: "–" if x is None else f"{x:.2%}"
_ENV.filters["p"] = lambda x: "–" if x is None else p_text(x)
_ENV.filters["num"] = lambda x: "–" if x is None else f"{x:.4g}"


def render(summary: dict, histogram_uri: str | None, tiles: list[dict]) -> str:
    """The page for `summary` (summary.json's content), its histogram PNG and gallery tiles (with
    `image` / `reconstruction` data URIs)."""
    return _ENV.get_template("report.html.j2").render(s=summary, histogram=histogram_uri, tiles=tiles)
