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
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from app import Settings
from app.conversation import Chat, ConversationStore, Message
from app.runtime import Runtime

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["GRADIO_TEMP_DIR"] = str(Settings.from_env().data_path() / "gradio-tmp")

import gradio as gr  # noqa: E402  (after the environment above: Gradio reads it at import)

QUANT_CHOICES = ("fp32", "int8", "int4")
STOPPED_NOTES = {"cancelled": "*(stopped)*", "error": "*(generation failed)*"}


@dataclass
class WebContext:
    """What every tab builder gets: the shared runtime and the app objects built over it."""

    runtime: Runtime
    chat: Chat


# ----- Chat ----------------------------------------------------------------------------------


def _render(messages: list[Message]) -> list[gr.ChatMessage]:
    """Stored or streaming messages as chatbot messages; reasoning becomes a collapsible message of its own."""
    shown: list[gr.ChatMessage] = []
    for message in messages:
        if message.role == "user":
            shown.append(gr.ChatMessage(role="user", content=message.content))
            continue
        streaming = message.finish_reason is None
        if message.reasoning:
            status = "pending" if streaming and not message.content else "done"
            shown.append(gr.ChatMessage(role="assistant", content=message.reasoning,
                                        metadata={"title": "Reasoning", "status": status}))
        note = STOPPED_NOTES.get(message.finish_reason or "")
        content = f"{message.content} {note}".strip() if note else message.content
        if content or not message.reasoning:
            shown.append(gr.ChatMessage(role="assistant", content=content))
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
            chatbot = gr.Chatbot(label="Chat", height=460, buttons=["copy"], elem_id="chatbot")
            with gr.Row():
                text = gr.Textbox(placeholder="Message r1…", show_label=False, scale=5, elem_id="chat-input", autofocus=True)
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
            ctx.chat.stop(conversation_id)
            store.delete(conversation_id)
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
    chatbot.clear(lambda: (None, refresh_list(None)), None, [conversation, conversations])  # a fresh chat; the stored one stays
    delete.click(delete_conversation, [conversation], [chatbot, conversation, conversations])
    demo.load(lambda: refresh_list(None), None, [conversations])


# ----- Settings ------------------------------------------------------------------------------


def _cache_stats_markdown(runtime: Runtime) -> str:
    stats = runtime.engine.cache_stats()
    looked_up = stats.hit_tokens + stats.miss_tokens
    hit_rate = f"{stats.hit_tokens / looked_up:.0%}" if looked_up else "—"
    mib = 1 << 20
    return "\n".join([
        "| KV cache | |",
        "| --- | --- |",
        f"| used / capacity | {stats.bytes_used / mib:.1f} / {stats.bytes_capacity / mib:.0f} MiB |",
        f"| prefix-cache hit tokens | {stats.hit_tokens} ({hit_rate} of prompt tokens) |",
        f"| computed prompt tokens | {stats.miss_tokens} |",
        f"| cached blocks | {stats.cached_blocks} |",
        f"| evicted blocks | {stats.evicted_blocks} |",
        f"| preemptions | {stats.preemptions} |",
    ])


def build_settings_tab(ctx: WebContext, demo: gr.Blocks) -> None:
    runtime = ctx.runtime
    settings = runtime.settings
    gr.Markdown("Changes apply to this run; set defaults with `R1_*` environment variables or `r1 ui` flags.")
    with gr.Row():
        with gr.Column():
            model = gr.Textbox(label="Model", value=settings.model, elem_id="settings-model",
                               info="'default' (bundled SmolLM2-135M), a .gguf file or an HF model directory")
            quant = gr.Dropdown(label="Quantization", choices=list(QUANT_CHOICES), value=settings.quant or "fp32",
                                elem_id="settings-quant")
            kv_cache_mb = gr.Number(label="KV-cache size (MiB)", value=runtime.engine.kv_cache_mb, minimum=1,
                                    elem_id="settings-kv-cache")
            search_budget = gr.Number(label="Search budget (iterations per problem; 0 = the strategy's default)",
                                      value=settings.search_budget or 0, minimum=0, precision=0, elem_id="settings-budget")
            apply = gr.Button("Apply", variant="primary", elem_id="settings-apply")
            status = gr.Markdown(elem_id="settings-status")
        with gr.Column():
            stats = gr.Markdown(elem_id="cache-stats")
            refresh = gr.Button("Refresh statistics", size="sm")

    def apply_settings(model_path: str, quant_name: str, kv_mb: float | None, budget: float | None):
        wanted = dataclasses.replace(
            runtime.settings,
            model=model_path.strip() or "default",
            quant=None if quant_name == "fp32" else quant_name,
            # unchanged from what the engine runs with: keep the setting as it is (None = the default size)
            kv_cache_mb=float(kv_mb) if kv_mb and kv_mb != runtime.engine.kv_cache_mb else runtime.settings.kv_cache_mb,
            search_budget=int(budget) if budget else None,
        )
        try:
            reloaded = runtime.apply(wanted)
        except (ValueError, FileNotFoundError) as err:
            return f"**Not applied:** {err}", _cache_stats_markdown(runtime)
        done = f"Reloaded {wanted.model} ({wanted.quant or 'fp32'})." if reloaded else "Applied (no reload needed)."
        return done, _cache_stats_markdown(runtime)

    apply.click(apply_settings, [model, quant, kv_cache_mb, search_budget], [status, stats], concurrency_limit=1)
    refresh.click(lambda: _cache_stats_markdown(runtime), None, [stats])
    demo.load(lambda: _cache_stats_markdown(runtime), None, [stats])


# ----- the app -------------------------------------------------------------------------------

TabBuilder = Callable[[WebContext, gr.Blocks], None]
TABS: tuple[tuple[str, TabBuilder], ...] = (
    ("Chat", build_chat_tab),
    ("Settings", build_settings_tab),
)


def build_app(runtime: Runtime) -> gr.Blocks:
    """Every tab of TABS over `runtime`; conversations in the data directory's SQLite file."""
    store = ConversationStore.in_data_dir(runtime.settings.data_path())
    ctx = WebContext(runtime=runtime, chat=Chat(runtime, store))
    with gr.Blocks(title="r1-reasoner", analytics_enabled=False) as demo:
        with gr.Tabs():
            for title, build in TABS:
                with gr.Tab(title, id=title.lower()):
                    build(ctx, demo)
    return demo


def start(runtime: Runtime, host: str, port: int) -> gr.Blocks:
    """Serve the app on host:port in background threads; returns it (`.close()` stops it)."""
    demo = build_app(runtime)
    demo.queue(default_concurrency_limit=None)
    demo.launch(
        server_name=host, server_port=port, share=False, prevent_thread_lock=True, quiet=True, show_error=True,
        ssr_mode=False, pwa=False, mcp_server=False, enable_monitoring=False, footer_links=["api", "settings"],
    )
    return demo


def launch(settings: Settings) -> None:
    """`r1 ui`: load the model, serve the app, print its address, block until interrupted."""
    runtime = Runtime(settings)
    print(f"r1 ui — loading {settings.model} ({settings.quant or 'fp32'})...", file=sys.stderr)
    runtime.engine  # load before listening: a missing model is an error, not a broken page
    demo = start(runtime, settings.host, settings.port)
    print(f"r1 ui: open http://{settings.host}:{settings.port} in your browser (Ctrl-C stops)", flush=True)
    try:
        demo.block_thread()
    finally:
        runtime.close()
