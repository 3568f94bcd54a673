"""The 16 tools: names, schemas, τ-bench semantics of the error branches, and
bad input (unknown ids, malformed JSON, wrong types) as "Error: ..." strings."""

from __future__ import annotations

import json

import pytest
from langchain_core.utils.function_calling import convert_to_openai_tool

from tools.orders import OrderDB, call_tool, order_tools
from tools.tool import Tool

# τ-bench's retail tools and their argument names (tau_bench/envs/retail/tools).
TAU_BENCH_TOOLS = {
    "find_user_id_by_email": ["email"],
    "find_user_id_by_name_zip": ["first_name", "last_name", "zip"],
    "get_user_details": ["user_id"],
    "get_order_details": ["order_id"],
    "get_product_details": ["product_id"],
    "list_all_product_types": [],
    "cancel_pending_order": ["order_id", "reason"],
    "modify_pending_order_address": ["order_id", "address1", "address2", "city", "state", "country", "zip"],
    "modify_pending_order_items": ["order_id", "item_ids", "new_item_ids", "payment_method_id"],
    "modify_pending_order_payment": ["order_id", "payment_method_id"],
    "modify_user_address": ["user_id", "address1", "address2", "city", "state", "country", "zip"],
    "return_delivered_order_items": ["order_id", "item_ids", "payment_method_id"],
    "exchange_delivered_order_items": ["order_id", "item_ids", "new_item_ids", "payment_method_id"],
    "calculate": ["expression"],
    "think": ["thought"],
    "transfer_to_human_agents": ["summary"],
}


@pytest.fixture
def tools(db: OrderDB):
    return {t.name: t for t in order_tools(db)}


def call(tools, name, **kwargs) -> str:
    return call_tool(tools, name, json.dumps(kwargs))


def order_where(state: dict, status: str, payment_source: str | None = None) -> dict:
    """The first order with ``status`` (and a single payment from ``payment_source``)."""
    for order in state["orders"].values():
        history = order["payment_history"]
        if order["status"] == status and (
            payment_source is None or (len(history) == 1 and history[0]["payment_method_id"].startswith(payment_source))
        ):
            return order
    raise LookupError(status)


def other_variant(state: dict, item: dict, available: bool = True) -> str:
    variants = state["products"][item["product_id"]]["variants"]
    return next(v for v, x in variants.items() if v != item["item_id"] and x["available"] == available)


# ---------------------------------------------------------------- surface


def test_names_arguments_and_descriptions_match_tau_bench(tools):
    assert list(tools) == list(TAU_BENCH_TOOLS)
    for name, args in TAU_BENCH_TOOLS.items():
        # What the model is shown, by us and through LangChain alike.
        assert isinstance(tools[name], Tool)
        function = tools[name].to_openai()["function"]
        via_langchain = convert_to_openai_tool(tools[name].to_langchain())["function"]
        assert {k: via_langchain[k] for k in ("name", "description")} == {
            k: function[k] for k in ("name", "description")
        }
        for key in ("properties", "required"):
            assert via_langchain["parameters"].get(key) == function["parameters"].get(key), name
        assert function["name"] == name and function["description"] == tools[name].description != ""
        params = function["parameters"]
        assert list(params.get("properties", {})) == args, name
        assert sorted(params.get("required", [])) == sorted(args), name
        assert all(p.get("description") for p in params.get("properties", {}).values()), name
    assert tools["get_order_details"].description == "Get the status and details of an order."
    cancel = tools["cancel_pending_order"].to_openai()["function"]["parameters"]["properties"]
    assert cancel["reason"]["enum"] == ["no longer needed", "ordered by mistake"]
    item_ids = tools["return_delivered_order_items"].to_openai()["function"]["parameters"]["properties"]["item_ids"]
    assert item_ids["type"] == "array" and item_ids["items"] == {"type": "string"}


def test_tool_call_message_round_trip(tools):
    message = (
        tools["think"]
        .to_langchain()
        .invoke({"name": "think", "args": {"thought": "hm"}, "id": "call_1", "type": "tool_call"})
    )
    assert message.content == "" and message.tool_call_id == "call_1"


# ----------------------------------------------------------------- reads


def test_lookups(tools, initial_state):
    assert call(tools, "find_user_id_by_email", email="Noah.Brown7922@EXAMPLE.com") == "noah_brown_6181"
    assert (
        call(tools, "find_user_id_by_name_zip", first_name="noah", last_name="BROWN", zip="80279") == "noah_brown_6181"
    )
    assert (
        call(tools, "find_user_id_by_name_zip", first_name="Noah", last_name="Brown", zip="00000")
        == "Error: user not found"
    )
    assert call(tools, "find_user_id_by_email", email="nobody@example.com") == "Error: user not found"
    assert (
        json.loads(call(tools, "get_user_details", user_id="noah_brown_6181"))
        == initial_state["users"]["noah_brown_6181"]
    )
    types = json.loads(call(tools, "list_all_product_types"))
    assert len(types) == 50 and list(types) == sorted(types)
    assert types["T-Shirt"] == "9523456873"


@pytest.mark.parametrize(
    "name, kwargs, expected",
    [
        ("get_user_details", {"user_id": "nobody"}, "Error: user not found"),
        ("get_order_details", {"order_id": "W2611340"}, "Error: order not found"),
        ("get_product_details", {"product_id": "8426249116"}, "Error: product not found"),
        ("cancel_pending_order", {"order_id": "#W0", "reason": "no longer needed"}, "Error: order not found"),
        ("modify_pending_order_payment", {"order_id": "#W0", "payment_method_id": "x"}, "Error: order not found"),
        (
            "return_delivered_order_items",
            {"order_id": "#W0", "item_ids": [], "payment_method_id": "x"},
            "Error: order not found",
        ),
        (
            "modify_user_address",
            {"user_id": "nobody", "address1": "", "address2": "", "city": "", "state": "", "country": "", "zip": ""},
            "Error: user not found",
        ),
    ],
)
def test_unknown_ids(tools, name, kwargs, expected):
    assert call(tools, name, **kwargs) == expected


# ------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "name, arguments, fragment",
    [
        ("get_order_details", '{"order_id": "#W2611340"', "not valid JSON"),
        ("get_order_details", '["#W2611340"]', "must be a JSON object, got list"),
        ("get_order_details", "{}", "order_id: Field required"),
        ("get_order_details", '{"order_id": 2611340}', "order_id: Input should be a valid string"),
        ("get_order_details", '{"order_id": "#W2611340", "verbose": true}', "verbose: Extra inputs are not permitted"),
        (
            "return_delivered_order_items",
            '{"order_id": "#W1", "item_ids": "123", "payment_method_id": "x"}',
            "item_ids: Input should be a valid list",
        ),
        (
            "modify_pending_order_items",
            '{"order_id": "#W1", "item_ids": [1], "new_item_ids": [], "payment_method_id": "x"}',
            "item_ids.0: Input should be a valid string",
        ),
        (
            "cancel_pending_order",
            '{"order_id": null, "reason": "no longer needed"}',
            "order_id: Input should be a valid string",
        ),
        ("no_such_tool", "{}", "unknown tool 'no_such_tool'"),
    ],
)
def test_malformed_arguments_are_error_strings(tools, initial_state, db, name, arguments, fragment):
    result = call_tool(tools, name, arguments)
    assert result.startswith("Error: ") and fragment in result, result
    assert db.export() == initial_state


def test_direct_invoke_with_wrong_types_does_not_raise(tools):
    result = tools["modify_pending_order_payment"]({"order_id": ["#W1"], "payment_method_id": 5})
    assert (
        tools["modify_pending_order_payment"].to_langchain().invoke({"order_id": ["#W1"], "payment_method_id": 5})
        == result
    )
    assert result.startswith("Error: invalid arguments for modify_pending_order_payment: ")
    assert "order_id" in result and "payment_method_id" in result
    assert call_tool(tools, "list_all_product_types", None).startswith("{")
    assert call_tool(tools, "list_all_product_types", "").startswith("{")


# ------------------------------------------------------ τ-bench semantics


def test_cancel_refunds_gift_card_immediately(tools, db, initial_state):
    order = order_where(initial_state, "pending", "gift_card")
    method_id, amount = order["payment_history"][0]["payment_method_id"], order["payment_history"][0]["amount"]
    before = initial_state["users"][order["user_id"]]["payment_methods"][method_id]["balance"]

    assert (
        call(tools, "cancel_pending_order", order_id=order["order_id"], reason="bought elsewhere")
        == "Error: invalid reason"
    )
    result = json.loads(call(tools, "cancel_pending_order", order_id=order["order_id"], reason="ordered by mistake"))
    assert result["status"] == "cancelled" and result["cancel_reason"] == "ordered by mistake"
    assert result["payment_history"][-1] == {
        "transaction_type": "refund",
        "amount": amount,
        "payment_method_id": method_id,
    }
    assert db.user(order["user_id"])["payment_methods"][method_id]["balance"] == round(before + amount, 2)
    again = call(tools, "cancel_pending_order", order_id=order["order_id"], reason="ordered by mistake")
    assert again == "Error: non-pending order cannot be cancelled"


def test_pending_and_delivered_status_checks(tools, initial_state):
    delivered = order_where(initial_state, "delivered")
    pending = order_where(initial_state, "pending")
    assert call(tools, "modify_pending_order_payment", order_id=delivered["order_id"], payment_method_id="x") == (
        "Error: non-pending order cannot be modified"
    )
    item = pending["items"][0]["item_id"]
    assert (
        call(
            tools,
            "exchange_delivered_order_items",
            order_id=pending["order_id"],
            item_ids=[item],
            new_item_ids=[item],
            payment_method_id="x",
        )
        == "Error: non-delivered order cannot be exchanged"
    )
    assert call(
        tools, "return_delivered_order_items", order_id=pending["order_id"], item_ids=[item], payment_method_id="x"
    ) == ("Error: non-delivered order cannot be returned")


def test_payment_method_checks(tools, initial_state):
    order = order_where(initial_state, "pending", "credit_card")
    current = order["payment_history"][0]["payment_method_id"]
    assert call(tools, "modify_pending_order_payment", order_id=order["order_id"], payment_method_id="paypal_0") == (
        "Error: payment method not found"
    )
    assert call(tools, "modify_pending_order_payment", order_id=order["order_id"], payment_method_id=current) == (
        "Error: the new payment method should be different from the current one"
    )
    delivered = order_where(initial_state, "delivered", "paypal")
    user_methods = initial_state["users"][delivered["user_id"]]["payment_methods"]
    others = [
        m
        for m in user_methods
        if not m.startswith("gift_card") and m != delivered["payment_history"][0]["payment_method_id"]
    ]
    if others:
        assert (
            call(
                tools,
                "return_delivered_order_items",
                order_id=delivered["order_id"],
                item_ids=[],
                payment_method_id=others[0],
            )
            == "Error: payment method should be either the original payment method or a gift card"
        )


def test_item_checks(tools, initial_state):
    order = order_where(initial_state, "delivered")
    item = order["items"][0]
    method = order["payment_history"][0]["payment_method_id"]
    args = dict(order_id=order["order_id"], payment_method_id=method)
    assert (
        call(tools, "exchange_delivered_order_items", item_ids=["0"], new_item_ids=["1"], **args)
        == "Error: 0 not found"
    )
    if [i["item_id"] for i in order["items"]].count(item["item_id"]) == 1:  # asking for it twice is one too many
        twice = call(
            tools, "exchange_delivered_order_items", item_ids=[item["item_id"]] * 2, new_item_ids=["1", "2"], **args
        )
        assert twice == f"Error: {item['item_id']} not found"
    assert call(tools, "exchange_delivered_order_items", item_ids=[item["item_id"]], new_item_ids=[], **args) == (
        "Error: the number of items to be exchanged should match"
    )
    # An item id of another product is "not found or available" (same-product exchanges only).
    foreign = next(
        v for p in initial_state["products"].values() if p["product_id"] != item["product_id"] for v in p["variants"]
    )
    assert call(
        tools, "exchange_delivered_order_items", item_ids=[item["item_id"]], new_item_ids=[foreign], **args
    ) == (f"Error: new item {foreign} not found or available")
    assert call(tools, "return_delivered_order_items", item_ids=["0"], **args) == "Error: some item not found"


def test_modify_items_replaces_duplicates_in_turn(tmp_path):
    from tests.tools.orders.test_db import write_small_dataset

    src = write_small_dataset(tmp_path / "src", n_orders=1)
    orders = json.loads((src / "orders.json").read_text())
    order = orders["#W0000000"]
    order["items"].append(dict(order["items"][0]))  # two of item 1001
    order["payment_history"][0]["amount"] = 2.5
    (src / "orders.json").write_text(json.dumps(orders))
    with OrderDB.create(tmp_path / "o.db", from_dir=src) as db:
        tools = {t.name: t for t in order_tools(db)}
        result = json.loads(
            call(
                tools,
                "modify_pending_order_items",
                order_id="#W0000000",
                item_ids=["1001", "1001"],
                new_item_ids=["1002", "1002"],
                payment_method_id="gift_card_1",
            )
        )
        assert [i["item_id"] for i in result["items"]] == ["1002", "1002"]
        assert [i["options"] for i in result["items"]] == [{"color": "blue"}] * 2
        assert result["status"] == "pending (item modified)"
        assert result["payment_history"][-1] == {
            "transaction_type": "payment",
            "amount": 1.0,
            "payment_method_id": "gift_card_1",
        }
        assert db.user("ann_lee_1")["payment_methods"]["gift_card_1"]["balance"] == 999.0


def test_insufficient_gift_card_balance(tmp_path):
    from tests.tools.orders.test_db import write_small_dataset

    src = write_small_dataset(tmp_path / "src", n_orders=1, amount=10.0, balance=5)
    with OrderDB.create(tmp_path / "o.db", from_dir=src) as db:
        tools = {t.name: t for t in order_tools(db)}
        before = db.export()
        assert call(tools, "modify_pending_order_payment", order_id="#W0000000", payment_method_id="gift_card_1") == (
            "Error: insufficient gift card balance to pay for the order"
        )
        assert db.export() == before
        # The balance stays an int until τ-bench's arithmetic makes it a float.
        assert json.dumps(db.user("ann_lee_1")["payment_methods"]["gift_card_1"]) == (
            '{"source": "gift_card", "balance": 5, "id": "gift_card_1"}'
        )


@pytest.mark.parametrize(
    "expression, expected",
    [
        ("2 + 2", "4.0"),
        ("(1071.47 - 512.33) * 0.1", "55.91"),
        ("10 / 3", "3.33"),
        ("1 / 0", "Error: division by zero"),
        ("2 ^ 3", "Error: invalid characters in expression"),
        ("__import__('os')", "Error: invalid characters in expression"),
    ],
)
def test_calculate(tools, expression, expected):
    assert call(tools, "calculate", expression=expression) == expected


def test_calculate_syntax_error_is_error_string(tools):
    assert call(tools, "calculate", expression="(1 + 2").startswith("Error: ")


def test_think_and_transfer(tools):
    assert call(tools, "think", thought="which order?") == ""
    assert call(tools, "transfer_to_human_agents", summary="wants a human") == "Transfer successful"


# ------------------------------------------------- issue 20: hardening


def _string_arguments(name: str) -> dict:
    """Valid-typed arguments for tool ``name``: strings, and lists of strings for item ids."""
    return {arg: ["1001"] if arg.endswith("item_ids") else "x" for arg in TAU_BENCH_TOOLS[name]}


@pytest.mark.parametrize("name", [n for n, args in TAU_BENCH_TOOLS.items() if args])
def test_lone_surrogate_in_any_string_argument_is_an_error_string(tools, name):
    for arg in TAU_BENCH_TOOLS[name]:
        arguments = _string_arguments(name)
        arguments[arg] = ["\ud800"] if arg.endswith("item_ids") else "a\ud800b"
        result = call_tool(tools, name, json.dumps(arguments))  # JSON text "\ud800", as a model would send it
        assert (
            result
            == f"Error: invalid arguments for {name}: {arg}: Value error, not valid Unicode text (lone surrogate)"
        )
        assert call_tool(tools, name, arguments) == result


@pytest.mark.parametrize(
    "arguments, fragment",
    [
        ('{"order_id": ' + "1" * 5000 + "}", "not valid JSON: Exceeds the limit"),
        ("[" * 100_000 + "]" * 100_000, "not valid JSON: nested too deeply"),
        ('{"order_id": ' + "[" * 100_000 + "]" * 100_000 + "}", "not valid JSON: nested too deeply"),
        ({"order_id": 10**5000}, "Error: "),
        ({"order_id": "#W1", "extra": 10**5000}, "Error: "),
        ({"order_id": "\udfff"}, "lone surrogate"),
    ],
)
def test_call_tool_returns_text_for_any_input(tools, arguments, fragment):
    result = call_tool(tools, "get_order_details", arguments)
    assert isinstance(result, str) and result.startswith("Error: ") and fragment in result


def test_tool_call_shaped_arguments_are_just_arguments(tools):
    tool_call = {"type": "tool_call", "name": "get_order_details", "id": "call_1", "args": {"order_id": "#W2611340"}}
    result = call_tool(tools, "get_order_details", tool_call)
    assert isinstance(result, str) and result.startswith("Error: invalid arguments for get_order_details: ")
    assert call_tool(tools, "get_order_details", json.dumps(tool_call)) == result


def _small_db(tmp_path, *, delivered: int = 0, gift_card_paid: bool = False, balance: float = 1000) -> OrderDB:
    """The small dataset: three orders, the first ``delivered`` of them delivered."""
    from tests.tools.orders.test_db import write_small_dataset

    src = write_small_dataset(tmp_path / "src", n_orders=3, amount=1.25, balance=balance)
    orders = json.loads((src / "orders.json").read_text())
    for i, order in enumerate(orders.values()):
        if i < delivered:
            order["status"] = "delivered"
        if gift_card_paid:
            order["payment_history"][0]["payment_method_id"] = "gift_card_1"
    (src / "orders.json").write_text(json.dumps(orders))
    return OrderDB.create(tmp_path / "o.db", from_dir=src)


def test_cancel_after_payment_change_refunds_what_was_paid_net(tmp_path):
    # Paid 1.25 by gift card, moved to the credit card (the gift card gets its 1.25 back), then
    # cancelled: only the credit card is owed anything. τ-bench also refunded the gift card's
    # payment and its refund, crediting the card twice more.
    with _small_db(tmp_path, gift_card_paid=True) as db:
        tools = {t.name: t for t in order_tools(db)}
        call(tools, "modify_pending_order_payment", order_id="#W0000000", payment_method_id="credit_card_1")
        assert db.user("ann_lee_1")["payment_methods"]["gift_card_1"]["balance"] == 1001.25
        result = json.loads(call(tools, "cancel_pending_order", order_id="#W0000000", reason="no longer needed"))
        assert result["payment_history"][3:] == [
            {"transaction_type": "refund", "amount": 1.25, "payment_method_id": "credit_card_1"}
        ]
        assert db.user("ann_lee_1")["payment_methods"]["gift_card_1"]["balance"] == 1001.25
    # Credit card moved to the gift card, then cancelled: one refund, to the gift card.
    with _small_db(tmp_path / "credit") as db:
        tools = {t.name: t for t in order_tools(db)}
        call(tools, "modify_pending_order_payment", order_id="#W0000000", payment_method_id="gift_card_1")
        assert db.user("ann_lee_1")["payment_methods"]["gift_card_1"]["balance"] == 998.75
        result = json.loads(call(tools, "cancel_pending_order", order_id="#W0000000", reason="no longer needed"))
        assert result["payment_history"][3:] == [
            {"transaction_type": "refund", "amount": 1.25, "payment_method_id": "gift_card_1"}
        ]
        assert db.user("ann_lee_1")["payment_methods"]["gift_card_1"]["balance"] == 1000


def test_exchanges_cannot_spend_one_gift_card_balance_twice(tmp_path):
    # Each exchange 1001 -> 1002 costs 0.5; the card holds 0.75, enough for one of them.
    with _small_db(tmp_path, delivered=2, balance=0.75) as db:
        tools = {t.name: t for t in order_tools(db)}
        exchange = {"item_ids": ["1001"], "new_item_ids": ["1002"], "payment_method_id": "gift_card_1"}
        first = json.loads(call(tools, "exchange_delivered_order_items", order_id="#W0000000", **exchange))
        assert first["status"] == "exchange requested" and first["exchange_price_difference"] == 0.5
        assert call(tools, "exchange_delivered_order_items", order_id="#W0000001", **exchange) == (
            "Error: insufficient gift card balance to pay for the price difference"
        )
        # The held 0.5 is not available to a pending order's change either.
        assert call(tools, "modify_pending_order_items", order_id="#W0000002", **exchange) == (
            "Error: insufficient gift card balance to pay for the new item"
        )
        # The balance itself is charged when the exchange completes, as in τ-bench.
        assert db.user("ann_lee_1")["payment_methods"]["gift_card_1"]["balance"] == 0.75
        assert (
            json.loads(
                call(
                    tools,
                    "exchange_delivered_order_items",
                    order_id="#W0000001",
                    **{**exchange, "payment_method_id": "credit_card_1"},
                )
            )["status"]
            == "exchange requested"
        )
