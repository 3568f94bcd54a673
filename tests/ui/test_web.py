"""The web UI in a real browser: Debian's chromium, headless, driven by Playwright, against the real model.

Every test checks that each request the page made stayed on 127.0.0.1. Screenshots are saved under
$R1_TEST_ARTIFACTS (default: test-artifacts/ in the repository).
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("R1_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
TIMEOUT_MS = 60_000

# Records each text the last bot message shows, so a test can see the reply grow (streaming).
WATCH_BOT_TEXT = """() => {
    window.botTexts = [];
    const chatbot = document.querySelector('#chatbot');
    new MutationObserver(() => {
        const bots = chatbot.querySelectorAll('[data-testid="bot"]');
        if (!bots.length) return;
        const text = bots[bots.length - 1].innerText;
        if (text && text !== window.botTexts[window.botTexts.length - 1]) window.botTexts.push(text);
    }).observe(chatbot, {childList: true, subtree: true, characterData: true});
}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def web(runtime):
    """The web app on a free loopback port, with its data (and Gradio's temp files) in the test data dir."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("R1_DATA_DIR", runtime.settings.data_dir)
        from ui import web as web_ui  # imports Gradio with the environment above

        port = free_port()
        demo = web_ui.start(runtime, "127.0.0.1", port)
        assert os.environ["GRADIO_TEMP_DIR"].startswith(runtime.settings.data_dir)
        try:
            yield f"http://127.0.0.1:{port}/"
        finally:
            demo.close()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (scripts/bootstrap.sh installs it as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_page(browser, web, height: int):
    """A fresh page on the app; `page.requested` lists every URL it asked for."""
    page = browser.new_page(viewport={"width": 1100, "height": height})
    page.set_default_timeout(TIMEOUT_MS)
    page.requested = []
    page.on("request", lambda request: page.requested.append(request.url))
    page.goto(web)
    page.wait_for_selector("#chat-input textarea")
    return page


@pytest.fixture
def page(browser, web):
    page = open_page(browser, web, height=720)
    yield page
    page.close()


def assert_stayed_on_loopback(page) -> None:
    hosts = {urlsplit(url).hostname for url in page.requested if urlsplit(url).scheme in ("http", "https", "ws", "wss")}
    assert page.requested and hosts == {"127.0.0.1"}, f"requests left loopback: {sorted(hosts)}"


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name))


def ask(page, question: str) -> None:
    page.evaluate(WATCH_BOT_TEXT)
    page.fill("#chat-input textarea", question)
    page.click("#chat-send")


def test_chat_streams_the_reply_and_keeps_the_conversation(page, runtime):
    ask(page, "What is the capital of France?")
    page.wait_for_selector("#chatbot [data-testid='bot'] >> text=Paris")
    page.wait_for_selector("#conversations >> text=What is the capital of France?")
    texts = page.evaluate("window.botTexts")
    final = page.locator("#chatbot [data-testid='bot']").last.inner_text()
    assert len(texts) >= 2, f"the reply did not stream: {texts}"
    assert all(final.startswith(text.rstrip()) for text in texts[:-1])  # each was a prefix of the answer
    screenshot(page, "chat_plain.png")

    page.reload()  # a new session: the conversation comes back from SQLite
    page.wait_for_selector("#conversations >> text=What is the capital of France?").click()
    page.wait_for_selector("#chatbot [data-testid='bot'] >> text=Paris")
    assert page.locator("#chatbot [data-testid='user']").first.inner_text().strip() == "What is the capital of France?"
    assert_stayed_on_loopback(page)


def test_stop_button_cancels_the_reply(page, runtime):
    settings = runtime.settings
    runtime.apply(dataclasses.replace(settings, max_new_tokens=1000))  # long enough to still be running
    try:
        ask(page, "Count from 1 to 500, one number per line.")
        page.wait_for_selector("#chatbot [data-testid='bot']")
        page.click("#chat-stop")
        page.wait_for_selector("#chatbot >> text=(stopped)")
    finally:
        runtime.apply(settings)
    from app.conversation import ConversationStore

    store = ConversationStore.in_data_dir(settings.data_path())
    newest = store.list()[0]
    stored = store.messages(newest.id)
    assert newest.title.startswith("Count from 1 to 500")
    assert stored[-1].role == "assistant" and stored[-1].finish_reason == "cancelled"
    assert_stayed_on_loopback(page)


def test_settings_tab_shows_the_model_and_cache_and_applies_changes(page, runtime):
    page.get_by_role("tab", name="Settings").click()
    page.wait_for_selector("#cache-stats >> text=prefix-cache hit tokens")
    page.wait_for_selector("#memory-stats >> text=conversation window (tier 2)")
    memory = page.inner_text("#memory-stats")
    assert str(runtime.settings.chroma_store_path()) in memory and "remembered conversation turns" in memory
    assert page.input_value("#settings-model textarea, #settings-model input") == runtime.settings.model
    assert "int4" in page.locator("#settings-quant").inner_text() or page.input_value("#settings-quant input") == "int4"
    screenshot(page, "settings.png")

    page.fill("#settings-budget input", "8")
    page.click("#settings-apply")
    page.wait_for_selector("#settings-status >> text=Applied (no reload needed)")
    assert runtime.settings.search_budget == 8

    engine = runtime.engine
    page.fill("#settings-model textarea, #settings-model input", "/nonexistent/model.gguf")
    page.click("#settings-apply")
    page.wait_for_selector("#settings-status >> text=Not applied")
    assert "/nonexistent/model.gguf" in page.inner_text("#settings-status")
    assert runtime.engine is engine and runtime.settings.model == "default"  # nothing lost
    assert_stayed_on_loopback(page)


def test_solve_tab_shows_tool_steps_the_verified_answer_and_the_tree(page, runtime):
    page.get_by_role("tab", name="Solve").click()
    page.fill("#solve-input textarea", "What is 12 times 7?")
    page.click("#solve-run")
    page.wait_for_selector("#solve-answer code >> text=84", timeout=180_000)  # as maths and code, not bare
    assert "Answer:" in page.inner_text("#solve-answer") and "correctness" in page.inner_text("#solve-answer")
    assert page.locator("#solve-answer .katex").count() >= 1
    page.wait_for_selector("#solve-steps >> text=math_simplify")  # the tool call, as a collapsible message
    page.wait_for_selector("#search-tree circle")
    assert page.locator("#search-tree circle").count() > 1
    screenshot(page, "solve.png")
    assert_stayed_on_loopback(page)


def test_support_tab_authenticates_looks_up_an_order_and_lists_its_tool_calls(page, runtime):
    page.get_by_role("tab", name="Support").click()
    page.fill("#support-input textarea", "Hi, my email is ivan.santos3158@example.com")
    page.press("#support-input textarea", "Enter")
    page.wait_for_selector("#support-chat [data-testid='bot']", timeout=180_000)
    page.wait_for_selector("#support-calls >> text=find_user_id_by_email")
    page.fill("#support-input textarea", "What is the status of my order #W8770097?")  # same session: still verified
    page.press("#support-input textarea", "Enter")
    page.wait_for_selector("#support-calls >> text=get_order_details", timeout=180_000)
    page.wait_for_selector("#support-orders >> text=#W8770097")
    assert page.locator("#support-chat [data-testid='bot']").count() == 2
    assert "pending" in page.inner_text("#support-calls")  # the order's details, as the tool returned them
    screenshot(page, "support.png")
    assert_stayed_on_loopback(page)


# The chat's maths and code questions, each answered through the tools in one conversation of one page.
TOOL_QUESTIONS = [
    pytest.param("What is 12 times 7?", "math_simplify", "84", id="arithmetic"),
    pytest.param(
        "What is the derivative of x**3 * sin(x)?", "math_diff", "x**3*cos(x) + 3*x**2*sin(x)", id="derivative"
    ),
    pytest.param("Solve x**2 - 5*x + 6 = 0", "math_solve", {"2", "3"}, id="quadratic"),
    pytest.param("Write a Python function that reverses a string", "python_exec", "'olleh'", id="code"),
]


DONE_TURN = r"Answered with the \w+ tools: \w+"
WAIT_FOR_TURNS = """(n) => (document.querySelector('#chatbot').innerText.match(/Answered with the \\w+ tools: \\w+/g) || [])
    .length >= n"""


# The last bot message is the answer (not a collapsible title) and its Markdown has been rendered: Gradio adds
# the message's element before it fills it in, so an empty last message is not yet the answer.
ANSWER_SHOWN = """() => { const bots = document.querySelectorAll('#chatbot [data-testid="bot"]');
    const last = bots[bots.length - 1].innerText.trim();
    return last.length > 0 && !/^(Answered with|Searching with|tool call:)/.test(last); }"""


@pytest.fixture(scope="module")
def chat_page(browser, web):
    """One page for the four tool questions (one conversation), taller for the README's screenshot."""
    page = open_page(browser, web, height=900)
    yield page
    page.close()


@pytest.mark.parametrize(("question", "tool", "expected"), TOOL_QUESTIONS)
def test_chat_answers_maths_and_code_through_the_tools(chat_page, question, tool, expected):
    page = chat_page
    done = len(re.findall(DONE_TURN, page.inner_text("#chatbot")))
    ask(page, question)
    page.wait_for_function(WAIT_FOR_TURNS, arg=done + 1, timeout=300_000)  # the turn's title says it is done
    page.wait_for_function(ANSWER_SHOWN)
    shown = page.inner_text("#chatbot")
    tail = shown[shown.rindex("Answered with the") :]  # this turn: its title, tool calls and answer
    assert re.match(r"Answered with the \w+ tools: verified · ", tail), tail
    assert f"tool call: {tool} (done)" in tail, tail  # which tool ran, as a collapsible message
    # The answer is the turn's last message: its last code is the tool's exact text, its LaTeX sympy's.
    last_code = page.locator("#chatbot code").last.inner_text()
    if tool == "python_exec":
        assert page.locator("#chatbot pre code").last.inner_text().startswith("def ") and "Ran in the sandbox" in tail
        assert last_code == expected  # what the function returned on the example, in the sandbox
    elif isinstance(expected, set):
        assert set(re.findall(r"-?\d+", last_code)) == expected, last_code
    else:
        from app.tool_turn import as_latex

        assert last_code == expected
        latex = page.locator('#chatbot annotation[encoding="application/x-tex"]').last.text_content()
        assert latex.strip() == as_latex(expected)  # rendered by KaTeX
        assert page.locator("#chatbot em").count() == 0  # nothing Markdown-mangled into italics
    if tool == "math_diff":  # README's picture of the chat: the tool call opened
        page.get_by_text(f"tool call: {tool} (done)").last.click()
        page.locator("#chatbot [data-testid='bot']").last.scroll_into_view_if_needed()  # with the answer under it
        page.wait_for_timeout(500)
        screenshot(page, "chat.png")  # docs/screenshots/chat.png
    assert_stayed_on_loopback(page)


def test_tree_picture_marks_the_chosen_path():
    from ui.web import tree_svg

    tree = [
        {"id": 0, "parent": None, "step": "", "visits": 4, "value": 0.5, "reward": None},
        {"id": 1, "parent": 0, "step": "Calc: 6*7 = 42", "visits": 3, "value": 1.0, "reward": None},
        {"id": 2, "parent": 0, "step": "Calc: 6*8 = 48", "visits": 1, "value": 0.0, "reward": None},
    ]
    svg = tree_svg(tree, ["Calc: 6*7 = 42", "Answer: 42"])
    circles = svg.split("<circle")[1:]
    assert len(circles) == 3
    chosen, other = circles[1], circles[2]
    assert 'stroke="#000"' in chosen and 'stroke="none"' in other
    radius = lambda c: float(c.split('r="')[1].split('"')[0])  # noqa: E731
    assert radius(chosen) > radius(other), "more visits, bigger node"


def test_reasoning_is_a_collapsible_message_of_its_own(web):
    from app.conversation import Message
    from ui.web import _render

    done = _render([Message("user", "2+2?"), Message("assistant", "4", reasoning="2 + 2 = 4", finish_reason="stop")])
    assert [(m.role, m.content, m.metadata.get("title")) for m in done] == [
        ("user", "2+2?", None),
        ("assistant", "2 + 2 = 4", "Reasoning"),
        ("assistant", "4", None),
    ]
    assert done[1].metadata["status"] == "done"
    thinking = _render([Message("assistant", "", reasoning="Let me think")])  # streaming, no answer yet
    assert len(thinking) == 1 and thinking[0].metadata["status"] == "pending"
    stopped = _render([Message("assistant", "Paris", finish_reason="cancelled")])
    assert stopped[0].content == "Paris *(stopped)*"
    recalled = _render(
        [
            Message(
                "assistant",
                "4471",
                finish_reason="stop",
                recalled="[conversation chat-1-5, turn 0] user: my locker code is 4471",
            )
        ]
    )
    assert [(m.content, m.metadata.get("title")) for m in recalled] == [
        ("- [conversation chat-1-5, turn 0] user: my locker code is 4471", "Recalled from memory"),
        ("4471", None),
    ]


def test_every_quantization_setting_is_a_choice_of_the_settings_tab():
    from app.config import Settings
    from ui.web import QUANT_CHOICES

    assert Settings().quant in QUANT_CHOICES  # the default ("auto") showed as an invalid value before
    assert {"fp32", "int8", "int4"} <= set(QUANT_CHOICES)


def test_a_tool_turn_renders_its_tool_calls_and_its_answer_as_maths(web):
    from app.conversation import Message
    from app.tool_turn import NO_VERIFIED_ANSWER, ToolTurn
    from reasoning.steps import parse_step
    from ui.web import _render

    diff = parse_step('Diff: {"expression": "x**3 * sin(x)", "variable": "x"}').to_dict()
    searching = ToolTurn("What is the derivative of x**3 * sin(x)?", "math", tried=(diff,))
    shown = _render([Message("assistant", "", tool=searching)])
    assert [(m.metadata["title"], m.metadata["status"]) for m in shown] == [
        ("Searching with the math tools…", "pending"),
        ("tool call: math_diff (done)", "pending"),
    ]
    assert "$$x^{3} \\cos{\\left(x \\right)} + 3 x^{2} \\sin{\\left(x \\right)}$$" in shown[1].content

    answer = "x**3*cos(x) + 3*x**2*sin(x)"
    done = ToolTurn(
        searching.problem,
        "math",
        "verified",
        steps=(diff, parse_step(f"Answer: {answer}").to_dict()),
        tried=(diff,),
        answer=answer,
        reward={"correctness": 1.0},
        seconds=2.0,
    )
    shown = _render([Message("assistant", answer, finish_reason="stop", tool=done)])
    assert shown[0].metadata["title"] == "Answered with the math tools: verified · 2.0 s"
    assert shown[-1].content.endswith(f"$$\n\n`{answer}`") and not shown[-1].metadata  # LaTeX, then the text as code

    failed = ToolTurn(searching.problem, "math", "unverified", tried=(diff,))
    shown = _render([Message("assistant", NO_VERIFIED_ANSWER, finish_reason="stop", tool=failed)])
    assert shown[-1].content == NO_VERIFIED_ANSWER
