"""The web UI (Gradio): one tab per feature over one shared Runtime, whose engine batches every session.

Offline by construction: analytics off (set before Gradio is imported, or it looks up hosts at launch),
no share link or share buttons, the page's fonts and scripts all served by this process, and Gradio's
temporary files under our data directory ($R1_DATA_DIR). Each tab is built by its own function,
listed in `TABS`; a new feature adds a builder there.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from starlette.middleware import Middleware

from app import Settings, Solution, open_support
from app.conversation import Chat, ConversationStore, Message
from app.engine import DEFAULT_KV_CACHE_MB, describe
from app.memory import (
    ConversationMemory,
    MemoryStoreError,
    SolvedProblems,
    VectorStore,
    memory_stats,
    recall_reserve,
    try_open_vector_store,
    window_budget,
)
from app.runtime import Runtime
from app.solve_stream import SolveStream
from app.support.prompt import brief_result
from app.tool_turn import ToolTurn, as_latex
from ui.http_guard import HostGuard

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["GRADIO_TEMP_DIR"] = str(Settings.from_env().data_path() / "gradio-tmp")

import gradio as gr

QUANT_CHOICES = ("auto", "fp32", "int8", "int4")  # auto: as the model file holds (app.config.Settings)
STOPPED_NOTES = {"cancelled": "*(stopped)*", "error": "*(generation failed)*"}
# Only $$...$$ is maths: a single "$" is money in chat text. Tool results are put between $$ by `_maths`.
LATEX_DELIMITERS = [{"left": "$$", "right": "$$", "display": True}]


@dataclass
class WebContext:
    """What every tab builder gets: the shared runtime and the app objects built over it."""

    runtime: Runtime
    chat: Chat  # its `memory` holds the conversations' windows (tier 2) over `store`
    store: VectorStore | None  # tier 3; None when it could not be opened (then chat.memory.last_error says why)
    solved: SolvedProblems


# ----- Chat ----------------------------------------------------------------------------------


def _render(messages: list[Message]) -> list[gr.ChatMessage]:
    """Stored or streaming messages as chatbot messages; what was recalled from memory into a reply's prompt,
    and the reply's reasoning, each become a collapsible message of its own."""
    shown: list[gr.ChatMessage] = []
    for message in messages:
        if message.role == "user":
            shown.append(gr.ChatMessage(role="user", content=message.content))
            continue
        if message.tool is not None:
            shown.extend(_tool_turn_messages(message))
            continue
        if message.recalled:
            lines = "\n".join(f"- {line}" for line in message.recalled.splitlines())
            shown.append(
                gr.ChatMessage(
                    role="assistant", content=lines, metadata={"title": "Recalled from memory", "status": "done"}
                )
            )
        streaming = message.finish_reason is None
        if message.reasoning:
            status = "pending" if streaming and not message.content else "done"
            shown.append(
                gr.ChatMessage(
                    role="assistant", content=message.reasoning, metadata={"title": "Reasoning", "status": status}
                )
            )
        note = STOPPED_NOTES.get(message.finish_reason or "")
        content = f"{message.content} {note}".strip() if note else message.content
        if content or not message.reasoning:
            shown.append(gr.ChatMessage(role="assistant", content=content))
    return shown


def _tool_turn_messages(message: Message) -> list[gr.ChatMessage]:
    """A tool-answered turn: which search ran on what, each tool call as a collapsible message (while searching,
    those tried so far; then the chosen path's), and the verified answer as maths or code."""
    turn: ToolTurn = message.tool
    searching = message.finish_reason is None
    asked = f"`{turn.problem}`" + (
        f" (your follow-up *{turn.rewritten_from}* with the previous problem)" if turn.rewritten_from else ""
    )
    if searching:
        title = f"Searching with the {turn.task_type} tools…"
        summary = f"MCTS on {asked}: {len(turn.tried)} tool calls so far"
    else:
        title = f"Answered with the {turn.task_type} tools: {turn.status} · {turn.seconds:.1f} s"
        others = [s for s in turn.tried if s["text"] not in {p["text"] for p in turn.steps}]
        summary = f"MCTS on {asked}; reward " + " · ".join(f"{k} {v:.2f}" for k, v in turn.reward.items())
        if others:
            summary += "\n\nAlso tried:\n\n" + "\n\n".join(_tool_call_markdown(s) for s in others)
    shown = [
        gr.ChatMessage(
            role="assistant", content=summary, metadata={"title": title, "status": "pending" if searching else "done"}
        )
    ]
    shown.extend(_step_messages(list(turn.tried if searching else turn.steps), pending=searching))
    if not searching:
        note = STOPPED_NOTES.get(message.finish_reason or "")
        if turn.status == "verified":
            content = answer_markdown(turn.answer, turn.task_type) if turn.task_type == "math" else message.content
        else:
            content = message.content
        shown.append(gr.ChatMessage(role="assistant", content=f"{content} {note}".strip() if note else content))
    return shown


def _conversation_choices(store: ConversationStore) -> list[tuple[str, int]]:
    return [(summary.title, summary.id) for summary in store.list()]


def build_chat_tab(ctx: WebContext, demo: gr.Blocks) -> None:
    store = ctx.chat.store
    conversation = gr.State(None)  # id of the conversation shown; None = a new one, created on first message
    with gr.Row():
        with gr.Column(scale=1, min_width=200):
            new_chat = gr.Button("New chat", variant="secondary")
            conversations = gr.Radio(label="Conversations", choices=[], elem_id="conversations")
            delete = gr.Button("Delete conversation", variant="stop", size="sm")
        with gr.Column(scale=4):
            chatbot = gr.Chatbot(
                label="Chat", height=460, buttons=["copy"], elem_id="chatbot", latex_delimiters=LATEX_DELIMITERS
            )
            with gr.Row():
                text = gr.Textbox(
                    placeholder="Message r1…", show_label=False, scale=5, elem_id="chat-input", autofocus=True
                )
                send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
                stop = gr.Button("Stop", scale=1, elem_id="chat-stop")

    def refresh_list(selected: int | None):
        return gr.update(choices=_conversation_choices(store), value=selected)

    def respond(message: str, conversation_id: int | None) -> Iterator[tuple]:
        if not message.strip():
            return
        if conversation_id is None:
            conversation_id = store.create()
        past = store.messages(conversation_id)
        asked = [*past, Message("user", message.strip())]
        yield _render(asked), conversation_id, "", refresh_list(conversation_id)
        try:
            for partial in ctx.chat.reply(conversation_id, message):
                yield _render([*asked, partial]), conversation_id, gr.skip(), gr.skip()
        except ValueError as err:  # e.g. the conversation outgrew the context window: nothing was stored
            gr.Warning(str(err))
            yield _render(past), conversation_id, message, gr.skip()
            return
        yield _render(store.messages(conversation_id)), conversation_id, gr.skip(), refresh_list(conversation_id)

    def open_conversation(conversation_id: int | None):
        if conversation_id is None:
            return gr.skip(), gr.skip()
        return _render(store.messages(conversation_id)), conversation_id

    def delete_conversation(conversation_id: int | None):
        if conversation_id is not None:
            ctx.chat.delete(conversation_id)
        return [], None, refresh_list(None)

    outputs = [chatbot, conversation, text, conversations]
    # No concurrency limit: every session's reply is one more request in the engine's batch.
    send.click(respond, [text, conversation], outputs, concurrency_limit=None)
    text.submit(respond, [text, conversation], outputs, concurrency_limit=None)

    def stop_reply(conversation_id: int | None) -> None:
        if conversation_id is not None:
            ctx.chat.stop(conversation_id)

    stop.click(stop_reply, [conversation], None, concurrency_limit=None, queue=False)
    conversations.input(open_conversation, [conversations], [chatbot, conversation], concurrency_limit=None)
    new_chat.click(lambda: ([], None, refresh_list(None)), None, [chatbot, conversation, conversations])
    chatbot.clear(
        lambda: (None, refresh_list(None)), None, [conversation, conversations]
    )  # a fresh chat; the stored one stays
    delete.click(delete_conversation, [conversation], [chatbot, conversation, conversations])
    demo.load(lambda: refresh_list(None), None, [conversations])


# ----- Settings ------------------------------------------------------------------------------


def _cache_stats_markdown(runtime: Runtime) -> str:
    """The backend's own report: KV-cache use for the local engine, the server and its features for a remote one."""
    rows = [f"| {what} | {value} |" for what, value in runtime.engine.status()]
    return "\n".join(["| Backend | |", "| --- | --- |", *rows])


def _kv_cache_mb(runtime: Runtime) -> float:
    return runtime.settings.kv_cache_mb or DEFAULT_KV_CACHE_MB


def _memory_stats_markdown(ctx: WebContext) -> str:
    """Tier 2 (the window for the current model and settings) and tier 3 (what the vector store holds)."""
    (settings, engine), memory = ctx.runtime.current(), ctx.chat.memory
    k = settings.memory_recall_k if ctx.store is not None else 0
    budget = window_budget(engine.context_length, settings.max_new_tokens, k, settings.memory_window_tokens)
    rows = [
        "| Memory | |",
        "| --- | --- |",
        f"| conversation window (tier 2) | {budget} tokens (context {engine.context_length} − answer "
        f"{settings.max_new_tokens} − recall {recall_reserve(k)}) |",
        f"| messages moved to the store this run | {memory.evicted_messages} |",
    ]
    if ctx.store is None:
        rows.append(f"| vector store (tier 3) | unavailable: {memory.last_error} |")
        return "\n".join(rows)
    try:
        stats = memory_stats(ctx.store, memory.user)
    except MemoryStoreError as err:
        rows.append(f"| vector store (tier 3) | unreadable: {err} |")
        return "\n".join(rows)
    rows.append(f"| vector store (tier 3) | `{stats.location}` |")
    if stats.disk_bytes is not None:
        rows.append(f"| store size on disk | {stats.disk_bytes / (1 << 20):.1f} MiB |")
    rows.append(f"| your documents | {stats.documents} ({stats.records['r1_documents']} chunks) |")
    rows.append(f"| remembered conversation turns | {stats.records['r1_turns']} |")
    rows.append(f"| solved problems | {stats.records['r1_solved_problems']} |")
    rows.append(f"| snippets recalled per turn | up to {settings.memory_recall_k} |")
    if memory.last_error:
        rows.append(f"| last store error | {memory.last_error} |")
    return "\n".join(rows)


def build_settings_tab(ctx: WebContext, demo: gr.Blocks) -> None:
    runtime = ctx.runtime
    settings = runtime.settings
    gr.Markdown("Changes apply to this run; set defaults with `R1_*` environment variables or `r1 ui` flags.")
    with gr.Row():
        with gr.Column():
            model = gr.Textbox(
                label="Model",
                value=settings.model,
                elem_id="settings-model",
                info="'default' (bundled SmolLM2-135M), a .gguf file or an HF model directory",
            )
            quant = gr.Dropdown(
                label="Quantization",
                choices=list(QUANT_CHOICES),
                value=settings.quant or "fp32",
                elem_id="settings-quant",
            )
            kv_cache_mb = gr.Number(
                label="KV-cache size (MiB)", value=_kv_cache_mb(runtime), minimum=1, elem_id="settings-kv-cache"
            )
            search_budget = gr.Number(
                label="Search budget (iterations per problem; 0 = the strategy's default)",
                value=settings.search_budget or 0,
                minimum=0,
                precision=0,
                elem_id="settings-budget",
            )
            apply = gr.Button("Apply", variant="primary", elem_id="settings-apply")
            status = gr.Markdown(elem_id="settings-status")
        with gr.Column():
            stats = gr.Markdown(elem_id="cache-stats")
            memory_stats_view = gr.Markdown(elem_id="memory-stats")
            refresh = gr.Button("Refresh statistics", size="sm")

    def apply_settings(model_path: str, quant_name: str, kv_mb: float | None, budget: float | None):
        wanted = dataclasses.replace(
            runtime.settings,
            model=model_path.strip() or "default",
            quant=None if quant_name == "fp32" else quant_name,
            # unchanged from what the engine runs with: keep the setting as it is (None = the default size)
            kv_cache_mb=float(kv_mb) if kv_mb and kv_mb != _kv_cache_mb(runtime) else runtime.settings.kv_cache_mb,
            search_budget=int(budget) if budget else None,
        )
        try:
            reloaded = runtime.apply(wanted)
        except (ValueError, FileNotFoundError) as err:
            return f"**Not applied:** {err}", _cache_stats_markdown(runtime)
        done = f"Reloaded {wanted.model} ({wanted.quant or 'fp32'})." if reloaded else "Applied (no reload needed)."
        return done, _cache_stats_markdown(runtime)

    apply.click(apply_settings, [model, quant, kv_cache_mb, search_budget], [status, stats], concurrency_limit=1)

    def all_stats() -> tuple[str, str]:
        return _cache_stats_markdown(runtime), _memory_stats_markdown(ctx)

    refresh.click(all_stats, None, [stats, memory_stats_view])
    demo.load(all_stats, None, [stats, memory_stats_view])


# ----- Solve ---------------------------------------------------------------------------------


def _maths(text: str) -> str:
    """A tool's result for Markdown: displayed as LaTeX (sympy's `latex()`) with the plain text as code under it,
    or as code alone when it is not maths; never bare, where Markdown would turn `*` into italics."""
    rendered = as_latex(text) if "\n" not in text and len(text) <= 300 else None
    return f"$${rendered}$$\n\n{_code(text)}" if rendered else _code(text)


def _code(text: str) -> str:
    return f"```\n{text}\n```" if "\n" in text or "`" in text else f"`{text}`"


def answer_markdown(answer: str | None, task_type: str) -> str:
    """A search's answer for Markdown: maths as LaTeX and code, a function as a Python block."""
    if answer is None:
        return "(none found)"
    return f"```python\n{answer}\n```" if task_type == "code" else _maths(answer)


def _tool_call_markdown(step: dict) -> str:
    result = (
        _maths(step["tool_output"]) if step["tool"] != "python_exec" and step["tool_ok"] else _code(step["tool_output"])
    )
    return f"```\n{step['text'].split(' => ')[0]}\n```\n→ {result}"


def _step_messages(steps: list[dict], pending: bool = False) -> list[gr.ChatMessage]:
    """A solution's steps; each tool call is a collapsible message titled with the tool it ran, holding the call and
    its result (maths as LaTeX); an answer shows as maths or code, a thought as code."""
    shown = []
    for step in steps:
        if step["kind"] == "tool":
            status = "done" if step["tool_ok"] else "error"
            shown.append(
                gr.ChatMessage(
                    role="assistant",
                    content=_tool_call_markdown(step),
                    metadata={
                        "title": f"tool call: {step['tool']} ({status})",
                        "status": "pending" if pending else "done",
                    },
                )
            )
        elif step["kind"] != "answer":
            shown.append(gr.ChatMessage(role="assistant", content=_code(step["text"])))
    return shown


def tree_svg(tree: list[dict], chosen: list[str]) -> str:
    """The search tree as SVG: a node's radius grows with its visits, its colour goes red -> green with its
    value, and the steps of the chosen path are outlined in black."""
    if not tree:
        return "<p>(no tree: this strategy samples whole paths)</p>"
    children: dict[int | None, list[dict]] = {}
    for node in tree:
        children.setdefault(node["parent"], []).append(node)
    positions: dict[int, tuple[float, float]] = {}
    next_x = [0]

    def place(node: dict, depth: int) -> float:
        kids = children.get(node["id"], [])
        x = sum(place(k, depth + 1) for k in kids) / len(kids) if kids else next_x[0]
        if not kids:
            next_x[0] += 1
        positions[node["id"]] = (x, depth)
        return x

    place(tree[0], 0)
    width, depth = max(next_x[0], 1), max(d for _, d in positions.values()) + 1
    sx, sy = 640 / width, 80
    most = max(n["visits"] for n in tree) or 1
    values = [n["value"] for n in tree]
    low, high = min(values), max(values)
    parts = []
    for node in tree:
        if node["parent"] is not None:
            (x1, y1), (x2, y2) = positions[node["parent"]], positions[node["id"]]
            parts.append(
                f'<line x1="{x1 * sx + sx / 2:.0f}" y1="{y1 * sy + 30:.0f}" x2="{x2 * sx + sx / 2:.0f}" '
                f'y2="{y2 * sy + 30:.0f}" stroke="#999"/>'
            )
    for node in tree:
        x, y = positions[node["id"]]
        t = (node["value"] - low) / (high - low) if high > low else 0.5
        colour = f"rgb({int(220 * (1 - t))},{int(180 * t + 40)},80)"
        radius = 5 + 13 * (node["visits"] / most) ** 0.5
        marked = node["step"] in chosen and node["parent"] is not None
        title = f"{node['step'] or 'problem'} | visits {node['visits']}, value {node['value']:.2f}".replace("<", "&lt;")
        parts.append(
            f'<circle cx="{x * sx + sx / 2:.0f}" cy="{y * sy + 30:.0f}" r="{radius:.1f}" fill="{colour}" '
            f'stroke="{"#000" if marked else "none"}" stroke-width="3"><title>{title}</title></circle>'
        )
    return f'<svg id="search-tree" width="660" height="{depth * sy + 40}" xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>'


def build_solve_tab(ctx: WebContext, demo: gr.Blocks) -> None:
    with gr.Row():
        problem = gr.Textbox(
            label="Problem", placeholder="e.g. What is the derivative of x**3 - 2*x?", scale=4, elem_id="solve-input"
        )
        with gr.Column(scale=1, min_width=200):
            task_type = gr.Dropdown(["auto", "math", "code"], value="auto", label="Task type")
            strategy = gr.Dropdown(["mcts", "self_consistency", "best_of_n", "greedy"], value="mcts", label="Strategy")
    with gr.Row():
        solve_button = gr.Button("Solve", variant="primary", elem_id="solve-run")
        stop_button = gr.Button("Stop", elem_id="solve-stop")
    steps = gr.Chatbot(label="Steps", height=320, elem_id="solve-steps", latex_delimiters=LATEX_DELIMITERS)
    answer = gr.Markdown(elem_id="solve-answer", latex_delimiters=LATEX_DELIMITERS)
    tree = gr.HTML(label="Search tree")
    searches: dict[str, SolveStream] = {}  # session -> its running search, for the Stop button

    def run(text: str, kind: str, how: str, request: gr.Request) -> Iterator[tuple]:
        if not text.strip():
            return
        search = searches[request.session_hash] = SolveStream(
            text,
            task_type=kind,
            strategy=how,
            runtime=ctx.runtime,
            budget=ctx.runtime.settings.search_budget,
            memory=ctx.solved,
        )
        progress: list[gr.ChatMessage] = []
        try:
            for event in search:
                if isinstance(event, str):  # the search's progress lines, as it reports them
                    progress.append(
                        gr.ChatMessage(
                            role="assistant", content=event, metadata={"title": "search", "status": "pending"}
                        )
                    )
                    yield progress, "*searching…*", gr.skip()
                elif isinstance(event, Solution):
                    solution = event
        except Exception as err:  # shown to the user; the app keeps serving
            yield progress, f"**Error:** {err}", ""
            return
        reward = " · ".join(f"{k} {v:.2f}" for k, v in solution.reward.items())
        note = " (stopped early)" if search.stopped else ""
        if solution.cached_from:
            note += f" (the verified solution of a similar problem solved before: *{solution.cached_from}*)"
        shown = (
            f"**Answer:**{note}\n\n{answer_markdown(solution.answer, solution.task_type)}\n\n"
            f"reward: {reward}\n\ntokens: {solution.tokens['generated']} generated, {solution.tokens['reused']} of "
            f"{solution.tokens['prompt']} prompt tokens from the prefix cache · {solution.seconds:.1f} s"
        )
        yield _step_messages(solution.steps), shown, tree_svg(solution.tree, [s["text"] for s in solution.steps])

    def stop_search(request: gr.Request) -> None:
        if request.session_hash in searches:
            searches[request.session_hash].stop()

    solve_button.click(run, [problem, task_type, strategy], [steps, answer, tree], concurrency_limit=None)
    problem.submit(run, [problem, task_type, strategy], [steps, answer, tree], concurrency_limit=None)
    stop_button.click(stop_search, None, None, queue=False)


# ----- Support -------------------------------------------------------------------------------


def build_support_tab(ctx: WebContext, demo: gr.Blocks) -> None:
    gr.Markdown(
        "You are the customer: the bot authenticates you (email, or name and zip) before it looks "
        "anything up, and asks for an explicit *yes* before any change to an order."
    )
    with gr.Row():
        with gr.Column(scale=3):
            dialogue = gr.Chatbot(label="Support", height=420, elem_id="support-chat")
            text = gr.Textbox(placeholder="Hi, my email is …", show_label=False, elem_id="support-input")
        with gr.Column(scale=2):
            calls = gr.JSON(label="Tool calls", elem_id="support-calls")
            orders = gr.JSON(label="Orders touched", elem_id="support-orders")
    session = gr.State(None)
    bots: dict[int, object] = {}

    def bot():
        settings, engine = ctx.runtime.current()
        if id(engine) not in bots:  # one bot (and order database) per loaded engine
            bots.clear()
            bots[id(engine)] = open_support(settings, engine, memory_store=ctx.store)
        return bots[id(engine)]

    def respond(message: str, shown: list, made: list | None, session_id: str | None):
        if not message.strip():
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), session_id
        session_id = session_id or uuid.uuid4().hex
        reply = bot().reply(session_id, message)
        made = [
            *(made or []),
            *(
                {"tool": c.name, "arguments": c.arguments, "result": brief_result(c.name, c.result)[:300]}
                for c in reply.tool_calls
            ),
        ]
        touched = sorted({c["arguments"]["order_id"] for c in made if "order_id" in c["arguments"]})
        shown = [
            *shown,
            gr.ChatMessage(role="user", content=message),
            gr.ChatMessage(role="assistant", content=reply.text),
        ]
        return shown, "", made, touched, session_id

    text.submit(
        respond, [text, dialogue, calls, session], [dialogue, text, calls, orders, session], concurrency_limit=None
    )


# ----- the app -------------------------------------------------------------------------------

TabBuilder = Callable[[WebContext, gr.Blocks], None]
TABS: tuple[tuple[str, TabBuilder], ...] = (
    ("Chat", build_chat_tab),
    ("Solve", build_solve_tab),
    ("Support", build_support_tab),
    ("Settings", build_settings_tab),
)


def build_app(runtime: Runtime) -> gr.Blocks:
    """Every tab of TABS over `runtime`; conversations in the data directory's SQLite file, the vector store of
    the settings (when it cannot be opened, chat runs on tiers 1 and 2 and Settings says why)."""
    conversations = ConversationStore.in_data_dir(runtime.settings.data_path())
    store, error = try_open_vector_store(runtime.settings)
    memory = ConversationMemory(store, store_error=error)
    solved = SolvedProblems(store)
    ctx = WebContext(runtime=runtime, chat=Chat(runtime, conversations, memory, solved), store=store, solved=solved)
    with gr.Blocks(title="r1-reasoner", analytics_enabled=False) as demo:
        with gr.Tabs():
            for title, build in TABS:
                with gr.Tab(title, id=title.lower()):
                    build(ctx, demo)
    return demo


def start(runtime: Runtime, host: str, port: int) -> gr.Blocks:
    """Serve the app on host:port in background threads; returns it (`.close()` stops it)."""
    # Gradio reads its temp dir per upload: keep it under this runtime's data dir, whatever the import saw.
    os.environ["GRADIO_TEMP_DIR"] = str(runtime.settings.data_path() / "gradio-tmp")
    demo = build_app(runtime)
    demo.queue(default_concurrency_limit=None)
    # The Host / Origin guard of ui.http_guard, around every route (Gradio's queue reads and changes conversations);
    # the app has no upload component, so /gradio_api/upload takes no file (max_file_size 0: 413); no static file
    # workers (GRADIO_NUM_WORKERS), whose own ports would be outside the guard.
    guard = Middleware(HostGuard, bound_host=host, allowed_hosts=runtime.settings.allowed_hosts)
    demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        prevent_thread_lock=True,
        quiet=True,
        show_error=True,
        ssr_mode=False,
        pwa=False,
        mcp_server=False,
        enable_monitoring=False,
        footer_links=["api", "settings"],
        app_kwargs={"middleware": [guard]},
        max_file_size=0,
        num_workers=0,
    )
    return demo


def launch(settings: Settings) -> None:
    """`r1 ui`: load the model, serve the app, print its address, block until interrupted."""
    runtime = Runtime(settings)
    print(f"r1 ui — loading {describe(settings)}...", file=sys.stderr)
    runtime.engine  # noqa: B018 (the property loads the model before listening: a missing model is an error, not a broken page)
    demo = start(runtime, settings.host, settings.port)
    print(f"r1 ui: open http://{settings.host}:{settings.port} in your browser (Ctrl-C stops)", flush=True)
    try:
        demo.block_thread()
    finally:
        runtime.close()
