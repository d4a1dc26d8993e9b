"""The HTML pages the grader writes (feedback, class report), from jinja2 templates in ``autograder/templates``.

Autoescaping is on for every template: every string that reaches a page (student ids, reasons, the checker's
messages, which quote the student's own values) is escaped by jinja2, not by hand. Only the plots, SVG that
matplotlib drew from numbers and the release's exercise names, are inserted as markup (:func:`trusted`).
"""

from pathlib import Path

import jinja2

TEMPLATES = Path(__file__).resolve().parent / "templates"
STYLE = (TEMPLATES / "style.css").read_text()
_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined,
                          trim_blocks=True, lstrip_blocks=True)


def render(template: str, **context) -> str:
    """``template`` (a file in autograder/templates) rendered with ``context``, every value escaped."""
    return _ENV.get_template(template).render(style=STYLE, **context)


def trusted(markup: str):
    """Markup the grader made itself (an SVG plot), inserted as it is."""
    return jinja2.utils.markupsafe.Markup(markup)
