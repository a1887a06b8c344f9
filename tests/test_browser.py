"""The built book in a real browser, as a reader without internet access sees it.

Debian's ``chromium`` (apt; never a downloaded browser) is driven headless by playwright over
every page of ``_build/html``, served on 127.0.0.1. Requests to any other host are refused and
reported, so the pages must work offline. On every page:

* it loads, with no console error and no uncaught exception;
* MathJax rendered every formula: no raw ``\\(``, ``\\[`` or ``$$`` in the visible text (code
  excluded) and every Sphinx math element holds a rendered ``mjx-container``;
* every ``<img>`` loaded (natural width > 0) and has alt text other than its file name (and no raw
  LaTeX);
* every internal link resolves: the file exists and, with a ``#fragment``, the target page has
  that id;
* nothing scrolls horizontally at 1280 px: neither the page nor any code block;
* a full-page screenshot goes to ``_build/screenshots/`` (beside ``_build/html``).

Each chapter also shows the re-run box with its command and download links. The book is the
quick book the slow end-to-end test builds (session fixture ``quick_book``), or an already built
one named by ``DFROBUST_BOOK_HTML`` (a folder holding index.html).
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WIDTH, HEIGHT = 1280, 900
RAW_MATH = re.compile(r"\\\(|\\\[|\$\$|\\(?:varepsilon|mathrm|frac|hat|le|max|sum)\b")
REFRESH = re.compile(r"""<meta[^>]+http-equiv=["']refresh["'][^>]+url=([^"'>]+)""", re.I)
SKIP_DIRS = {"_static", "_sources", "_downloads", "_images", "_sphinx_design_static"}

# text of the page outside code, scripts and rendered math
VISIBLE_TEXT_JS = """() => {
  const skip = new Set(['PRE', 'CODE', 'SCRIPT', 'STYLE', 'TEXTAREA', 'MJX-CONTAINER', 'NOSCRIPT']);
  const out = [];
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {acceptNode(n) {
    for (let e = n.parentElement; e; e = e.parentElement) if (skip.has(e.tagName)) return NodeFilter.FILTER_REJECT;
    return NodeFilter.FILTER_ACCEPT; }});
  while (walk.nextNode()) out.push(walk.currentNode.nodeValue);
  return out.join(' ');
}"""

# code blocks wider than their box, with every collapsed cell opened (as a reader would)
WIDE_CODE_JS = """() => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  return Array.from(document.querySelectorAll('div.cell_input pre, div.highlight pre, div.cell_output pre'))
    .filter(p => p.scrollWidth > p.clientWidth + 1)
    .map(p => p.textContent.split('\\n').sort((a, b) => b.length - a.length)[0].slice(0, 80));
}"""

CHECKS_JS = """() => {
  const de = document.documentElement;
  const math = Array.from(document.querySelectorAll('span.math, div.math'));
  return {
    scrollWidth: de.scrollWidth, clientWidth: de.clientWidth,
    badImages: Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
    noAlt: Array.from(document.images).filter(i => {
      const alt = (i.getAttribute('alt') || '').trim();
      return !alt || i.src.endsWith(alt) || alt.endsWith('.png') || alt.includes('\\\\');
    }).map(i => i.src),
    nImages: document.images.length,
    nMath: math.length,
    unrendered: math.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 60)),
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
    rerun: Array.from(document.querySelectorAll('div.rerun-box')).map(d => d.innerText),
    downloads: Array.from(document.querySelectorAll('div.rerun-box a')).map(a => a.href),
  };
}"""


def _need_browser() -> None:
    if not Path(CHROMIUM).is_file():
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does it where apt is available)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("the playwright package is not installed (it is in the 'test' extra: pip install -e '.[test]')")


@pytest.fixture(scope="module")
def book_html(request) -> Path:
    _need_browser()
    given = os.environ.get("DFROBUST_BOOK_HTML")
    if given:
        html = Path(given)
        if not (html / "index.html").is_file():
            pytest.skip(f"DFROBUST_BOOK_HTML={given}: no built book there (index.html missing)")
        return html
    _, _, index = request.getfixturevalue("quick_book")
    return index.parent


@pytest.fixture(scope="module")
def server(book_html):
    handler = functools.partial(_QuietHandler, directory=str(book_html))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no access log in the test output
        pass


def _pages(html: Path) -> list[str]:
    return sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html")
                  if not SKIP_DIRS & set(p.relative_to(html).parts[:-1]))


@functools.lru_cache(maxsize=None)
def _ids(path: Path) -> frozenset[str]:
    text = path.read_text(errors="replace")
    return frozenset(unquote(m) for m in re.findall(r"""\b(?:id|name)=["']([^"']+)["']""", text))


def _broken_link(href: str, base: str, html: Path) -> str | None:
    """Why an internal link does not resolve, or None (external and non-http links are not ours)."""
    url = urlsplit(href)
    if url.scheme not in ("http", "https") or f"{url.scheme}://{url.netloc}" != base:
        return None
    target = html / unquote(url.path).lstrip("/")
    if url.path.endswith("/"):
        target = target / "index.html"
    if not target.is_file():
        return f"{href}: no file {target.relative_to(html)}"
    frag = unquote(url.fragment)
    if frag and target.suffix == ".html" and frag not in _ids(target):
        return f"{href}: no id {frag!r} in {target.relative_to(html)}"
    return None


@pytest.mark.slow
def test_every_page_renders_offline_in_chromium(book_html, server, tmp_path):
    from playwright.sync_api import sync_playwright

    html = book_html
    shots = html.parent / "screenshots"
    if shots.is_dir():
        shutil.rmtree(shots)
    shots.mkdir(parents=True)
    pages = _pages(html)
    assert "book/intro.html" in pages and "book/glossary.html" in pages, pages
    problems: list[str] = []
    external: set[str] = set()
    n_math = 0
    shots_expected = len(pages)
    chapters = [p for p in pages if p.startswith("book/generated/")]
    assert chapters, "the book has no generated chapter"

    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": WIDTH, "height": HEIGHT}, accept_downloads=False)

        def route(r):
            if r.request.url.startswith(server + "/") or r.request.url.startswith("data:"):
                r.continue_()
            else:
                external.add(r.request.url)
                r.abort()

        ctx.route("**/*", route)
        page = ctx.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
        for rel in pages:
            redirect = REFRESH.search((html / rel).read_text(errors="replace"))
            if redirect:  # index.html: a meta refresh to the root page, which is visited itself
                why = _broken_link(f"{server}/{Path(rel).parent.as_posix()}/{redirect.group(1)}".replace("/./", "/"),
                                   server, html)
                if why:
                    problems.append(f"{rel}: broken redirect {why}")
                shots_expected -= 1
                continue
            errors.clear()
            response = page.goto(f"{server}/{rel}", wait_until="load", timeout=60_000)
            where = rel
            if response is None or not response.ok:
                problems.append(f"{where}: HTTP {response.status if response else 'no response'}")
                continue
            # MathJax 3 typesets after load; its startup promise settles when the page is done
            page.evaluate("async () => { if (window.MathJax && MathJax.startup && MathJax.startup.promise)"
                          " await MathJax.startup.promise; }")
            page.wait_for_function("() => Array.from(document.images).every(i => i.complete)", timeout=30_000)
            c = page.evaluate(CHECKS_JS)
            text = page.evaluate(VISIBLE_TEXT_JS)
            raw = sorted(set(RAW_MATH.findall(text)))
            if raw:
                i = RAW_MATH.search(text).start()
                problems.append(f"{where}: raw LaTeX {raw} in the text, e.g. …{text[max(0, i - 40):i + 40]}…")
            if c["unrendered"]:
                problems.append(f"{where}: {len(c['unrendered'])} formulas not rendered, e.g. {c['unrendered'][0]!r}")
            n_math += c["nMath"] - len(c["unrendered"])
            if c["badImages"]:
                problems.append(f"{where}: images that did not load: {c['badImages'][:3]}")
            if c["noAlt"]:
                problems.append(f"{where}: images without alt text: {c['noAlt'][:3]}")
            if c["scrollWidth"] > c["clientWidth"] + 1:
                problems.append(f"{where}: scrolls horizontally at {WIDTH}px "
                                f"(content {c['scrollWidth']}px > {c['clientWidth']}px)")
            for href in sorted(set(c["links"])):
                why = _broken_link(href, server, html)
                if why:
                    problems.append(f"{where}: broken link {why}")
            if errors:
                problems.append(f"{where}: console errors: {errors[:3]}")
            if rel in chapters:
                name = Path(rel).stem
                if len(c["rerun"]) != 1:
                    problems.append(f"{where}: {len(c['rerun'])} re-run boxes, expected 1")
                else:
                    if f"dfrobust run {name} --profile" not in c["rerun"][0]:
                        problems.append(f"{where}: the re-run box lacks the command for {name}")
                    if not any(h.endswith(f"/{name}.ipynb") for h in c["downloads"]):
                        problems.append(f"{where}: the re-run box has no download of {name}.ipynb")
            page.screenshot(path=str(shots / (rel.replace("/", "__").removesuffix(".html") + ".png")),
                            full_page=True)
            wide = page.evaluate(WIDE_CODE_JS)  # after the screenshot: it opens the collapsed cells
            if wide:
                problems.append(f"{where}: {len(wide)} code blocks wider than the page, e.g. {wide[0]!r}")
        ctx.close()

    if external:
        problems.append(f"the book asked for {len(external)} resources outside the build "
                        f"(a reader offline would miss them): {sorted(external)[:5]}")
    assert n_math > 0, "no rendered formula anywhere: the check would pass vacuously"
    assert len(list(shots.glob("*.png"))) == shots_expected
    assert not problems, f"{len(problems)} problems on {len(pages)} pages:\n" + "\n".join(problems)
