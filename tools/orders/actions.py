"""τ-bench's retail tools as functions of an ``OrderDB``.

Each function keeps τ-bench's semantics and return strings exactly (checks in
the same order, the same "Error: ..." messages, ``json.dumps`` of the record,
the same float arithmetic and rounding), so replaying τ-bench's gold actions
reproduces its results. Arguments are assumed validated (types) by the caller;
``tools.py`` does that.

Every write tool runs in one ``db.write()`` transaction (BEGIN IMMEDIATE): it
reads the rows it needs, decides everything in memory, then issues targeted
UPDATE/INSERTs and returns the record re-read from the database. An error
string returned before any write commits an empty transaction; an exception
rolls everything back.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from tools.math import MathToolError, arithmetic
from tools.orders.db import Json, OrderDB, address_columns, load_order, load_payment_methods, load_product, load_user

CANCEL_REASONS = ("no longer needed", "ordered by mistake")
CALCULATOR_CHARS = frozenset("0123456789+-*/(). ")

# ------------------------------------------------------------------ reads


def find_user_id_by_email(db: OrderDB, email: str) -> str:
    with db.read() as conn:
        row = conn.execute(
            "SELECT user_id FROM users WHERE email_key = ? ORDER BY seq LIMIT 1", (email.lower(),)
        ).fetchone()
    return row[0] if row else "Error: user not found"


def find_user_id_by_name_zip(db: OrderDB, first_name: str, last_name: str, zip: str) -> str:
    with db.read() as conn:
        row = conn.execute(
            "SELECT user_id FROM users WHERE last_name_key = ? AND first_name_key = ? AND zip = ? ORDER BY seq LIMIT 1",
            (last_name.lower(), first_name.lower(), zip),
        ).fetchone()
    return row[0] if row else "Error: user not found"


def get_user_details(db: OrderDB, user_id: str) -> str:
    user = db.user(user_id)
    return json.dumps(user) if user is not None else "Error: user not found"


def get_order_details(db: OrderDB, order_id: str) -> str:
    order = db.order(order_id)
    return json.dumps(order) if order is not None else "Error: order not found"


def get_product_details(db: OrderDB, product_id: str) -> str:
    product = db.product(product_id)
    return json.dumps(product) if product is not None else "Error: product not found"


def list_all_product_types(db: OrderDB) -> str:
    with db.read() as conn:
        rows = conn.execute("SELECT name, product_id FROM products ORDER BY seq").fetchall()
    # As τ-bench: a later product wins a duplicate name, then sort by name.
    return json.dumps(dict(sorted(dict(rows).items())))


# ----------------------------------------------------------------- writes


def cancel_pending_order(db: OrderDB, order_id: str, reason: str) -> str:
    with db.write() as conn:
        order = _order_in_status(conn, order_id, "pending", "cancelled")
        if isinstance(order, str):
            return order
        if reason not in CANCEL_REASONS:
            return "Error: invalid reason"

        methods = load_payment_methods(conn, order["user_id"])
        # Refund what each method actually paid, net of what was already refunded to it.
        # (τ-bench refunds every history entry, refunds included, so a payment change
        # followed by a cancel paid the old method back twice; its single-payment
        # orders, the only ones its tasks cancel, come out the same.)
        refunds, balances = [], {}
        for method_id, paid in _net_paid(order["payment_history"]).items():
            if paid <= 0:
                continue
            refunds.append({"transaction_type": "refund", "amount": paid, "payment_method_id": method_id})
            if "gift_card" in method_id:  # refunded to the gift card immediately
                if method_id not in methods:
                    return "Error: payment method not found"
                balances[method_id] = round(methods[method_id].get("balance", 0) + paid, 2)

        conn.execute("UPDATE orders SET status = 'cancelled', cancel_reason = ? WHERE order_id = ?", (reason, order_id))
        _append_payments(conn, order, refunds)
        for method_id, balance in balances.items():
            _set_balance(conn, order["user_id"], method_id, balance)
        return json.dumps(load_order(conn, order_id))


def modify_pending_order_address(
    db: OrderDB, order_id: str, address1: str, address2: str, city: str, state: str, country: str, zip: str
) -> str:
    with db.write() as conn:
        order = _order_in_status(conn, order_id, "pending", "modified")
        if isinstance(order, str):
            return order
        address = {
            "address1": address1,
            "address2": address2,
            "city": city,
            "state": state,
            "country": country,
            "zip": zip,
        }
        _set_address(conn, "orders", "order_id", order_id, address)
        return json.dumps(load_order(conn, order_id))


def modify_user_address(
    db: OrderDB, user_id: str, address1: str, address2: str, city: str, state: str, country: str, zip: str
) -> str:
    with db.write() as conn:
        if conn.execute("SELECT 1 FROM users WHERE user_id = ?", (user_id,)).fetchone() is None:
            return "Error: user not found"
        address = {
            "address1": address1,
            "address2": address2,
            "city": city,
            "state": state,
            "country": country,
            "zip": zip,
        }
        _set_address(conn, "users", "user_id", user_id, address)
        return json.dumps(load_user(conn, user_id))


def modify_pending_order_items(
    db: OrderDB, order_id: str, item_ids: list[str], new_item_ids: list[str], payment_method_id: str
) -> str:
    with db.write() as conn:
        order = _order_in_status(conn, order_id, "pending", "modified")
        if isinstance(order, str):
            return order
        checked = _check_item_swap(conn, order, item_ids, new_item_ids)
        if isinstance(checked, str):
            return checked
        diff_price, variants = checked  # not rounded: τ-bench records the raw float difference

        methods = load_payment_methods(conn, order["user_id"])
        if payment_method_id not in methods:
            return "Error: payment method not found"
        method = methods[payment_method_id]
        if method["source"] == "gift_card" and _available(conn, order["user_id"], method) < diff_price:
            return "Error: insufficient gift card balance to pay for the new item"

        _append_payments(
            conn,
            order,
            [
                {
                    "transaction_type": "payment" if diff_price > 0 else "refund",
                    "amount": abs(diff_price),
                    "payment_method_id": payment_method_id,
                }
            ],
        )
        if method["source"] == "gift_card":
            _set_balance(conn, order["user_id"], payment_method_id, round(method.get("balance", 0) - diff_price, 2))

        # Replace in τ-bench's way: each old id takes the *first* item that
        # currently has it, so duplicates are replaced one after another.
        items, changed = order["items"], set()
        for item_id, new_item_id in zip(item_ids, new_item_ids):
            pos = next(p for p, item in enumerate(items) if item["item_id"] == item_id)
            variant = variants[(items[pos]["product_id"], new_item_id)]
            items[pos] = {
                **items[pos],
                "item_id": new_item_id,
                "price": variant["price"],
                "options": variant["options"],
            }
            changed.add(pos)
        conn.executemany(
            "UPDATE order_items SET item_id = ?, price = ?, options = ? WHERE order_id = ? AND pos = ?",
            [
                (items[p]["item_id"], items[p]["price"], json.dumps(items[p]["options"]), order_id, p)
                for p in sorted(changed)
            ],
        )
        conn.execute("UPDATE orders SET status = 'pending (item modified)' WHERE order_id = ?", (order_id,))
        return json.dumps(load_order(conn, order_id))


def modify_pending_order_payment(db: OrderDB, order_id: str, payment_method_id: str) -> str:
    with db.write() as conn:
        order = _order_in_status(conn, order_id, "pending", "modified")
        if isinstance(order, str):
            return order
        methods = load_payment_methods(conn, order["user_id"])
        if payment_method_id not in methods:
            return "Error: payment method not found"
        history = order["payment_history"]
        if len(history) != 1 or history[0]["transaction_type"] != "payment":
            return "Error: there should be exactly one payment for a pending order"
        old_method_id = history[0]["payment_method_id"]
        if old_method_id == payment_method_id:
            return "Error: the new payment method should be different from the current one"
        amount = history[0]["amount"]
        method = methods[payment_method_id]
        if method["source"] == "gift_card" and _available(conn, order["user_id"], method) < amount:
            return "Error: insufficient gift card balance to pay for the order"
        refund_to_gift_card = "gift_card" in old_method_id
        if refund_to_gift_card and old_method_id not in methods:
            return "Error: payment method not found"

        _append_payments(
            conn,
            order,
            [
                {"transaction_type": "payment", "amount": amount, "payment_method_id": payment_method_id},
                {"transaction_type": "refund", "amount": amount, "payment_method_id": old_method_id},
            ],
        )
        if method["source"] == "gift_card":
            _set_balance(conn, order["user_id"], payment_method_id, round(method.get("balance", 0) - amount, 2))
        if refund_to_gift_card:
            old_balance = methods[old_method_id].get("balance", 0)
            _set_balance(conn, order["user_id"], old_method_id, round(old_balance + amount, 2))
        return json.dumps(load_order(conn, order_id))


def return_delivered_order_items(db: OrderDB, order_id: str, item_ids: list[str], payment_method_id: str) -> str:
    with db.write() as conn:
        order = _order_in_status(conn, order_id, "delivered", "returned")
        if isinstance(order, str):
            return order
        if payment_method_id not in load_payment_methods(conn, order["user_id"]):
            return "Error: payment method not found"
        original = order["payment_history"][0]["payment_method_id"] if order["payment_history"] else None
        if "gift_card" not in payment_method_id and payment_method_id != original:
            return "Error: payment method should be either the original payment method or a gift card"
        all_item_ids = [item["item_id"] for item in order["items"]]
        if any(item_ids.count(i) > all_item_ids.count(i) for i in item_ids):
            return "Error: some item not found"

        conn.execute(
            "UPDATE orders SET status = 'return requested', return_items = ?, return_payment_method_id = ?"
            " WHERE order_id = ?",
            (json.dumps(sorted(item_ids)), payment_method_id, order_id),
        )
        return json.dumps(load_order(conn, order_id))


def exchange_delivered_order_items(
    db: OrderDB, order_id: str, item_ids: list[str], new_item_ids: list[str], payment_method_id: str
) -> str:
    with db.write() as conn:
        order = _order_in_status(conn, order_id, "delivered", "exchanged")
        if isinstance(order, str):
            return order
        checked = _check_item_swap(conn, order, item_ids, new_item_ids)
        if isinstance(checked, str):
            return checked
        diff_price = round(checked[0], 2)

        methods = load_payment_methods(conn, order["user_id"])
        if payment_method_id not in methods:
            return "Error: payment method not found"
        method = methods[payment_method_id]
        if method["source"] == "gift_card" and _available(conn, order["user_id"], method) < diff_price:
            return "Error: insufficient gift card balance to pay for the price difference"

        conn.execute(
            "UPDATE orders SET status = 'exchange requested', exchange_items = ?, exchange_new_items = ?,"
            " exchange_payment_method_id = ?, exchange_price_difference = ? WHERE order_id = ?",
            (json.dumps(sorted(item_ids)), json.dumps(sorted(new_item_ids)), payment_method_id, diff_price, order_id),
        )
        return json.dumps(load_order(conn, order_id))


# ------------------------------------------------------------ stateless


def calculate(expression: str) -> str:
    if not all(char in CALCULATOR_CHARS for char in expression):
        return "Error: invalid characters in expression"
    try:
        return str(round(float(arithmetic(expression)), 2))
    except (MathToolError, ArithmeticError) as e:
        return f"Error: {e}"


def think(thought: str) -> str:
    return ""


def transfer_to_human_agents(summary: str) -> str:
    return "Transfer successful"


# ---------------------------------------------------------------- helpers


def _order_in_status(conn: sqlite3.Connection, order_id: str, status: str, action: str) -> Json | str:
    """The order, or τ-bench's error string when it does not exist or is not in `status`."""
    order = load_order(conn, order_id)
    if order is None:
        return "Error: order not found"
    if order["status"] != status:
        return f"Error: non-{status} order cannot be {action}"
    return order


def _check_item_swap(
    conn: sqlite3.Connection, order: Json, item_ids: list[str], new_item_ids: list[str]
) -> str | tuple[Any, dict[tuple[str, str], Json]]:
    """τ-bench's shared checks for swapping items of one product for other
    variants: an "Error: ..." string, or (price difference, the new variants
    by (product_id, item_id))."""
    items = order["items"]
    all_item_ids = [item["item_id"] for item in items]
    for item_id in item_ids:
        if item_ids.count(item_id) > all_item_ids.count(item_id):
            return f"Error: {item_id} not found"
    if len(item_ids) != len(new_item_ids):
        return "Error: the number of items to be exchanged should match"

    products: dict[str, Json | None] = {}
    variants: dict[tuple[str, str], Json] = {}
    diff_price: Any = 0  # an int until a price is added, as in τ-bench
    for item_id, new_item_id in zip(item_ids, new_item_ids):
        item = next(item for item in items if item["item_id"] == item_id)
        product_id = item["product_id"]
        if product_id not in products:
            products[product_id] = load_product(conn, product_id)
        variant = (products[product_id] or {}).get("variants", {}).get(new_item_id)
        if not (variant and variant["available"]):
            return f"Error: new item {new_item_id} not found or available"
        variants[(product_id, new_item_id)] = variant
        diff_price += variant["price"] - item["price"]
    return diff_price, variants


def _net_paid(history: list[Json]) -> dict[str, Any]:
    """Payment method -> amount paid less amount refunded, rounded to cents, in order of first use.
    A single payment comes back as its own amount, unchanged."""
    net: dict[str, Any] = {}
    for entry in history:
        amount = entry["amount"] if entry["transaction_type"] == "payment" else -entry["amount"]
        net[entry["payment_method_id"]] = net.get(entry["payment_method_id"], 0) + amount
    return {method_id: round(amount, 2) for method_id, amount in net.items()}


def _available(conn: sqlite3.Connection, user_id: str, method: Json) -> Any:
    """A gift card's balance less the price differences that requested exchanges will charge to it.

    An exchange is charged when the exchange completes (outside these tools), so, as in
    τ-bench, requesting one leaves the balance as it is; but the amount is held, so that
    several requests (or a later order change) cannot each spend the same balance."""
    (held,) = conn.execute(
        "SELECT COALESCE(SUM(exchange_price_difference), 0) FROM orders WHERE status = 'exchange requested'"
        " AND user_id = ? AND exchange_payment_method_id = ? AND exchange_price_difference > 0",
        (user_id, method["id"]),
    ).fetchone()
    balance = method.get("balance", 0)
    return balance - held if held else balance


def _append_payments(conn: sqlite3.Connection, order: Json, entries: list[Json]) -> None:
    start = len(order["payment_history"])
    conn.executemany(
        "INSERT INTO payment_history (order_id, pos, transaction_type, amount, payment_method_id) VALUES (?, ?, ?, ?, ?)",
        [
            (order["order_id"], start + i, e["transaction_type"], e["amount"], e["payment_method_id"])
            for i, e in enumerate(entries)
        ],
    )
    order["payment_history"].extend(entries)


def _set_balance(conn: sqlite3.Connection, user_id: str, method_id: str, balance: int | float) -> None:
    conn.execute(
        "UPDATE payment_methods SET balance = ? WHERE user_id = ? AND payment_method_id = ?",
        (balance, user_id, method_id),
    )


def _set_address(conn: sqlite3.Connection, table: str, key_column: str, key: str, address: dict[str, str]) -> None:
    assert table in ("users", "orders") and key_column in ("user_id", "order_id")
    conn.execute(
        f"UPDATE {table} SET address1 = ?, address2 = ?, city = ?, state = ?, country = ?, zip = ?,"
        f" address_keys = ? WHERE {key_column} = ?",
        (*address_columns(address), key),
    )
