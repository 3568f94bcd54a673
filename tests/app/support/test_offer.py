"""What the support bot's grammar offers, on the real order database: only values that occur, never more than
the guard allows, changes only when asked for, and a look-up before an answer about an order."""

from __future__ import annotations

import itertools

import pytest

from app.support.guard import NEEDS_CONFIRMATION, PolicyGuard, SessionState
from app.support.offer import argument_schemas, must_call, offered_tools
from tools.orders import order_tools

IVAN = "ivan_santos_6635"  # #W6893533 delivered (garden hose 5206946487, earbuds 1646531091), #W8770097 pending
IVAN_EMAIL = "ivan.santos3158@example.com"  # paypal_6151711 only


@pytest.fixture
def schemas(order_db):
    return argument_schemas(order_tools(order_db))


def state(*messages: str, user_id: str | None = IVAN) -> SessionState:
    return SessionState(customer_messages=list(messages), user_id=user_id)


def enum(offer: dict, tool: str, argument: str) -> list:
    schema = offer[tool]
    assert "anyOf" not in schema, "one order: one argument schema"
    prop = schema["properties"][argument]
    return prop["items"]["enum"] if prop.get("type") == "array" else prop["enum"]


def test_before_authentication_only_what_the_customer_typed(order_db, schemas) -> None:
    offer = offered_tools(
        schemas, state("Hi, I am Ivan Santos, zip 75277, or ivan.santos3158@example.com", user_id=None), order_db
    )
    assert set(offer) == {"find_user_id_by_email", "find_user_id_by_name_zip"}
    assert enum(offer, "find_user_id_by_email", "email") == [IVAN_EMAIL]
    assert enum(offer, "find_user_id_by_name_zip", "first_name") == ["Ivan"]
    assert enum(offer, "find_user_id_by_name_zip", "last_name") == ["Santos"]
    assert enum(offer, "find_user_id_by_name_zip", "zip") == ["75277"]
    two = offered_tools(schemas, state("Hello Support Team, Ivan Santos here, zip 75277", user_id=None), order_db)
    pairs = [
        (c["properties"]["first_name"]["enum"][0], c["properties"]["last_name"]["enum"][0])
        for c in two["find_user_id_by_name_zip"]["anyOf"]
    ]
    assert pairs == [("Hello", "Support"), ("Support", "Team"), ("Ivan", "Santos")]  # adjacent words only
    assert offered_tools(schemas, state("What's the status of order #W8770097?", user_id=None), order_db) == {}
    human = offered_tools(schemas, state("Let me talk to a human", user_id=None), order_db)
    assert set(human) == {"transfer_to_human_agents"}


def test_a_question_offers_reads_of_the_named_order_and_no_change(order_db, schemas) -> None:
    offer = offered_tools(schemas, state("What is the status of order #W8770097?"), order_db)
    assert set(offer) == {"get_order_details"}  # no profile (the order is named), no product, no change
    assert enum(offer, "get_order_details", "order_id") == ["#W8770097"]
    unnamed = offered_tools(schemas, state("What about my orders?"), order_db)
    assert enum(unnamed, "get_order_details", "order_id") == order_db.user(IVAN)["orders"]
    assert enum(unnamed, "get_user_details", "user_id") == [IVAN]


def test_a_cancellation_offers_the_named_pending_order_with_the_reason_said(order_db, schemas) -> None:
    offer = offered_tools(schemas, state("Please cancel order #W8770097, I no longer need it."), order_db)
    assert enum(offer, "cancel_pending_order", "order_id") == ["#W8770097"]
    assert enum(offer, "cancel_pending_order", "reason") == ["no longer needed"]
    assert "return_delivered_order_items" not in offer  # not asked for, and the order is not delivered
    delivered = offered_tools(schemas, state("Cancel order #W6893533."), order_db)
    assert "cancel_pending_order" not in delivered  # only pending orders can be cancelled


def test_a_return_offers_the_named_items_of_that_order_and_refund_methods(order_db, schemas) -> None:
    offer = offered_tools(schemas, state("I want to return the garden hose from order #W6893533."), order_db)
    assert enum(offer, "return_delivered_order_items", "order_id") == ["#W6893533"]
    assert enum(offer, "return_delivered_order_items", "item_ids") == ["5206946487"]
    assert offer["return_delivered_order_items"]["properties"]["item_ids"]["maxItems"] == 1  # one hose was ordered
    assert enum(offer, "return_delivered_order_items", "payment_method_id") == ["paypal_6151711"]
    unnamed_item = offered_tools(schemas, state("Return something from order #W6893533."), order_db)
    assert enum(unnamed_item, "return_delivered_order_items", "item_ids") == ["5206946487", "1646531091"]


def test_an_order_read_or_named_is_needed_before_a_change(order_db, schemas) -> None:
    assert "cancel_pending_order" not in offered_tools(schemas, state("Cancel my order please."), order_db)
    after_read = offered_tools(schemas, state("Cancel my order please."), order_db, orders_read=["#W8770097"])
    assert enum(after_read, "cancel_pending_order", "order_id") == ["#W8770097"]


def test_an_address_only_from_pieces_the_customer_typed(order_db, schemas) -> None:
    asked = "Change the shipping address of order #W8770097 to 12 Elm Street, Apt 3, Dallas, TX, USA, 75201."
    offer = offered_tools(schemas, state(asked), order_db)
    assert enum(offer, "modify_pending_order_address", "address1") == ["12 Elm Street"]
    assert enum(offer, "modify_pending_order_address", "zip") == ["75201"]
    assert "Dallas" in enum(offer, "modify_pending_order_address", "city")
    no_street = offered_tools(schemas, state("Change the address of order #W8770097 please."), order_db)
    assert "modify_pending_order_address" not in no_street and "modify_user_address" not in no_street


def test_a_read_in_view_is_not_offered_again(order_db, schemas) -> None:
    offer = offered_tools(
        schemas, state("Status of #W8770097?"), order_db, in_view={("get_order_details", "#W8770097")}
    )
    assert "get_order_details" not in offer


def test_must_call_before_answering_about_an_unseen_order_or_unchecked_details(order_db) -> None:
    assert must_call(state(f"my email is {IVAN_EMAIL}", user_id=None), order_db, set(), [])
    assert not must_call(state(f"my email is {IVAN_EMAIL}", user_id=None), order_db, set(), ["find_user_id_by_email"])
    assert not must_call(state("hello", user_id=None), order_db, set(), [])
    assert must_call(state("Status of #W8770097?"), order_db, set(), [])
    assert not must_call(state("Status of #W8770097?"), order_db, {("get_order_details", "#W8770097")}, [])
    assert not must_call(state("Status of #W4566809?"), order_db, set(), [])  # another customer's: nothing to read


@pytest.mark.parametrize(
    "text",
    [
        "Cancel #W8770097 and #W4566809, no longer needed. Return the garden hose of #W6893533 to gift_card_2259499 "
        "or credit_card_3362387. Exchange the office chair of #W8770097 for 1793929609, pay with paypal_6151711. "
        "Change my address to 12 Elm Street, Apt 3, Dallas, TX, USA, 75201. Pay #W4566809 with my card.",
    ],
)
def test_every_offered_value_passes_the_guard(order_db, schemas, text) -> None:
    """The offer never goes beyond the guard: every id it spells is the customer's (another customer's order,
    gift card or card typed in the same message is not offered)."""
    guard = PolicyGuard(order_db)
    session = state(text)
    offer = offered_tools(schemas, session, order_db, orders_read=["#W8770097", "#W6893533", "#W4566809"])
    assert {"cancel_pending_order", "return_delivered_order_items", "modify_user_address"} <= set(offer)
    checked = 0
    for name, schema in offer.items():
        for variant in schema.get("anyOf", [schema]):
            properties = variant["properties"]
            values = [p.get("enum") or p.get("items", {}).get("enum") or [None] for p in properties.values()]
            for combo in itertools.islice(itertools.product(*values), 200):
                arguments = {
                    k: ([v] if properties[k].get("type") == "array" else v)
                    for k, v in zip(properties, combo)
                    if v is not None
                }
                assert guard.check(session, name, arguments) in (None, NEEDS_CONFIRMATION), (name, arguments)
                assert "#W4566809" not in str(arguments) and "gift_card_2259499" not in str(arguments)
                checked += 1
    assert checked > 20
