"""What the support bot's grammar offers the model at each step: the tools that can be right now, with their
argument values narrowed to the ones that actually occur.

The guard (`guard.py`) decides what may run; the offer decides what a small model can even write.
It never offers more than the guard allows, and narrows further: a 135M model chooses well between two or
three spelled-out values and badly among a thousand well-formed ids. The model still chooses every action.

- Before authentication: the look-ups by email, or by name and zip, with only the emails, pairs of adjacent
  capitalised words (first and last name) and 5-digit zips the customer typed; the hand-over to a human only
  when they asked for one.
- After: the customer's own ids only. Orders to look up are the ones the customer typed (all their own when
  they typed none). Changes and product look-ups only on orders the customer typed or the bot has read; cancel
  and modify only pending ones, return and exchange only delivered ones (the policy). Item ids
  are those of that same order (narrowed to the ones the customer named, by id or product name); new item ids
  are available variants of the same products; payment methods are the customer's (the ones they typed, if
  any; a refund goes to the original method or a gift card); a cancellation reason is the one whose words the
  customer used.
- A change only when the customer's words ask for that kind of change (cancel, return, exchange, address...);
  an address only from pieces of what the customer typed (the street line, city, zip...).
- The customer's profile only while they have named none of their orders (to find which one they mean);
  product details only for products of those orders that the customer named, when they want other items.
- A read whose result the model can still see (in its window of recent messages) is not offered again; a
  change counts as a read of the record it returns.
- Never `think`, `calculate` or `list_all_product_types`: a small model calls them in place of answering.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from app.support.guard import AUTH_TOOLS, SessionState
from tools.orders import OrderDB
from tools.orders.actions import CANCEL_REASONS
from tools.tool import Tool

Schema = dict[str, Any]

# Id formats of τ-bench's retail data, added to the tools' argument schemas so the grammar enforces them.
ID_PATTERNS = {
    "order_id": "^#W[0-9]{7}$",
    "user_id": "^[a-z]+_[a-z]+_[0-9]{4}$",
    "payment_method_id": "^(credit_card|gift_card|paypal)_[0-9]{7}$",
    "product_id": "^[0-9]{10}$",
    "zip": "^[0-9]{5}$",
}
ITEM_ID_PATTERN = "^[0-9]{10}$"

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_NAME = re.compile(r"\b[A-Z][a-z]{1,20}\b")
_FULL_NAME = re.compile(r"(?=\b([A-Z][a-z]{1,20}) ([A-Z][a-z]{1,20})\b)")  # overlapping pairs of capitalised words
_ZIP = re.compile(r"(?<!\d)\d{5}(?!\d)")
_ORDER_ID = re.compile(r"#W\d{7}")
_ASKS_FOR_HUMAN = re.compile(r"\b(human|person|representative|manager|real agent)\b", re.IGNORECASE)
# Words that choose a cancellation reason, in CANCEL_REASONS order.
_REASON_WORDS = (
    re.compile(r"no longer|don'?t need|do not need|not need", re.IGNORECASE),
    re.compile(r"mistake|by accident|accidental", re.IGNORECASE),
)
assert len(_REASON_WORDS) == len(CANCEL_REASONS)


def argument_schemas(tools: Sequence[Tool]) -> dict[str, Schema]:
    """Each tool's argument schema as the grammar's starting point, by name: its `Tool.schema` made compact
    (no descriptions), every argument required, ids held to their format, other strings and lists bounded."""
    return {tool.name: _compact(tool.schema) for tool in tools}


def _compact(schema: Schema) -> Schema:
    properties = {}
    for name, prop in schema.get("properties", {}).items():
        prop = {k: v for k, v in prop.items() if k not in ("title", "description")}
        if prop.get("type") == "string" and "enum" not in prop:
            if name in ID_PATTERNS:
                prop["pattern"] = ID_PATTERNS[name]
            else:
                prop["maxLength"] = 80
        if prop.get("type") == "array":
            prop = {
                "type": "array",
                "items": {"type": "string", "pattern": ITEM_ID_PATTERN},
                "minItems": 1,
                "maxItems": 5,
            }
        properties[name] = prop
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


# Tools that only read; one is not offered again while its result is in view.
READ_TOOLS = frozenset({"get_user_details", "get_order_details", "get_product_details", "list_all_product_types"})
ORDER_TOOLS_BY_STATUS = {
    "cancel_pending_order": "pending",
    "modify_pending_order_address": "pending",
    "modify_pending_order_items": "pending",
    "modify_pending_order_payment": "pending",
    "return_delivered_order_items": "delivered",
    "exchange_delivered_order_items": "delivered",
}
# A change is offered only when the customer's words ask for that kind of change (a small model otherwise
# proposes returns and address changes nobody asked for).
_ASKS_FOR = {
    "cancel_pending_order": re.compile(r"\bcancel|no longer need|by mistake", re.IGNORECASE),
    "modify_pending_order_address": re.compile(r"\baddress|\bship", re.IGNORECASE),
    "modify_user_address": re.compile(r"\baddress", re.IGNORECASE),
    "modify_pending_order_items": re.compile(r"\b(modify|change|swap|switch|replace|exchange)", re.IGNORECASE),
    "modify_pending_order_payment": re.compile(r"\b(pay|payment|card|paypal)", re.IGNORECASE),
    "return_delivered_order_items": re.compile(r"\b(return|refund|send back)", re.IGNORECASE),
    "exchange_delivered_order_items": re.compile(r"\b(exchange|swap|switch|replace|change)", re.IGNORECASE),
}
_ITEM_CHANGES = ("modify_pending_order_items", "exchange_delivered_order_items")
_SEGMENT = re.compile(r"[,;\n]|\bto\b")
_STREET = re.compile(r"^\d+ [A-Za-z]")
_UNIT = re.compile(r"^(apt|apartment|suite|unit|floor|room)\b", re.IGNORECASE)

# Tools a small model reaches for in place of an answer; they never move a customer's request forward.
NOT_OFFERED = frozenset({"think", "calculate", "list_all_product_types"})


def typed_order_ids(state: SessionState) -> list[str]:
    """Order ids in what the customer typed, in the order they first appear."""
    return list(dict.fromkeys(_ORDER_ID.findall(" ".join(state.customer_messages))))


def offered_tools(
    schemas: Mapping[str, Schema],
    state: SessionState,
    db: OrderDB,
    in_view: Iterable[tuple[str, str]] = (),
    orders_read: Iterable[str] = (),
) -> dict[str, Schema]:
    """Tool name -> argument schema for the tools the model may call now (see the module docstring).

    `schemas` are the tools' full argument schemas (with id patterns); `in_view` the (read tool, argument)
    reads whose results the model can still see in its prompt; `orders_read` the orders whose details the bot
    has seen in this conversation.
    """
    typed = " ".join(state.customer_messages)
    offer: dict[str, Schema] = {}
    if _ASKS_FOR_HUMAN.search(typed):
        offer["transfer_to_human_agents"] = schemas["transfer_to_human_agents"]
    if state.user_id is None:
        emails = _unique(_EMAIL.findall(typed))
        names = _unique(_FULL_NAME.findall(typed))
        zips = _unique(_ZIP.findall(typed))
        if emails:
            offer["find_user_id_by_email"] = _object({"email": _enum(emails)})
        if names and zips:
            choices = [
                _object({"first_name": _enum([first]), "last_name": _enum([last]), "zip": _enum(zips)})
                for first, last in names
            ]
            offer["find_user_id_by_name_zip"] = choices[0] if len(choices) == 1 else {"anyOf": choices}
        return offer
    user = db.user(state.user_id)
    assert user is not None, "an authenticated session's user exists"
    own_orders = {order_id: db.order(order_id) for order_id in user["orders"]}
    own_orders = {k: v for k, v in own_orders.items() if v is not None}
    named = [o for o in typed_order_ids(state) if o in own_orders]
    orders = {o: own_orders[o] for o in (named or own_orders)}
    # Changes, and product look-ups, only on orders the customer named or the bot has read.
    known = {o: own_orders[o] for o in _unique([*named, *orders_read]) if o in own_orders}
    done = set(in_view)
    methods = list(user["payment_methods"])

    if not named and ("get_user_details", state.user_id) not in done:  # to find which order they mean
        offer["get_user_details"] = _object({"user_id": _enum([state.user_id])})
    unread = [o for o in orders if ("get_order_details", o) not in done]
    if unread:
        offer["get_order_details"] = _object({"order_id": _enum(unread)})
    lowered = typed.lower()
    wants_new_items = any(_ASKS_FOR[name].search(typed) for name in _ITEM_CHANGES)
    products = _unique(
        item["product_id"]
        for order in known.values()
        for item in order["items"]
        if wants_new_items and item["name"].lower() in lowered
    )
    products = [p for p in products if ("get_product_details", p) not in done]
    if products:
        offer["get_product_details"] = _object({"product_id": _enum(products)})

    for name, status in ORDER_TOOLS_BY_STATUS.items():
        if not _ASKS_FOR[name].search(typed):
            continue
        choices = [
            _order_arguments(name, schemas[name], order, typed, methods, db)
            for order in known.values()
            if order["status"] == status
        ]
        choices = [c for c in choices if c is not None]
        if choices:
            offer[name] = choices[0] if len(choices) == 1 else {"anyOf": choices}
    address = _typed_address(typed)
    if address is not None and _ASKS_FOR["modify_user_address"].search(typed):
        offer["modify_user_address"] = _object({"user_id": _enum([state.user_id]), **address})
    return {name: schema for name, schema in offer.items() if name not in NOT_OFFERED | AUTH_TOOLS}


def must_call(
    state: SessionState, db: OrderDB, in_view: Collection[tuple[str, str]], called_this_turn: Collection[str]
) -> bool:
    """Whether the next action must be a tool call rather than a message: the customer's latest message gave
    details to authenticate with and no look-up was tried this turn, or it names one of their orders whose
    details the model cannot see. A small model otherwise answers without looking, and invents a status."""
    latest = state.customer_messages[-1] if state.customer_messages else ""
    if state.user_id is None:
        gave_details = bool(_EMAIL.search(latest)) or bool(_NAME.search(latest) and _ZIP.search(latest))
        return gave_details and not AUTH_TOOLS & set(called_this_turn)
    user = db.user(state.user_id)
    own = set(user["orders"]) if user else set()
    return any(o in own and ("get_order_details", o) not in in_view for o in _ORDER_ID.findall(latest))


def _order_arguments(
    name: str, schema: Schema, order: Mapping[str, Any], typed: str, methods: list[str], db: OrderDB
) -> Schema | None:
    """The argument schema of `name` on this one order, or None when no argument value can be right."""
    properties: dict[str, Schema] = {}
    for argument, prop in schema["properties"].items():
        if argument == "order_id":
            prop = _enum([order["order_id"]])
        elif argument == "reason":
            said = [r for r, words in zip(CANCEL_REASONS, _REASON_WORDS) if words.search(typed)]
            prop = _enum(said if len(said) == 1 else list(CANCEL_REASONS))
        elif argument == "item_ids":
            named = _named_items(order, typed)  # an item ordered twice may be returned twice, no more
            prop = _id_list(_unique(named), max_items=len(named))
        elif argument == "new_item_ids":
            variants = _variants(order, db, typed)
            prop = _id_list(variants, max_items=len(order["items"]))
        elif argument in _ADDRESS_FIELDS:
            address = _typed_address(typed)
            if address is None:
                return None
            prop = address[argument]
        elif argument == "payment_method_id":
            allowed = _payment_choices(name, order, methods)
            prop = _enum([m for m in allowed if m in typed] or allowed)
        if prop.get("enum") == [] or prop.get("items", {}).get("enum") == []:
            return None
        properties[argument] = prop
    return _object(properties)


_ADDRESS_FIELDS = ("address1", "address2", "city", "state", "country", "zip")


def _typed_address(typed: str) -> dict[str, Schema] | None:
    """Address fields whose values are pieces of what the customer typed (split at commas): a street line
    ("12 Elm Street"), an optional unit ("Apt 3", or empty), short words for city, state and country, a zip.
    None when they typed no street line or zip."""
    pieces = _unique(p.strip().rstrip(".") for p in _SEGMENT.split(typed) if 0 < len(p.strip()) <= 80)
    streets = [p for p in pieces if _STREET.match(p)]
    units = [p for p in pieces if _UNIT.match(p)]
    zips = _unique(_ZIP.findall(typed))
    words = [p for p in pieces if len(p.split()) <= 3 and not any(c.isdigit() for c in p)]
    if not streets or not zips or not words:
        return None
    return {
        "address1": _enum(streets),
        "address2": _enum([*units, ""]),
        "city": _enum(words),
        "state": _enum(words),
        "country": _enum(words),
        "zip": _enum(zips),
    }


def _named_items(order: Mapping[str, Any], typed: str) -> list[str]:
    """The order's items the customer named (by id or product name), else all of them: one id per unit."""
    lowered = typed.lower()
    items = order["items"]
    named = [i["item_id"] for i in items if i["item_id"] in typed or i["name"].lower() in lowered]
    return named or [i["item_id"] for i in items]


def _variants(order: Mapping[str, Any], db: OrderDB, typed: str) -> list[str]:
    """Available item ids of the order's products (the customer's typed ones among them, if any)."""
    variants: list[str] = []
    for product_id in _unique(item["product_id"] for item in order["items"]):
        product = db.product(product_id)
        if product is not None:
            variants += [v["item_id"] for v in product["variants"].values() if v["available"]]
    typed_ids = [v for v in variants if v in typed]
    return _unique(typed_ids or variants)


def _payment_choices(name: str, order: Mapping[str, Any], methods: list[str]) -> list[str]:
    history = order["payment_history"]
    current = history[0]["payment_method_id"] if history else None
    if name == "return_delivered_order_items":  # refunds go back to the original method or to a gift card
        return [m for m in methods if m == current or m.startswith("gift_card")]
    if name == "modify_pending_order_payment":  # a change of method: not the one it has
        return [m for m in methods if m != current]
    return methods


def _object(properties: Mapping[str, Schema]) -> Schema:
    return {
        "type": "object",
        "properties": dict(properties),
        "required": list(properties),
        "additionalProperties": False,
    }


def _enum(values: list[str]) -> Schema:
    return {"type": "string", "enum": list(values)}


def _id_list(values: list[str], max_items: int) -> Schema:
    return {"type": "array", "items": _enum(values), "minItems": 1, "maxItems": max(1, min(max_items, 5))}


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))
