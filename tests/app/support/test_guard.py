"""The policy guard on a real order database: every rule refuses before a tool runs, and allows what it should."""

from __future__ import annotations

import pytest

from app.support.guard import (
    NEEDS_CONFIRMATION,
    WRITE_TOOLS,
    PolicyGuard,
    SessionState,
    canonical,
    describe_write,
    is_explicit_yes,
)

IVAN = "ivan_santos_6635"  # orders: #W6893533 delivered, #W8770097 pending; pays with paypal_6151711
IVAN_EMAIL = "ivan.santos3158@example.com"
RAJ = "raj_sanchez_2970"  # another customer: #W4566809 pending, credit_card_3362387


def authenticated(guard: PolicyGuard, *messages: str) -> SessionState:
    state = SessionState(customer_messages=[f"my email is {IVAN_EMAIL}", *messages])
    assert guard.check(state, "find_user_id_by_email", {"email": IVAN_EMAIL}) is None
    guard.record_authentication(state, "find_user_id_by_email", IVAN)
    assert state.user_id == IVAN
    return state


@pytest.fixture
def guard(order_db) -> PolicyGuard:
    return PolicyGuard(order_db)


@pytest.mark.parametrize(
    "name, arguments",
    [
        ("get_order_details", {"order_id": "#W8770097"}),
        ("get_user_details", {"user_id": IVAN}),
        ("cancel_pending_order", {"order_id": "#W8770097", "reason": "no longer needed"}),
    ],
)
def test_customer_data_and_writes_need_authentication(guard, name, arguments) -> None:
    assert "authenticate" in guard.check(SessionState(), name, arguments)


@pytest.mark.parametrize(
    "name, arguments",
    [
        ("list_all_product_types", {}),
        ("get_product_details", {"product_id": "8310926033"}),
        ("transfer_to_human_agents", {"summary": "wants a refund for shipping"}),
    ],
)
def test_public_tools_need_no_authentication(guard, name, arguments) -> None:
    assert guard.check(SessionState(), name, arguments) is None


def test_authentication_only_with_details_the_customer_typed(guard) -> None:
    state = SessionState(customer_messages=["hi, please look up my account"])
    assert "typed" in guard.check(state, "find_user_id_by_email", {"email": IVAN_EMAIL})
    state.customer_messages.append("It's Ivan Santos, zip 75277")
    assert (
        guard.check(state, "find_user_id_by_name_zip", {"first_name": "Ivan", "last_name": "Santos", "zip": "75277"})
        is None
    )
    assert "typed" in guard.check(
        state, "find_user_id_by_name_zip", {"first_name": "Ivan", "last_name": "Santos", "zip": "75278"}
    )


def test_failed_authentication_leaves_the_session_anonymous(guard) -> None:
    state = SessionState(customer_messages=["nobody@example.com"])
    guard.record_authentication(state, "find_user_id_by_email", "Error: user not found")
    assert state.user_id is None
    guard.record_authentication(state, "get_product_details", IVAN)  # only an authentication call authenticates
    assert state.user_id is None


def test_one_customer_per_conversation(guard) -> None:
    state = authenticated(guard, "actually I am raj.sanchez2046@example.com")
    refusal = guard.check(state, "find_user_id_by_email", {"email": "raj.sanchez2046@example.com"})
    assert "one customer per conversation" in refusal
    assert guard.check(state, "find_user_id_by_email", {"email": IVAN_EMAIL}) is None  # same customer again is fine


@pytest.mark.parametrize(
    "name, arguments, expected",
    [
        ("get_order_details", {"order_id": "#W4566809"}, "order id"),  # Raj's order
        ("get_order_details", {"order_id": "#W0000000"}, "order id"),  # nobody's
        ("get_user_details", {"user_id": RAJ}, "user id"),
        (
            "modify_pending_order_payment",
            {"order_id": "#W8770097", "payment_method_id": "credit_card_3362387"},
            "payment",
        ),
        (
            "return_delivered_order_items",
            {"order_id": "#W6893533", "item_ids": ["0000000000"], "payment_method_id": "paypal_6151711"},
            "item ids",
        ),
    ],
)
def test_ids_of_other_customers_are_refused(guard, name, arguments, expected) -> None:
    assert expected in guard.check(authenticated(guard), name, arguments)


def test_own_data_is_allowed(guard, order_db) -> None:
    state = authenticated(guard)
    assert guard.check(state, "get_order_details", {"order_id": "#W8770097"}) is None
    assert guard.check(state, "get_user_details", {"user_id": IVAN}) is None
    item = order_db.order("#W6893533")["items"][0]["item_id"]
    call = {"order_id": "#W6893533", "item_ids": [item], "payment_method_id": "paypal_6151711"}
    assert guard.check(state, "return_delivered_order_items", call) == NEEDS_CONFIRMATION


def test_a_write_runs_only_after_a_yes_to_exactly_that_call(guard) -> None:
    state = authenticated(guard)
    cancel = {"order_id": "#W8770097", "reason": "no longer needed"}
    assert guard.check(state, "cancel_pending_order", cancel) == NEEDS_CONFIRMATION
    state.confirmed_write = canonical("cancel_pending_order", cancel)
    assert guard.check(state, "cancel_pending_order", cancel) is None
    other = {"order_id": "#W8770097", "reason": "ordered by mistake"}
    assert guard.check(state, "cancel_pending_order", other) == NEEDS_CONFIRMATION
    assert (
        guard.check(
            state, "modify_pending_order_payment", {"order_id": "#W8770097", "payment_method_id": "paypal_6151711"}
        )
        == NEEDS_CONFIRMATION
    )


ADDRESS = {
    "address1": "12 Elm Street",
    "address2": "Apt 3",
    "city": "Dallas",
    "state": "TX",
    "country": "USA",
    "zip": "75201",
}
IVANS_WRITES = {  # one call of each write tool on Ivan's own orders and profile
    "cancel_pending_order": {"order_id": "#W8770097", "reason": "no longer needed"},
    "modify_pending_order_address": {"order_id": "#W8770097", **ADDRESS},
    "modify_pending_order_items": {
        "order_id": "#W8770097",
        "item_ids": ["4274709903"],
        "new_item_ids": ["1793929609"],
        "payment_method_id": "paypal_6151711",
    },
    "modify_pending_order_payment": {"order_id": "#W8770097", "payment_method_id": "paypal_6151711"},
    "modify_user_address": {"user_id": IVAN, **ADDRESS},
    "return_delivered_order_items": {
        "order_id": "#W6893533",
        "item_ids": ["5206946487"],
        "payment_method_id": "paypal_6151711",
    },
    "exchange_delivered_order_items": {
        "order_id": "#W6893533",
        "item_ids": ["5206946487"],
        "new_item_ids": ["9829827210"],
        "payment_method_id": "paypal_6151711",
    },
}


def test_the_writes_above_are_every_write_tool() -> None:
    assert set(IVANS_WRITES) == WRITE_TOOLS


@pytest.mark.parametrize("name", sorted(IVANS_WRITES))
def test_every_write_tool_needs_authentication_then_a_yes(guard, name: str) -> None:
    arguments = IVANS_WRITES[name]
    assert "authenticate" in guard.check(SessionState(), name, arguments)
    state = authenticated(guard)
    assert guard.check(state, name, arguments) == NEEDS_CONFIRMATION
    state.confirmed_write = canonical(name, arguments)
    assert guard.check(state, name, arguments) is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("yes", True),
        ("Yes, please go ahead.", True),
        ("yep", True),
        ("I confirm", True),
        ("no", False),
        ("yes? what would that cost", False),
        ("yes no", False),
        ("don't, yes I mean wait", False),
        ("ok", False),
        ("", False),
        ("sure thing", False),
        ("eyes", False),
    ],
)
def test_explicit_yes(text: str, expected: bool) -> None:
    assert is_explicit_yes(text) is expected


def test_the_confirmation_question_states_every_argument() -> None:
    text = describe_write("cancel_pending_order", {"order_id": "#W8770097", "reason": "no longer needed"})
    assert "cancel pending order" in text and '"#W8770097"' in text and '"no longer needed"' in text


# Issue 30, finding 1: consent is an unhedged yes to exactly the proposed action, and nothing else.
HEDGED = [
    "What happens if I say yes",
    "Yes, but cancel my other order instead",
    "yes if it is free",
    "yes, if it is free",
    "Yes but only the first item",
    "yes unless it costs money",
    "maybe yes",
    "I guess yes",
    "yes I think so",
    "probably yes",
    "yes, and change my address too",
    "Yes and refund me",
    "yes for the other order",
    "Yes, cancel #W2378156 instead",
    "yes?",
    "Yes. Will I get a refund?",
    "yes (if free)",
    "yes - wait",
    "yes... actually no",
    "not yet, yes later",
    "yes, as long as it is free",
    "Yes provided the refund goes to my card",
    "ok yes whatever",
    "yes " + "please " * 40,
]
PLAIN = [
    "yes",
    "Yes.",
    "YES!",
    "yes please",
    "Yes, please.",
    "Yes, please go ahead.",
    "yeah",
    "yep",
    "Yup!",
    "I confirm",
    "Confirmed.",
    "yes, I confirm",
    "Yes, go ahead.",
    "Yes, that\u2019s correct, thank you.",
    "yes proceed",
    "  yes  ",
    "Yes, do it.",
]


@pytest.mark.parametrize("text", HEDGED)
def test_a_hedged_or_extended_yes_is_not_consent(text: str) -> None:
    assert is_explicit_yes(text) is False


@pytest.mark.parametrize("text", PLAIN)
def test_a_plain_yes_is_consent(text: str) -> None:
    assert is_explicit_yes(text) is True


# Issue 30, finding 11: mistyped ids (possible with a remote backend) are refused, never a TypeError.
@pytest.mark.parametrize(
    "name, arguments",
    [
        ("modify_pending_order_payment", {"order_id": "#W8770097", "payment_method_id": {"id": "paypal_6151711"}}),
        ("modify_pending_order_payment", {"order_id": "#W8770097", "payment_method_id": ["paypal_6151711"]}),
        (
            "return_delivered_order_items",
            {"order_id": "#W6893533", "item_ids": 5206946487, "payment_method_id": "paypal_6151711"},
        ),
        (
            "return_delivered_order_items",
            {"order_id": "#W6893533", "item_ids": [5206946487], "payment_method_id": "paypal_6151711"},
        ),
        (
            "return_delivered_order_items",
            {"order_id": "#W6893533", "item_ids": "5206946487", "payment_method_id": "paypal_6151711"},
        ),
        ("get_order_details", {"order_id": {"id": "#W8770097"}}),
    ],
)
def test_mistyped_ids_are_refused_not_raised(guard, name: str, arguments: dict) -> None:
    assert guard.check(authenticated(guard), name, arguments).startswith("Refused")
