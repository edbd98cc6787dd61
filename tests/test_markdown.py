"""The chat's Markdown renderer (gateway/static/markdown.js), run in a real Chromium.

What it must render, what it must never do (run markup, open a `javascript:` link), and its
code blocks' copy button.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from tests.browser import PageErrors, chromium
from tests.helpers import GatewayServer


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


@pytest.fixture(scope="module")
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context()
    try:
        yield context
    finally:
        await context.close()


@pytest.fixture(scope="module")
async def page(context: BrowserContext, gateway: GatewayServer) -> AsyncIterator[Page]:
    page = await context.new_page()
    errors = PageErrors(page)
    # A blank page at the gateway's origin (127.0.0.1 is a secure context: the clipboard
    # works there, as on any https site).
    await page.goto(f"{gateway.http_url}/healthz")
    await page.set_content("<!doctype html><html><body><div id='out'></div></body></html>")
    await page.evaluate(
        "async (url) => { window.md = await import(url); }",
        f"{gateway.http_url}/static/markdown.js",
    )
    yield page
    errors.check()


async def render(page: Page, text: str) -> str:
    """The HTML the renderer builds for `text` (serialized by the browser)."""
    return await page.evaluate(
        """(text) => {
          const out = document.getElementById("out");
          out.replaceChildren(window.md.renderMarkdown(text));
          return out.innerHTML;
        }""",
        text,
    )


A = ' target="_blank" rel="noopener noreferrer"'
COPY = '<button class="copy" type="button" aria-label="Copy code">Copy</button>'


def code(body: str, lang: str = "code") -> str:
    bar = f'<div class="code-bar"><span class="code-lang">{lang}</span>{COPY}</div>'
    return f'<div class="code">{bar}<pre><code>{body}</code></pre></div>'


CASES = [
    ("plain text", "<p>plain text</p>"),
    (
        "**bold**, *it*, _it_, __b__, ~~del~~",
        "<p><strong>bold</strong>, <em>it</em>, "
        "<em>it</em>, <strong>b</strong>, <del>del</del></p>",
    ),
    ("snake_case_name stays", "<p>snake_case_name stays</p>"),
    ("a `<b>code</b>` span", "<p>a <code>&lt;b&gt;code&lt;/b&gt;</code> span</p>"),
    ("line one\nline two\n\nnext", "<p>line one<br>line two</p><p>next</p>"),
    ("# Title\n### Small", "<h3>Title</h3><h5>Small</h5>"),
    (
        "- a\n- b\n  - nested\n- c",
        "<ul><li>a</li><li>b<ul><li>nested</li></ul></li><li>c</li></ul>",
    ),
    ("1. one\n2. two", "<ol><li>one</li><li>two</li></ol>"),
    ("3. three\n4. four", '<ol start="3"><li>three</li><li>four</li></ol>'),
    ("Steps:\n1. Do\n2. Done", "<p>Steps:</p><ol><li>Do</li><li>Done</li></ol>"),
    ("> quoted\n> **too**", "<blockquote><p>quoted<br><strong>too</strong></p></blockquote>"),
    ("```python\nprint('<hi>')\n```", code("print('&lt;hi&gt;')", "python")),
    ("```\nstill streaming", code("still streaming")),  # an unfinished fence
    ("---", "<hr>"),
    (
        "[docs](https://example.com/a_(b))",
        f'<p><a href="https://example.com/a_(b)"{A}>docs</a></p>',
    ),
    ("<https://example.com>", f'<p><a href="https://example.com/"{A}>https://example.com</a></p>'),
    (
        "see https://example.com/x.",
        f'<p>see <a href="https://example.com/x"{A}>https://example.com/x</a>.</p>',
    ),
    ("[mail](mailto:help@shop.example)", f'<p><a href="mailto:help@shop.example"{A}>mail</a></p>'),
    ("\\*not em\\*", "<p>*not em*</p>"),
    (
        "| a | b |\n|---|--:|\n| 1 | **2** |",
        '<div class="table"><table><thead><tr><th>a</th>'
        '<th style="text-align: right;">b</th></tr></thead><tbody><tr><td>1</td>'
        '<td style="text-align: right;"><strong>2</strong></td></tr></tbody></table></div>',
    ),
]


@pytest.mark.parametrize(("text", "html"), CASES, ids=[c[0][:24] for c in CASES])
async def test_renders_the_subset(page: Page, text: str, html: str) -> None:
    assert await render(page, text) == html


HOSTILE = [
    '<img src=x onerror="window.__xss=1">',
    "<script>window.__xss=1</script>",
    '<a href="javascript:window.__xss=1">click</a>',
    "[click](javascript:window.__xss=1)",
    "[click](JaVaScRiPt:window.__xss=1)",
    "[click](data:text/html,<script>window.__xss=1</script>)",
    "[click](vbscript:msgbox)",
    '<svg onload="window.__xss=1"></svg>',
    '<iframe src="javascript:window.__xss=1"></iframe>',
    '**<img src=x onerror="window.__xss=1">**',
    '```\n</code></pre><img src=x onerror="window.__xss=1">\n```',
    '| <img src=x onerror="window.__xss=1"> |\n|---|\n| x |',
    '<https://x.example/"onmouseover="window.__xss=1>',
    '[x](https://example.com "title" onclick="window.__xss=1")',
]
ALLOWED_TAGS = {
    "P", "BR", "STRONG", "EM", "DEL", "CODE", "PRE", "H3", "H4", "H5", "H6", "UL", "OL", "LI",
    "BLOCKQUOTE", "HR", "A", "SPAN", "DIV", "BUTTON", "TABLE", "THEAD", "TBODY", "TR", "TH",
    "TD",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"href", "target", "rel", "class", "type", "aria-label", "start", "style"}


@pytest.mark.parametrize("text", HOSTILE)
async def test_hostile_text_stays_text(page: Page, text: str) -> None:
    await render(page, text)
    found = await page.evaluate(
        """() => [...document.getElementById("out").querySelectorAll("*")].map((e) => ({
             tag: e.tagName, attrs: [...e.attributes].map((a) => [a.name, a.value]),
           }))"""
    )
    assert {e["tag"] for e in found} <= ALLOWED_TAGS, found
    for element in found:
        for name, value in element["attrs"]:
            assert name in ALLOWED_ATTRIBUTES, (name, value)
            if name == "href":
                assert value.startswith(("https://", "http://", "mailto:")), value
            if name == "style":
                assert value.startswith("text-align:"), value
    # What is not a safe link or markup still shows, as text (a refused link: its words).
    shown = await page.evaluate("document.getElementById('out').textContent")
    assert "window.__xss" in shown or shown == "click", shown
    await page.evaluate("() => new Promise((r) => setTimeout(r, 0))")  # let handlers fire
    assert await page.evaluate("window.__xss") is None


async def test_every_prefix_of_a_streamed_reply_renders(page: Page) -> None:
    """A reply is rendered again on every token: no prefix may throw or lose text."""
    text = (
        "# Plan\n\nHello **world**, see [docs](https://example.com) and `x`.\n\n"
        "1. one\n2. two\n   - nested *item*\n\n> quote\n\n```js\nconst a = 1;\n```\n\n"
        "| h | i |\n|---|---|\n| 1 | 2 |\n\n~~done~~ https://example.com/end"
    )
    problems = await page.evaluate(
        """(text) => {
          const problems = [];
          for (let n = 0; n <= text.length; n++) {
            try { window.md.renderMarkdown(text.slice(0, n)); }
            catch (err) { problems.push([n, String(err)]); }
          }
          return problems;
        }""",
        text,
    )
    assert problems == []
    html = await render(page, text)
    for piece in ("<h3>Plan</h3>", "<strong>world</strong>", "<li>one</li>", "<blockquote>",
                  "const a = 1;", "<td>2</td>", "<del>done</del>"):  # fmt: skip
        assert piece in html, piece


async def test_the_copy_button_copies_the_code(
    context: BrowserContext, page: Page, gateway: GatewayServer
) -> None:
    await context.grant_permissions(["clipboard-read", "clipboard-write"])
    await render(page, "```sh\nparley agent shop --name Shop\n```")
    button = page.locator("#out button.copy")
    await button.click()
    await expect(button).to_have_text("Copied")
    assert await page.evaluate("navigator.clipboard.readText()") == "parley agent shop --name Shop"
    await expect(button).to_have_text("Copy")  # and it says so only for a moment
