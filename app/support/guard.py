"""The retail policy in code: what the support bot may do, checked before a tool call reaches the database.

The model proposes, the guard disposes. A refusal is a string for the model ("Refused: ..."), never an
exception, so a small model that breaks policy only loses a step. What the guard enforces:

- no customer data before authentication; authentication only with an email, or a first name, last name
  and zip, that the customer typed themselves (never one read from tool output);
- one customer per conversation: once authenticated, no switch to another user;
- every order, user, payment-method and item id must belong to the authenticated customer;
- a write runs only when the bot's previous message stated exactly that call (the statement is written by
  code from the call itself, see `describe_write`) and the customer's latest message is an explicit yes.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tools.orders import OrderDB, actions

AUTH_TOOLS = frozenset({"find_user_id_by_email", "find_user_id_by_name_zip"})
# Tools that never touch a customer's data: allowed before authentication.
PUBLIC_TOOLS = frozenset(
    {"get_product_details", "list_all_product_types", "calculate", "think", "transfer_to_human_agents"}
)
WRITE_TOOLS = frozenset(
    {
        "cancel_pending_order",
        "modify_pending_order_address",
        "modify_pending_order_items",
        "modify_pending_order_payment",
        "modify_user_address",
        "return_delivered_order_items",
        "exchange_delivered_order_items",
    }
)

NEEDS_CONFIRMATION = "Refused: this change needs the customer's explicit yes to exactly this action first."

# Consent is an allow-list: the whole message must be made of these phrases (at least one yes among them),
# separated only by spaces, commas, full stops and exclamation marks. Anything else (a condition, a question,
# a "but", another request, a word this list does not know) is not consent, and the bot asks again.
_YES_PHRASES = ("yes", "yeah", "yep", "yup", "confirm", "confirmed", "i confirm")
_COURTESY_PHRASES = (
    "please",
    "go ahead",
    "please go ahead",
    "proceed",
    "please proceed",
    "do it",
    "please do",
    "thanks",
    "thank you",
    "correct",
    "that's correct",
    "that is correct",
    "that's right",
    "that is right",
)
_PHRASE = "|".join(re.escape(p) for p in sorted(_YES_PHRASES + _COURTESY_PHRASES, key=len, reverse=True))
_CONSENT = re.compile(rf"(?:(?:{_PHRASE})\b[\s,.!]*)+")
_MAX_CONSENT_CHARS = 200


def is_explicit_yes(text: str) -> bool:
    """An unhedged yes to exactly the proposed action: the message holds a yes and nothing but courtesy
    ("Yes, please go ahead."). "What happens if I say yes", "yes if it is free", "Yes, but cancel my other
    order instead" are not consent: they hold a question, a condition or another request."""
    if len(text) > _MAX_CONSENT_CHARS:
        return False
    words = unicodedata.normalize("NFKC", text).replace("\u2019", "'").lower().strip(" \t\r\n,.!")
    if not _CONSENT.fullmatch(words):
        return False
    return any(phrase in _YES_PHRASES for phrase in re.findall(rf"\b(?:{_PHRASE})\b", words))


def describe_write(name: str, arguments: Mapping[str, Any]) -> str:
    """The confirmation question for a write call, stating every argument (the customer confirms this text)."""
    details = ", ".join(f"{key}={json.dumps(value)}" for key, value in arguments.items())
    return f"To confirm, I will run {name.replace('_', ' ')} with {details}. Reply yes to proceed, or no to stop."


@dataclass
class SessionState:
    """What the guard knows about one conversation."""

    customer_messages: list[str] = field(default_factory=list)
    user_id: str | None = None
    proposed_write: tuple[str, str] | None = None  # (tool, canonical arguments) stated in the last bot message
    confirmed_write: tuple[str, str] | None = None  # the proposal the customer's latest message said yes to

    def customer_said(self, value: str) -> bool:
        needle = value.strip().lower()
        return bool(needle) and any(needle in message.lower() for message in self.customer_messages)


def canonical(name: str, arguments: Mapping[str, Any]) -> tuple[str, str]:
    return name, json.dumps(dict(arguments), sort_keys=True)


class PolicyGuard:
    """Checks one proposed tool call against a session's state; reads the database only to check ownership."""

    def __init__(self, db: OrderDB) -> None:
        self.db = db

    def check(self, state: SessionState, name: str, arguments: Mapping[str, Any]) -> str | None:
        """None if the call may run, else the refusal to hand back to the model."""
        if name in AUTH_TOOLS:
            return self._check_authentication(state, name, arguments)
        if name in PUBLIC_TOOLS:
            return None
        if state.user_id is None:
            return "Refused: authenticate the customer first (email, or first name, last name and zip)."
        problem = self._check_ownership(state.user_id, arguments)
        if problem:
            return problem
        if name in WRITE_TOOLS and state.confirmed_write != canonical(name, arguments):
            return NEEDS_CONFIRMATION
        return None

    def record_authentication(self, state: SessionState, name: str, result: str) -> None:
        """After an allowed authentication call ran: a user id result authenticates the session."""
        if name in AUTH_TOOLS and not result.startswith("Error") and self.db.user(result) is not None:
            state.user_id = result

    def _check_authentication(self, state: SessionState, name: str, arguments: Mapping[str, Any]) -> str | None:
        values = [str(v) for v in arguments.values()]
        if not all(state.customer_said(v) for v in values):
            return "Refused: authenticate only with details the customer typed in this conversation."
        if state.user_id is not None:
            found = self._lookup_user(name, arguments)
            if found != state.user_id:
                return "Refused: one customer per conversation; this conversation belongs to another customer."
        return None

    def _lookup_user(self, name: str, arguments: Mapping[str, Any]) -> str | None:
        # Same look-up as the tool, used only to compare identities; its result is not shown to anyone.
        if name == "find_user_id_by_email":
            found = actions.find_user_id_by_email(self.db, str(arguments.get("email", "")))
        else:
            found = actions.find_user_id_by_name_zip(
                self.db,
                str(arguments.get("first_name", "")),
                str(arguments.get("last_name", "")),
                str(arguments.get("zip", "")),
            )
        return None if found.startswith("Error") else found

    def _check_ownership(self, user_id: str, arguments: Mapping[str, Any]) -> str | None:
        if "user_id" in arguments and arguments["user_id"] != user_id:
            return "Refused: that user id is not the authenticated customer's."
        user = self.db.user(user_id)
        assert user is not None, "an authenticated session's user exists"
        order = None
        if "order_id" in arguments:
            order = self.db.order(str(arguments["order_id"]))
            if order is None or order["user_id"] != user_id:
                return "Refused: that order id is not one of the authenticated customer's orders."
        # Ids are compared as strings: anything else is refused here, whatever checked the call before.
        payment = arguments.get("payment_method_id")
        if "payment_method_id" in arguments and (
            not isinstance(payment, str) or payment not in user["payment_methods"]
        ):
            return "Refused: that payment method is not one of the authenticated customer's."
        if "item_ids" in arguments:
            owned = [item["item_id"] for item in order["items"]] if order else []
            items = arguments["item_ids"]
            if not isinstance(items, list) or any(not isinstance(i, str) or i not in owned for i in items):
                return "Refused: those item ids are not all in that order."
        return None
