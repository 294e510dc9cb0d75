"""The web interface's HTML and static files.

Pages are Jinja2 templates (``templates/``) rendered with autoescaping on,
so nothing from storage or a request reaches a page unescaped.  The CSS
and JavaScript (``static/``) are read once, at start-up, and served from
memory under a URL carrying their content hash (``/ui/static/ui.js?v=...``):
a browser may keep them for a year, and a new release changes the URL.
"""

import hashlib
import os

import attrs
import jinja2

_HERE = os.path.dirname(os.path.abspath(__file__))
STATIC_DIRECTORY = os.path.join(_HERE, "static")
TEMPLATE_DIRECTORY = os.path.join(_HERE, "templates")

_CONTENT_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


def human_size(size):
    """``12.3 MB`` (decimal units, as ``docker images``)."""
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"  # not reached


def short_digest(digest):
    digest = str(digest)
    algorithm, _, hexes = digest.partition(":")
    return f"{algorithm}:{hexes[:12]}" if hexes else digest


@attrs.frozen
class StaticFile:
    body: bytes
    content_type: str
    version: str


def load_static(directory=STATIC_DIRECTORY):
    """{file name: :class:`StaticFile`} for everything in ``directory``."""
    files = {}
    for name in sorted(os.listdir(directory)):
        extension = os.path.splitext(name)[1]
        if extension not in _CONTENT_TYPES:
            continue
        with open(os.path.join(directory, name), "rb") as stream:
            body = stream.read()
        files[name] = StaticFile(
            body, _CONTENT_TYPES[extension], hashlib.sha256(body).hexdigest()[:16]
        )
    return files


class Templates:
    """The page templates, with the helpers they use."""

    def __init__(self, static, directory=TEMPLATE_DIRECTORY):
        self._environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader(directory),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._environment.filters["size"] = human_size
        self._environment.filters["short"] = short_digest
        self._static = static

    def render(self, template, /, **values):
        """The page ``template`` as UTF-8 bytes."""
        return (
            self._environment.get_template(template)
            .render(static=self._static, **values)
            .encode("utf-8")
        )
