"""OrderDB: exact round trip of τ-bench's JSON, schema, atomic build, opening."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from tools.orders import OrderDB
from tools.orders.db import DATA_DIR, DATA_FILES


def _vendored() -> dict:
    return {name.removesuffix(".json"): json.loads((DATA_DIR / name).read_text()) for name in DATA_FILES}


def test_export_round_trips_vendored_data_exactly(initial_state: dict):
    expected = _vendored()
    assert initial_state == expected
    # Same floats, ints (gift card balances are ints in the data), key and list orders.
    for kind in expected:
        assert json.dumps(initial_state[kind]) == json.dumps(expected[kind]), kind


def test_records_match_export(db: OrderDB, initial_state: dict):
    assert db.user("noah_brown_6181") == initial_state["users"]["noah_brown_6181"]
    assert db.order("#W2611340") == initial_state["orders"]["#W2611340"]
    assert db.product("9523456873") == initial_state["products"]["9523456873"]
    assert db.user("nobody") is None and db.order("#W0") is None and db.product("0") is None


def test_vendored_data_has_license_and_source_note():
    assert "MIT License" in (DATA_DIR / "LICENSE").read_text()
    note = (DATA_DIR / "SOURCE.md").read_text()
    assert "sierra-research/tau-bench" in note and "tau_bench/envs/retail/data/" in note


def test_schema_is_wal_with_tables_and_indexes(db: OrderDB):
    with db.read() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
        plan = " ".join(
            str(r) for r in conn.execute("EXPLAIN QUERY PLAN SELECT user_id FROM users WHERE email_key = 'x'")
        )
    assert tables == {
        "users",
        "payment_methods",
        "products",
        "variants",
        "orders",
        "order_items",
        "fulfillments",
        "payment_history",
    }
    assert {"users_email_key", "users_name_zip", "orders_status", "order_items_item_id", "variants_item_id"} <= indexes
    assert counts["users"] == 500 and counts["orders"] == 1000 and counts["products"] == 50
    assert counts["order_items"] == 2978 and counts["payment_methods"] == 695 and counts["variants"] == 591
    assert "users_email_key" in plan


def test_create_refuses_to_overwrite(template_db: Path, tmp_path: Path):
    with pytest.raises(FileExistsError):
        OrderDB.create(template_db)
    path = tmp_path / "o.db"
    OrderDB.create(path).close()
    OrderDB.create(path, overwrite=True).close()
    assert OrderDB(path).export()["users"].keys() == _vendored()["users"].keys()


def test_create_from_dir_and_bad_data_leaves_nothing(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    data = _vendored()
    data["orders"]["#W2611340"]["payment_history"][0]["amount"] = "536.65"  # a string, not a number
    for kind, doc in data.items():
        (src / f"{kind}.json").write_text(json.dumps(doc))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match=r"orders\['#W2611340'\]\.payment_history\[0\]: amount must be a number"):
        OrderDB.create(out / "o.db", from_dir=src)
    assert os.listdir(out) == []  # no database, no temp file

    (src / "products.json").write_text("{not json")
    with pytest.raises(ValueError, match="invalid JSON"):
        OrderDB.create(out / "o.db", from_dir=src)
    (src / "products.json").unlink()
    with pytest.raises(FileNotFoundError, match="products.json"):
        OrderDB.create(out / "o.db", from_dir=src)
    assert os.listdir(out) == []


def test_create_from_dir_small_dataset(tmp_path: Path):
    src = write_small_dataset(tmp_path / "src", n_orders=3)
    with OrderDB.create(tmp_path / "o.db", from_dir=src) as db:
        exported = db.export()
    for kind in ("users", "orders", "products"):
        assert json.dumps(exported[kind]) == (src / f"{kind}.json").read_text()


def test_open_rejects_missing_and_foreign_files(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        OrderDB(tmp_path / "missing.db")
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(ValueError, match="not an order database"):
        OrderDB(other)


def write_small_dataset(directory: Path, n_orders: int, amount: float = 1.25, balance: int = 1000) -> Path:
    """One user with a gift card (int balance) and a credit card, and
    ``n_orders`` pending orders paid by credit card, as τ-bench JSON files."""
    directory.mkdir(parents=True, exist_ok=True)
    address = {
        "address1": "1 Main St",
        "address2": "",
        "city": "Springfield",
        "country": "USA",
        "state": "IL",
        "zip": "62701",
    }
    products = {
        "100": {
            "name": "Mug",
            "product_id": "100",
            "variants": {
                "1001": {"item_id": "1001", "options": {"color": "red"}, "available": True, "price": amount},
                "1002": {"item_id": "1002", "options": {"color": "blue"}, "available": True, "price": amount + 0.5},
            },
        }
    }
    order_ids = [f"#W{i:07d}" for i in range(n_orders)]
    users = {
        "ann_lee_1": {
            "name": {"first_name": "Ann", "last_name": "Lee"},
            "address": address,
            "email": "ann.lee@example.com",
            "payment_methods": {
                "gift_card_1": {"source": "gift_card", "balance": balance, "id": "gift_card_1"},
                "credit_card_1": {"source": "credit_card", "brand": "visa", "last_four": "1234", "id": "credit_card_1"},
            },
            "orders": order_ids,
        }
    }
    orders = {
        oid: {
            "order_id": oid,
            "user_id": "ann_lee_1",
            "address": address,
            "items": [
                {"name": "Mug", "product_id": "100", "item_id": "1001", "price": amount, "options": {"color": "red"}}
            ],
            "fulfillments": [],
            "status": "pending",
            "payment_history": [
                {"transaction_type": "payment", "amount": amount, "payment_method_id": "credit_card_1"}
            ],
        }
        for oid in order_ids
    }
    for kind, doc in (("users", users), ("orders", orders), ("products", products)):
        (directory / f"{kind}.json").write_text(json.dumps(doc))
    return directory
