"""A notebook (.ipynb) as one self-contained HTML page that runs nothing: what the run page shows of
an executed notebook.

Kept: cell text, markdown rendered to HTML, code (highlighted), images (PNG, JPEG, GIF, WebP and SVG
as ``data:`` images, which never run scripts), text/plain, text/html after sanitising, error
tracebacks (ANSI colours turned into spans). Dropped, with a note in their place: JavaScript
outputs and widget views, which are programs, not documents.

Untrusted HTML (markdown, text/html and text/markdown outputs) goes through nh3 (ammonia) with an
allowlist: no scripts, no event handlers, no ``javascript:``/``data:`` links, no images but ``data:``
ones, no iframes, objects, embeds, forms, SVG, MathML or style sheets. Everything else is built here
from escaped text. The sanitiser is one of three walls: the page also carries a
Content-Security-Policy that allows no script at all (``PAGE_CSP`` as a header, ``META_CSP`` inside
the page for when it is shown through ``srcdoc``), and the dashboard shows it in an
``<iframe sandbox>`` without ``allow-scripts`` or ``allow-same-origin``.

nbconvert is not used: importing it loads nbformat's jsonschema, whose URI grammar alone takes
seconds to build, and its own sanitiser relies on the archived bleach. Markdown is mistune (what
nbconvert uses) with its math plugin; math shows as its TeX source, since MathJax is a script.
Everything heavy is imported inside ``render``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import re
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import orjson

from runyard.errors import InvalidArgument

if TYPE_CHECKING:
    from collections.abc import Callable

#: Largest notebook the server converts, in bytes (a bigger one is answered 413: download it).
MAX_NOTEBOOK = 50 << 20
#: Changes whenever the rendering changes, so that cached pages of an older renderer are not served.
RENDERER = "1"
#: The sandbox of the page, as the dashboard's frame and the page's policy set it: an opaque origin
#: without scripts, forms or navigation of the page around it. A link the reader clicks opens in a
#: tab of its own (links get ``target=_blank``), as a normal page there: a link in a frame that may
#: not navigate anywhere else would only replace the notebook with an error.
SANDBOX = "allow-popups allow-popups-to-escape-sandbox"
#: The page's policy, sent as a header: nothing but inline styles and ``data:`` images, in that
#: sandbox even when the page is opened on its own.
PAGE_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; "
            f"form-action 'none'; frame-ancestors 'none'; sandbox {SANDBOX}")
#: The same inside the page, for a copy shown through an iframe's ``srcdoc`` (which has no headers;
#: ``sandbox`` and ``frame-ancestors`` are ignored in a meta tag, the iframe's attribute does that).
META_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

#: Image types shown, in order of preference, as ``<img src="data:...">``.
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/svg+xml")
#: What a display output is shown as, in order of preference (as nbconvert's ``display_data_priority``);
#: HTML that shows nothing once sanitised (a figure that was only a script) gives way to the next.
DISPLAY_ORDER = ("text/html", *IMAGE_TYPES, "text/markdown", "text/latex", "text/plain")
SCRIPT_TYPES = ("application/javascript", "text/javascript", "application/vnd.jupyter.widget-view+json")

#: Tags untrusted HTML may keep: nh3's defaults (text, lists, tables, images, links), less image maps.
_TAGS = {"a", "abbr", "b", "bdi", "bdo", "blockquote", "br", "caption", "center", "cite", "code", "col",
         "colgroup", "data", "dd", "del", "details", "dfn", "div", "dl", "dt", "em", "figcaption", "figure",
         "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre",
         "q", "rp", "rt", "ruby", "s", "samp", "small", "span", "strike", "strong", "sub", "summary", "sup",
         "table", "tbody", "td", "tfoot", "th", "thead", "time", "tr", "tt", "u", "ul", "var", "wbr"}
#: Style properties an untrusted ``style`` attribute keeps: colours and text, nothing that loads a URL
#: or moves the element out of its cell.
_STYLES = {"color", "background-color", "font-weight", "font-style", "font-family", "font-size",
           "text-align", "text-decoration", "vertical-align", "white-space", "border", "padding"}
_DATA_IMAGE = re.compile(r"data:image/(png|jpeg|gif|webp|svg\+xml);base64,[A-Za-z0-9+/=\s]*\Z")
_ESCAPES = re.compile(r"\x1b\[([0-9;]*)([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?")
_COLOURS = ("black", "red", "green", "yellow", "blue", "magenta", "cyan", "white")


def render(data: bytes, title: str) -> str:
    """The page showing the notebook ``data`` (the file's bytes); ``InvalidArgument`` when it is not a
    notebook (not JSON, no nbformat version, or one this does not read)."""
    notebook = _parse(data)
    markdown = _markdown_renderer()
    code = _highlighter(_language(notebook))
    body: list[str] = []
    cells = notebook.get("cells")
    for cell in cells if isinstance(cells, list) else ():
        if isinstance(cell, dict):
            body.append(_cell(cell, code, markdown))
    return _page(title, "\n".join(body))


def sanitise(fragment: str) -> str:
    """Untrusted HTML made inert: the allowlist above; images only as ``data:`` images."""
    import nh3

    return nh3.clean(fragment, tags=_TAGS, clean_content_tags={"script", "style", "noscript", "template"},
                     attributes={"*": {"class", "title", "style", "align"},
                                 "a": {"href", "hreflang"}, "img": {"src", "alt", "width", "height"},
                                 "td": {"colspan", "rowspan"}, "th": {"colspan", "rowspan", "scope"},
                                 "ol": {"start"}, "col": {"span"}, "colgroup": {"span"}},
                     set_tag_attribute_values={"a": {"target": "_blank"}},
                     attribute_filter=_attribute, url_schemes={"http", "https", "mailto", "data"},
                     url_relative="deny", filter_style_properties=_STYLES)


def _attribute(tag: str, name: str, value: str) -> str | None:
    # An image is shown only from the notebook itself, as a data: image (an <img> never runs what
    # it shows, SVG included): one from elsewhere would tell that server who reads the notebook.
    # A data: URL is never kept as a link: a data: page opened from a link is a document of its own.
    if tag == "img" and name == "src":
        return value if _DATA_IMAGE.match(value.strip()) else None
    if value.lstrip().lower().startswith("data:"):
        return None
    return value


class RenderCache:
    """Pages already rendered, by the notebook's SHA-256 and ``RENDERER``, up to ``budget``
    characters in all, least recently shown dropped first. Shared by the server's worker threads."""

    def __init__(self, budget: int = 64 << 20) -> None:
        self.budget = budget
        self._pages: OrderedDict[str, str] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, sha256: str) -> str | None:
        key = f"{sha256}:{RENDERER}"
        with self._lock:
            page = self._pages.get(key)
            if page is not None:
                self._pages.move_to_end(key)
            return page

    def put(self, sha256: str, page: str) -> None:
        if len(page) > self.budget:
            return
        key = f"{sha256}:{RENDERER}"
        with self._lock:
            if key in self._pages:
                return
            self._pages[key] = page
            self._size += len(page)
            while self._size > self.budget:
                _, dropped = self._pages.popitem(last=False)
                self._size -= len(dropped)


def etag(key: str) -> str:
    """The page's entity tag: its notebook's content and name (``key``) and the renderer that made it."""
    return '"' + hashlib.sha256(f"{key}:{RENDERER}".encode()).hexdigest()[:32] + '"'


def _parse(data: bytes) -> dict[str, Any]:
    try:
        notebook = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise InvalidArgument(f"not a notebook: the file is not JSON ({e})") from None
    if not isinstance(notebook, dict) or not isinstance(notebook.get("nbformat"), int):
        raise InvalidArgument("not a notebook: the JSON has no nbformat version")
    version = notebook["nbformat"]
    if version < 4:
        # Notebooks older than 2015; nbformat (and its costly schema) is loaded for these only.
        try:
            import nbformat

            notebook = dict(nbformat.convert(nbformat.from_dict(notebook), 4))  # type: ignore[no-untyped-call]
        except Exception as e:  # noqa: BLE001 - any failure of an old format is the same answer
            raise InvalidArgument(f"not a notebook this server can show: nbformat {version} ({e})") from None
    elif version > 4:
        raise InvalidArgument(f"not a notebook this server can show: nbformat {version} is newer than 4")
    return notebook


def _language(notebook: dict[str, Any]) -> str:
    meta = _dict(notebook.get("metadata"))
    for key in ("language_info", "kernelspec"):
        info = meta.get(key)
        name = info.get("name" if key == "language_info" else "language") if isinstance(info, dict) else None
        if isinstance(name, str) and name:
            return name
    return "python"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    """A multiline field of the format: a string, or a list of strings (lines with their newlines)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(v for v in value if isinstance(v, str))
    return ""


def _cell(cell: dict[str, Any], code: Callable[[str], str], markdown: Callable[[str, dict[str, Any]], str]) -> str:
    kind = cell.get("cell_type")
    source = _text(cell.get("source"))
    if kind == "markdown":
        return f'<div class="cell markdown">{sanitise(markdown(source, _dict(cell.get("attachments"))))}</div>'
    if kind != "code":  # raw cells are shown as their text
        return f'<div class="cell raw"><pre>{html.escape(source)}</pre></div>'
    count = cell.get("execution_count")
    number = str(count) if isinstance(count, int) else " "
    parts = [f'<div class="cell code"><div class="input"><span class="prompt">In [{number}]:</span>'
             f'<pre class="highlight">{code(source)}</pre></div>']
    outputs = cell.get("outputs")
    for output in outputs if isinstance(outputs, list) else ():
        if isinstance(output, dict):
            parts.append(_output(output, markdown))
    parts.append("</div>")
    return "".join(parts)


def _output(output: dict[str, Any], markdown: Callable[[str, dict[str, Any]], str]) -> str:
    kind = output.get("output_type")
    if kind == "stream":
        stream = "stderr" if output.get("name") == "stderr" else "stdout"
        return f'<div class="output"><pre class="stream {stream}">{ansi_html(_text(output.get("text")))}</pre></div>'
    if kind == "error":
        trace = output.get("traceback")
        text = "\n".join(t for t in trace if isinstance(t, str)) if isinstance(trace, list) and trace else \
            f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"
        return f'<div class="output"><pre class="error">{ansi_html(text)}</pre></div>'
    if kind not in ("display_data", "execute_result"):
        return ""
    data = _dict(output.get("data"))
    prompt = ""
    if kind == "execute_result" and isinstance(output.get("execution_count"), int):
        prompt = f'<span class="prompt">Out[{output["execution_count"]}]:</span>'
    dropped = [m for m in data if m in SCRIPT_TYPES or "javascript" in m or "widget" in m]
    for mime in DISPLAY_ORDER:
        if mime not in data or (dropped and mime == "text/plain"):
            # A script's or widget's text/plain is its repr ("<IPython.core.display.Javascript
            # object>"): saying what was left out tells more.
            continue
        shown = _mime(mime, data[mime], markdown)
        if shown is not None:
            return f'<div class="output">{prompt}{shown}</div>'

    what = "an interactive widget" if any("widget" in m for m in dropped) else \
        "a script" if dropped else "an output of a type this view does not show"
    return (f'<div class="output">{prompt}<p class="dropped">({what}: not shown here, since this view runs '
            "no scripts; download the notebook to see it in Jupyter)</p></div>")


def _mime(mime: str, value: Any, markdown: Callable[[str, dict[str, Any]], str]) -> str | None:
    """One representation as HTML, or None when it shows nothing (then the next one is tried)."""
    text = _text(value)
    if mime == "text/html":
        clean = sanitise(text)
        # HTML that was only a script (a Plotly or Bokeh figure) is empty once sanitised: show the
        # figure's image or its text instead, if the output has one.
        return f'<div class="html">{clean}</div>' if _shows_something(clean) else None
    if mime in IMAGE_TYPES:
        return _image(mime, value)
    if mime == "text/markdown":
        return f'<div class="html">{sanitise(markdown(text, {}))}</div>'
    return f"<pre>{html.escape(text)}</pre>"


def _shows_something(fragment: str) -> bool:
    return "<img" in fragment or "<table" in fragment or bool(re.sub(r"<[^>]*>|\s|&nbsp;", "", fragment))


def _image(mime: str, value: Any, alt: str = "") -> str | None:
    if mime == "image/svg+xml":  # kept as text in the notebook: encoded here, to be shown as an image
        payload = base64.b64encode(_text(value).encode()).decode()
    else:
        payload = "".join(_text(value).split())
        try:
            base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            return None
    return f'<img class="image" alt="{html.escape(alt)}" src="data:{mime};base64,{payload}">'


def _highlighter(language: str) -> Callable[[str], str]:
    """Code of the notebook's language as HTML spans (pygments classes); one lexer and formatter for
    the whole notebook, since making a formatter builds its style sheet."""
    from pygments import highlight  # type: ignore[import-untyped]
    from pygments.formatters import HtmlFormatter  # type: ignore[import-untyped]
    from pygments.lexers import get_lexer_by_name  # type: ignore[import-untyped]
    from pygments.lexers.special import TextLexer  # type: ignore[import-untyped]
    from pygments.util import ClassNotFound  # type: ignore[import-untyped]

    try:
        lexer = get_lexer_by_name(language)
    except ClassNotFound:
        lexer = TextLexer()
    formatter = HtmlFormatter(nowrap=True)
    return lambda source: str(highlight(source, lexer, formatter))


def _markdown_renderer() -> Callable[[str, dict[str, Any]], str]:
    """Markdown to (not yet sanitised) HTML; ``attachment:name`` images become ``data:`` images."""
    import mistune

    class Renderer(mistune.HTMLRenderer):
        def __init__(self) -> None:
            super().__init__(escape=False)
            #: The cell's attachments, set before each cell is converted.
            self.attachments: dict[str, Any] = {}

        def inline_math(self, text: str) -> str:
            # As written ($x$), not as MathJax's \(x\): no MathJax runs here to turn either into math.
            return f'<span class="math">${html.escape(text)}$</span>'

        def image(self, text: str, url: str, title: str | None = None) -> str:
            if url.startswith("attachment:"):
                bundle = self.attachments.get(url.removeprefix("attachment:"))
                types = [m for m in IMAGE_TYPES if isinstance(bundle, dict) and m in bundle]
                shown = _image(types[0], bundle[types[0]], text) if types and isinstance(bundle, dict) else None
                return shown or html.escape(text)
            return str(super().image(text, url, title))

    renderer = Renderer()
    convert = mistune.create_markdown(renderer=renderer, plugins=["math", "table", "strikethrough", "url"])

    def markdown(source: str, attachments: dict[str, Any]) -> str:
        renderer.attachments = attachments
        return str(convert(source))

    return markdown


def ansi_html(text: str) -> str:
    """Terminal text (a traceback, a progress bar) as escaped HTML, its SGR colours and bold as spans;
    every other escape sequence dropped."""
    out: list[str] = []
    fg: str | None = None
    bg: str | None = None
    bold = underline = False
    pos = 0

    def emit(piece: str) -> None:
        if not piece:
            return
        classes = [c for c in (fg and fg.startswith("ansi") and fg, bg and bg.startswith("ansi") and bg) if c]
        styles = [s for s in (fg and not fg.startswith("ansi") and f"color:{fg}",
                              bg and not bg.startswith("ansi") and f"background-color:{bg}") if s]
        if bold:
            classes.append("ansi-bold")
        if underline:
            classes.append("ansi-underline")
        if classes or styles:
            attrs = f' class="{" ".join(classes)}"' if classes else ""
            attrs += f' style="{";".join(styles)}"' if styles else ""
            out.append(f"<span{attrs}>{html.escape(piece)}</span>")
        else:
            out.append(html.escape(piece))

    for match in _ESCAPES.finditer(text):
        emit(text[pos:match.start()])
        pos = match.end()
        if match.group(2) != "m":
            continue
        codes = [int(c) if c.isdigit() else 0 for c in (match.group(1) or "0").split(";")]
        i = 0
        while i < len(codes):
            code = codes[i]
            if code == 0:
                fg = bg = None
                bold = underline = False
            elif code == 1:
                bold = True
            elif code == 22:
                bold = False
            elif code == 4:
                underline = True
            elif code == 24:
                underline = False
            elif 30 <= code <= 37 or 90 <= code <= 97:
                fg = f"ansi-{_COLOURS[code % 10]}{'-intense' if code >= 90 else ''}-fg"
            elif 40 <= code <= 47 or 100 <= code <= 107:
                bg = f"ansi-{_COLOURS[code % 10]}{'-intense' if code >= 100 else ''}-bg"
            elif code == 39:
                fg = None
            elif code == 49:
                bg = None
            elif code in (38, 48):
                colour, used = _extended(codes[i + 1:], "fg" if code == 38 else "bg")
                if code == 38:
                    fg = colour
                else:
                    bg = colour
                i += used
            i += 1
    emit(text[pos:])
    return "".join(out)


def _extended(args: list[int], layer: str) -> tuple[str | None, int]:
    """A 256-colour (``5;n``) or true-colour (``2;r;g;b``) argument: the colour, and how many codes it took."""
    if args[:1] == [5] and len(args) >= 2:
        n = args[1]
        if n < 16:
            return f"ansi-{_COLOURS[n % 8]}{'-intense' if n >= 8 else ''}-{layer}", 2
        if n < 232:
            levels = (0, 95, 135, 175, 215, 255)
            n -= 16
            return f"rgb({levels[n // 36]},{levels[n // 6 % 6]},{levels[n % 6]})", 2
        grey = 8 + 10 * (min(n, 255) - 232)
        return f"rgb({grey},{grey},{grey})", 2
    if args[:1] == [2] and len(args) >= 4:
        r, g, b = (max(0, min(255, v)) for v in args[1:4])
        return f"rgb({r},{g},{b})", 4
    return None, len(args)


def _page(title: str, body: str) -> str:
    from pygments.formatters import HtmlFormatter

    code_css = HtmlFormatter(style="default").get_style_defs(".highlight")
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{META_CSP}">'
            f'<meta name="referrer" content="no-referrer"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}\n{code_css}</style></head><body><main class=\"notebook\">{body}</main></body></html>")


_ANSI_CSS = "\n".join(
    f".ansi-{name}{'-intense' if bright else ''}-{layer} {{ {'color' if layer == 'fg' else 'background'}: {rgb} }}"
    for layer in ("fg", "bg")
    for bright, palette in ((False, ("#3e424d", "#e75c58", "#00a250", "#ddb62b", "#208ffb", "#d160c4", "#60c6c8",
                                     "#c5c1b4")),
                            (True, ("#282c36", "#b22b31", "#007427", "#b27d12", "#0065ca", "#a03196", "#258f8f",
                                    "#a1a6b2")))
    for name, rgb in zip(_COLOURS, palette, strict=True))

_CSS = """
body { margin: 0; padding: 16px 20px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
       color: #1d2330; background: #fff; }
.notebook { max-width: 1100px; }
.cell { margin: 0 0 14px; }
.cell.markdown { padding: 0 4px 0 72px; }
.input, .output { display: flex; gap: 8px; align-items: flex-start; }
.output { margin-top: 4px; padding-left: 0; }
.prompt { flex: 0 0 64px; text-align: right; font: 12px/1.9 ui-monospace, monospace; color: #6b7385; }
.output > :not(.prompt) { min-width: 0; overflow-x: auto; }
.output:not(:has(.prompt)) { padding-left: 72px; }
pre { margin: 0; font: 13px/1.4 ui-monospace, "SFMono-Regular", Menlo, monospace; white-space: pre-wrap;
      word-break: break-word; }
.input pre { flex: 1; background: #f5f6f8; border: 1px solid #e2e5ea; border-radius: 4px; padding: 6px 8px; }
pre.stderr { background: #fdf0f0; padding: 2px 6px; }
pre.error { background: #fdf0f0; padding: 6px 8px; border-radius: 4px; }
.dropped { margin: 2px 0; color: #6b7385; font-style: italic; }
img { max-width: 100%; height: auto; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #e2e5ea; padding: 3px 8px; text-align: right; }
thead th { background: #f5f6f8; }
.markdown img { max-width: 100%; }
.ansi-bold { font-weight: bold; }
.ansi-underline { text-decoration: underline; }
""" + _ANSI_CSS
