"""The app on the openai backend: chat, `solve` (MCTS) and a support-bot dialogue, each through a real
OpenAI-compatible server that the test starts on 127.0.0.1: our own `r1 serve`, and llama-cpp-python's
server on the same default GGUF. Small on purpose (a few tokens per step): the point is the protocol."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from app import Settings, Support, solve
from app.conversation import Chat, ConversationStore
from app.runtime import Runtime
from reasoning.search import SearchBudget
from tests.servers import ROOT, llama_cpp_server, r1_serve

pytestmark = pytest.mark.slow

IVAN_EMAIL = "ivan.santos3158@example.com"  # owns #W8770097


@pytest.fixture(scope="module", params=["r1 serve", "llama-cpp-python"])
def server(request, runtime, tmp_path_factory):
    """One server per parameter; `runtime` first, so that `r1 serve` finds the default model's weight cache warm."""
    logs = tmp_path_factory.mktemp("servers")
    if request.param == "r1 serve":
        base = tmp_path_factory.getbasetemp()
        process = r1_serve(logs, cache_dir=base / "ui-weight-cache", data_dir=logs / "data")
    else:
        if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("sse_starlette") is None:
            pytest.skip(
                "llama-cpp-python[server] is not installed: scripts/bootstrap.sh builds it when a C++ "
                "compiler is present (about 12 CPU-minutes), or `pip install 'llama-cpp-python[server]'`"
            )
        from model.loading.checkpoint import resolve_source

        process = llama_cpp_server(logs, resolve_source("default"))
    with process:
        yield process


@pytest.fixture(scope="module")
def remote_runtime(server, tmp_path_factory):
    settings = Settings(
        backend="openai",
        base_url=server.url + "/v1",
        max_new_tokens=12,
        data_dir=str(tmp_path_factory.mktemp("remote-data")),
    )
    runtime = Runtime(settings)
    runtime.engine  # noqa: B018 (the property connects and probes once)
    yield runtime
    runtime.close()


def test_chat_streams_and_stores_the_reply(remote_runtime, tmp_path):
    assert remote_runtime.engine.capabilities.streaming
    chat = Chat(remote_runtime, ConversationStore(tmp_path / "conversations.sqlite3"))
    conversation = chat.store.create()
    partials = list(chat.reply(conversation, "What is the capital of France?"))
    assert len(partials) > 1 and partials[-1].content  # streamed: the reply grew in pieces
    user, assistant = chat.store.messages(conversation)
    assert (user.role, user.content) == ("user", "What is the capital of France?")
    assert assistant.content == partials[-1].content and assistant.finish_reason in ("stop", "length")


def test_solve_searches_through_the_server(remote_runtime):
    backend = remote_runtime.engine
    budget = SearchBudget(iterations=1, max_steps=3, step_tokens=24, tokens=400)
    solution = solve(
        "What is 12 times 7?", task_type="math", strategy="mcts", budget=budget, seed=0, engine=backend, use_cache=False
    )
    # One expansion: K draws (equal ones merge into one child), each distinct step rolled out and scored.
    assert solution.paths >= 1 and len(solution.tree) >= 2 and solution.tree[0]["visits"] >= 1
    assert solution.answer is not None and solution.steps
    assert solution.tokens["generated"] > 0 and solution.tokens["prompt"] > 0  # the server's usage counts
    assert set(solution.reward) == {"correctness", "validity", "cost", "total"}
    json.dumps(solution.to_dict())


def test_support_dialogue_acts_through_the_server(remote_runtime, order_db):
    before = order_db.export()
    bot = Support(order_db, remote_runtime.engine, max_steps=1, message_max_length=60, call_max_new_tokens=48)
    reply = bot.reply("s", f"Hi, my email is {IVAN_EMAIL}; what is the status of order #W8770097?")
    assert reply.text
    calls = reply.tool_calls
    assert calls, "the constrained action grammar made the model look the customer up"
    for call in calls:
        assert call.name in {t.name for t in bot.tools}
        if call.name == "find_user_id_by_email":  # narrowed to what the customer typed, by the server's grammar
            assert call.arguments == {"email": IVAN_EMAIL}
    assert order_db.export() == before  # no write without a confirmed request


def test_r1_generate_runs_on_the_server(remote_runtime, server):
    if server.name != "r1 serve":
        pytest.skip("the CLI path is the same for every server: run once")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ui.cli",
            "generate",
            "--backend",
            "openai",
            "--base-url",
            server.url + "/v1",
            "--prompt",
            "The capital of France is",
            "--max-new-tokens",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_the_web_ui_builds_on_the_server_and_reports_it(remote_runtime, server):
    if server.name != "r1 serve":
        pytest.skip("the UI sees the same interface for every server: run once")
    from ui import web

    web.build_app(remote_runtime)  # every tab, on the remote backend
    table = web._cache_stats_markdown(remote_runtime)
    assert f"| server | {server.url}/v1 |" in table and "support-bot actions via | tools" in table
