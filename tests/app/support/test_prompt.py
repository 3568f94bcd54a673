"""The worked examples the support bot's model reads: they state nothing that the bot itself would not be allowed
to (issue 29: "The refund takes 5 to 7 business days", which no tool gave, was copied by the model)."""

from __future__ import annotations

from app.support.grounding import Evidence, unsupported
from app.support.prompt import EXAMPLES, NEW_CONVERSATION

EXAMPLE_PRODUCTS = ("Desk Lamp", "Water Bottle")  # the products the examples' tool results name


def test_every_example_message_states_only_what_its_conversation_gave() -> None:
    seen: list[str] = []  # this example conversation's customer messages and tool results
    checked = 0
    for role, content in EXAMPLES:
        if role == "system" and content == NEW_CONVERSATION:
            seen = []
        elif role == "user":
            seen.append(content)
        elif role == "assistant" and "message" in content:
            assert unsupported(content["message"], Evidence(seen), EXAMPLE_PRODUCTS) == [], content["message"]
            checked += 1
    assert checked == 4  # the verification, the look-up, the return and the cancellation messages
    assert not any("business days" in str(content) for _, content in EXAMPLES)
