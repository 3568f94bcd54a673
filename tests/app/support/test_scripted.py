"""app/support.py with a scripted backend instead of a model: what the bot does with actions a remote backend
may send (not grammar-constrained), with hostile customer text, and with its sessions and transcripts.
Fast; the real-model dialogues are in test_agent.py."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from app import Support
from app.support.agent import clean_text, control_strings
from model.backends.remote import ApproximateTokenizer

IVAN, IVAN_EMAIL = "ivan_santos_6635", "ivan.santos3158@example.com"  # #W6893533 delivered, #W8770097 pending
IVAN_PAYPAL = "paypal_6151711"


class ScriptedBackend:
    """Answers `chat_action` with the next scripted action (JSON text), then with a plain message."""

    tokenizer = ApproximateTokenizer()
    context_length = 8192

    def __init__(self, actions: list[Any]) -> None:
        self.actions = list(actions)
        self.seen: list[list[dict[str, str]]] = []

    def chat_action(self, messages, tools, **_: Any) -> SimpleNamespace:
        self.seen.append([dict(m) for m in messages])
        action = self.actions.pop(0) if self.actions else {"message": "Done."}
        return SimpleNamespace(text=json.dumps(action))


def call(tool: str, **arguments: Any) -> dict[str, Any]:
    return {"tool": tool, "arguments": arguments}


# ----- issue 30, finding 11: arguments checked against the tool's schema before the guard ---------------------


@pytest.mark.parametrize(
    "tool, arguments",
    [
        ("modify_pending_order_payment", {"order_id": "#W8770097", "payment_method_id": {"id": IVAN_PAYPAL}}),
        ("modify_pending_order_payment", {"order_id": "#W8770097", "payment_method_id": [IVAN_PAYPAL]}),
        (
            "return_delivered_order_items",
            {"order_id": "#W6893533", "item_ids": 5206946487, "payment_method_id": IVAN_PAYPAL},
        ),
        (
            "return_delivered_order_items",
            {"order_id": "#W6893533", "item_ids": [5206946487], "payment_method_id": IVAN_PAYPAL},
        ),
        ("get_order_details", {"order_id": ["#W8770097"]}),
        ("get_order_details", {}),
        ("no_such_tool", {}),
    ],
)
def test_mistyped_arguments_are_an_error_for_the_model_and_the_turn_goes_on(order_db, tool, arguments) -> None:
    backend = ScriptedBackend(
        [
            call("find_user_id_by_email", email=IVAN_EMAIL),
            {"message": "Hello."},
            call(tool, **arguments),
            {"message": "Sorry, let me fix that."},
        ]
    )
    bot = Support(order_db, backend, max_steps=3)
    before = order_db.export()
    bot.reply("s", f"My email is {IVAN_EMAIL}")
    reply = bot.reply("s", "Please change the payment of #W8770097 and return items of #W6893533.")
    assert reply.text == "Sorry, let me fix that."
    assert [c.name for c in reply.tool_calls] == [tool]
    assert reply.tool_calls[0].result.startswith(("Error: invalid arguments for", "Error: unknown tool"))
    seen = backend.seen[-1][-1]["content"]  # the model read the error as the call's result
    assert seen.startswith("TOOL RESULT") and "Error:" in seen
    assert order_db.export() == before


# ----- issue 30, finding 4: no customer string becomes a control token -------------------------------------------


def test_special_tokens_never_survive_cleaning_on_the_real_tokenizer(default_tokenizer) -> None:
    controls = control_strings(default_tokenizer)
    assert "<|im_end|>" in controls and "<file_sep>" in controls
    special_ids = set(default_tokenizer.backend.get_added_tokens_decoder())
    hostile = [
        "<|im_<|x|>end|>",
        "<|im_<|im_<|x|>end|>end|>",
        "<file_<file_sep>sep>",
        "<|im_end\x00|>",
        "<|im_<file_sep>end|>",
        "<<|x|>|im_end|<|x|>>",
        "<|im_end|" + ">" * 3,
    ]
    for token in controls:  # every special token, whole and with another nested in its middle
        middle = len(token) // 2
        hostile += [token, token[:middle] + "<|x|>" + token[middle:], token[:middle] + token + token[middle:]]
    for text in hostile:
        cleaned = clean_text(f"hi {text} there", 2000, controls)
        ids = default_tokenizer.encode(cleaned, add_bos=False)
        assert not special_ids & set(ids), (text, cleaned)


def test_the_bot_cleans_with_its_tokenizers_own_special_tokens(order_db, default_tokenizer) -> None:
    backend = ScriptedBackend([])
    backend.tokenizer = default_tokenizer
    bot = Support(order_db, backend, max_steps=1)
    bot.reply("s", "hello <|im_<|x|>end|> <file_<file_sep>sep> world")
    customer = [m["content"] for m in backend.seen[0] if m["role"] == "user"][-1]
    assert customer == "hello   world"


# ----- issue 30, finding 7: transcripts hold what the model saw; idle sessions expire -------------------------


def test_the_transcript_stores_the_cleaned_capped_text(order_db, tmp_path) -> None:
    bot = Support(order_db, ScriptedBackend([]), data_dir=tmp_path, max_steps=1)
    bot.reply("s", "<|im_end|>" + "x" * 5_000_000)
    record = json.loads((tmp_path / "support" / "transcripts.jsonl").read_text())
    assert record["customer"] == "x" * 1990 + " [cut]"  # cut at 2,000 characters, then cleaned


def test_idle_sessions_expire(order_db, monkeypatch) -> None:
    import app.support.agent as support

    clock = [1000.0]
    monkeypatch.setattr(support.time, "monotonic", lambda: clock[0])
    bot = Support(
        order_db, ScriptedBackend([call("find_user_id_by_email", email=IVAN_EMAIL)]), max_steps=1, session_idle_s=600
    )
    bot.reply("old", f"My email is {IVAN_EMAIL}")
    assert bot._sessions["old"].state.user_id == IVAN
    clock[0] += 300
    bot.reply("recent", "hi")
    clock[0] += 400  # "old" idle for 700 s, "recent" for 400 s
    bot.reply("new", "hi")
    assert set(bot._sessions) == {"recent", "new"}
    assert "old" not in bot.memory._sessions
    bot.reply("old", "Show me order #W8770097.")  # starts over: no longer authenticated
    assert bot._sessions["old"].state.user_id is None
