"""Grounded bot messages: a sentence that states a number, id, amount, date or product name that no tool
result and no customer message of the session holds is never sent. A scripted backend writes the made-up
sentence on the real order database; the real default model is checked on a whole look-up flow."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from app.support import Support
from app.support.grounding import Evidence, claims, grounded, unsupported

IVAN_EMAIL = "ivan.santos3158@example.com"  # ivan_santos_6635; #W8770097 is pending
PRODUCTS = ("Garden Hose", "Wireless Earbuds", "T-Shirt")


def test_claims_are_numbers_ids_amounts_dates_and_products() -> None:
    found = claims(
        "Order #W8770097 costs $1,234.50 and ships on 2024-05-01, the 3rd, or Friday; two T-Shirts.", PRODUCTS
    )
    assert [(c.text, c.kind) for c in found] == [
        ("#W8770097", "id"),
        ("1,234.50", "number"),
        ("2024-05-01", "id"),
        ("3", "number"),
        ("Friday", "date"),
        ("two", "number"),
        ("T-Shirt", "product"),
    ]
    assert claims("You may cancel it. Your email is verified.", PRODUCTS) == []


def test_evidence_supports_values_in_any_form_the_sources_wrote_them() -> None:
    evidence = Evidence(
        [
            '{"order_id": "#W8770097", "price": 100.0, "payment_method_id": "gift_card_7245904"}',
            "I bought two garden hoses on Friday",
        ]
    )
    grounded_sentences = [
        "Order W8770097 cost $100.00.",
        "Your gift card 7245904 paid 100 dollars.",
        "You bought 2 Garden Hoses on Friday.",
    ]
    for sentence in grounded_sentences:
        assert unsupported(sentence, evidence, PRODUCTS) == [], sentence
    assert [c.text for c in unsupported("You will receive a refund of $10.00 on Monday.", evidence, PRODUCTS)] == [
        "10.00",
        "Monday",
    ]
    assert [c.text for c in unsupported("Your T-Shirt is order #W1111111.", evidence, PRODUCTS)] == [
        "#W1111111",
        "T-Shirt",
    ]
    assert [c.text for c in unsupported("See order #W877 or gift_card_72.", evidence)] == ["#W877", "gift_card_72"]


def test_grounded_drops_only_the_sentences_with_unsupported_claims() -> None:
    evidence = Evidence(['{"order_id": "#W8770097", "status": "pending"}'])
    text, dropped = grounded(
        "Order #W8770097 is pending. You can buy gift card 7245904 for 100 dollars. Thanks!", evidence
    )
    assert text == "Order #W8770097 is pending. Thanks!"
    assert dropped == ["You can buy gift card 7245904 for 100 dollars."]


class ScriptedBackend:
    """Writes the given actions in turn (a tool call or a message), as the constrained model would."""

    def __init__(self, tokenizer, actions: list[dict]) -> None:
        self.tokenizer = tokenizer
        self.context_length = 8192
        self.actions = list(actions)

    def chat_action(self, messages, tools, **kwargs):
        return SimpleNamespace(text=json.dumps(self.actions.pop(0)))


def test_a_made_up_amount_after_a_real_look_up_is_never_sent(order_db, default_tokenizer) -> None:
    """The look-ups run on the real database; the message states the order's real status, then a refund and a
    gift card that are in no tool result: only the status reaches the customer."""
    order = order_db.order("#W8770097")
    assert order["status"] == "pending"
    made_up = "You will receive a refund of $10.00. You can also buy gift card 7245904 for 100 dollars."
    backend = ScriptedBackend(
        default_tokenizer,
        [
            {"tool": "find_user_id_by_email", "arguments": {"email": IVAN_EMAIL}},
            {"message": "You are verified."},
            {"tool": "get_order_details", "arguments": {"order_id": "#W8770097"}},
            {"message": f"Your order #W8770097 is pending. {made_up}"},
        ],
    )
    bot = Support(order_db, backend)
    bot.reply("s", f"Hi, my email is {IVAN_EMAIL}.")
    reply = bot.reply("s", "What is the status of order #W8770097?")
    assert [c.name for c in reply.tool_calls] == ["get_order_details"]
    assert "10.00" not in json.dumps(order) and "7245904" not in json.dumps(order)  # truly made up
    assert reply.text == "Your order #W8770097 is pending."

    all_made_up = ScriptedBackend(default_tokenizer, [{"message": made_up}, {"message": made_up}])
    fallback = Support(order_db, all_made_up).reply("t", "Hello")
    assert "10.00" not in fallback.text and "7245904" not in fallback.text and fallback.text  # something safe is sent


def test_what_the_customer_said_may_be_stated_back(order_db, default_tokenizer) -> None:
    backend = ScriptedBackend(default_tokenizer, [{"message": "You said order #W1234567 cost $42 on March 3."}])
    reply = Support(order_db, backend).reply("s", "My order #W1234567 cost $42 on March 3, where is it?")
    assert reply.text == "You said order #W1234567 cost $42 on March 3."


@pytest.fixture(scope="module")
def engine():
    import model
    from model.loading.checkpoint import ModelNotFoundError

    try:
        return model.load("default")
    except ModelNotFoundError as e:
        pytest.skip(str(e))


@pytest.mark.slow
def test_real_model_messages_state_only_what_the_session_holds(engine, order_db) -> None:
    """A look-up flow on the default model: every sentence sent is grounded in the calls and the customer's words."""
    bot = Support(order_db, engine)
    said: list[str] = []
    results: list[str] = []
    for text in (f"Hi, my email is {IVAN_EMAIL}.", "What is the status of my order #W8770097?"):
        said.append(text)
        reply = bot.reply("s", text)
        results += [c.result for c in reply.tool_calls]
        evidence = Evidence([*results, *said])
        assert unsupported(reply.text, evidence, bot.products) == [], reply.text
    assert "pending" in reply.text.lower() and any(c.name == "get_order_details" for c in reply.tool_calls)
