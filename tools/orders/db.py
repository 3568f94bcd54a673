"""The retail order database: SQLite (WAL) built from τ-bench's retail JSON.

``OrderDB`` owns one connection per process (reopened after a fork) and hands it out
inside transactions: ``read()`` for a consistent snapshot, ``write()`` for
``BEGIN IMMEDIATE`` (the write lock is taken up front, so two processes doing
read-modify-write on the same rows serialise instead of losing an update).
Records are read back in τ-bench's exact JSON shape (``user``, ``order``,
``product``, ``export``); the write tools in ``actions.py`` update rows with
targeted SQL inside one ``write()``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import threading
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tools.orders.schema import APPLICATION_ID, SCHEMA, SCHEMA_VERSION

DATA_DIR = Path(__file__).resolve().parent / "data"
DATA_FILES = ("users.json", "orders.json", "products.json")

# Field order the write tools use when they set an address.
ADDRESS_FIELDS = ("address1", "address2", "city", "state", "country", "zip")
# Payment-method keys in τ-bench's order (a method has a subset of them).
PAYMENT_METHOD_FIELDS = ("source", "brand", "last_four", "balance", "id")
ORDER_FIELDS = ("order_id", "user_id", "address", "items", "fulfillments", "status", "payment_history")
# Keys the write tools add to an order, in the order they add them. Each tool
# adds one group and leaves the order in a status no other write tool accepts.
ORDER_EXTRA_FIELDS = (
    "cancel_reason",
    "return_items",
    "return_payment_method_id",
    "exchange_items",
    "exchange_new_items",
    "exchange_payment_method_id",
    "exchange_price_difference",
)
_ORDER_EXTRA_JSON = frozenset({"return_items", "exchange_items", "exchange_new_items"})

Json = dict[str, Any]


class OrderDB:
    """An order database file in the schema of ``schema.py``.

    ``OrderDB(path)`` opens an existing database (it never creates one) and
    raises ``FileNotFoundError``/``ValueError`` if it is missing or not ours;
    ``OrderDB.create(path)`` builds one. The connection is opened and checked
    here, and reopened on first use after a fork, so an ``OrderDB`` may be
    handed to worker processes; within a process threads share it under a lock.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_s: float = 30.0, durable: bool = True) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"order database not found: {self.path}")
        self.busy_timeout_s = busy_timeout_s
        # durable=False (synchronous=NORMAL): no fsync per commit; still atomic
        # and never corrupt, but the last commits may be lost on power failure.
        self.durable = durable
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._connection()  # fail now, not on the first tool call, if it is not ours

    # ------------------------------------------------------------------ build

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        from_dir: str | os.PathLike[str] | None = None,
        *,
        overwrite: bool = False,
    ) -> OrderDB:
        """Build a fresh database at ``path`` from ``users.json``,
        ``orders.json`` and ``products.json`` in ``from_dir`` (default: the
        vendored τ-bench data) and open it.

        The database is built in a temporary file next to ``path`` and renamed
        into place, so ``path`` is either absent/untouched or complete. Raises
        ``FileExistsError`` if ``path`` exists and not ``overwrite`` (never
        overwrite a database other processes have open), and ``ValueError``
        naming the offending record if the data is malformed.
        """
        path = Path(path)
        source = Path(from_dir) if from_dir is not None else DATA_DIR
        if path.exists() and not overwrite:
            raise FileExistsError(f"order database already exists: {path}")
        data = {}
        for name in DATA_FILES:
            file = source / name
            try:
                data[name.removesuffix(".json")] = json.loads(file.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise FileNotFoundError(f"missing data file: {file}") from None
            except json.JSONDecodeError as e:
                raise ValueError(f"{file}: invalid JSON: {e}") from None
        rows = _rows_from_json(data["users"], data["orders"], data["products"])

        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute("PRAGMA foreign_keys = ON")
                conn.execute("BEGIN")  # executescript() would commit: run statements one by one
                for statement in _split_sql(SCHEMA):
                    conn.execute(statement)
                for table, table_rows in rows.items():
                    if table_rows:
                        marks = ", ".join("?" * len(table_rows[0]))
                        conn.executemany(f"INSERT INTO {table} VALUES ({marks})", table_rows)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
                # WAL is recorded in the file header, so it survives the rename;
                # closing the only connection checkpoints and removes the -wal file.
                conn.execute("PRAGMA journal_mode = WAL")
            finally:
                conn.close()
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            # A stale -wal next to the new file would be replayed into it.
            for suffix in ("-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            for suffix in ("-wal", "-shm", "-journal"):
                Path(f"{tmp}{suffix}").unlink(missing_ok=True)
            raise
        return cls(path)

    # ------------------------------------------------------------ connection

    def _connection(self) -> sqlite3.Connection:
        pid = os.getpid()
        if self._conn is None or self._pid != pid:
            # After a fork the parent's connection must not be used (nor closed) here.
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout_s,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # guarded by self._lock
            )
            try:
                app_id = conn.execute("PRAGMA application_id").fetchone()[0]
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if app_id != APPLICATION_ID or version != SCHEMA_VERSION:
                    raise ValueError(
                        f"{self.path} is not an order database of schema version {SCHEMA_VERSION}"
                        f" (application_id={app_id:#x}, user_version={version})"
                    )
                conn.execute("PRAGMA foreign_keys = ON")
                conn.execute(f"PRAGMA synchronous = {'FULL' if self.durable else 'NORMAL'}")
                if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
            except BaseException:
                conn.close()
                raise
            self._conn, self._pid = conn, pid
        return self._conn

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A connection inside a read transaction: one consistent snapshot."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("ROLLBACK")  # nothing to keep; ends the snapshot

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A connection inside ``BEGIN IMMEDIATE``: committed if the block
        returns, rolled back if it raises (the exception propagates)."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> OrderDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------- records

    def user(self, user_id: str) -> Json | None:
        with self.read() as conn:
            return load_user(conn, user_id)

    def order(self, order_id: str) -> Json | None:
        with self.read() as conn:
            return load_order(conn, order_id)

    def product(self, product_id: str) -> Json | None:
        with self.read() as conn:
            return load_product(conn, product_id)

    def export(self) -> dict[str, Json]:
        """The whole database as ``{"users": ..., "orders": ..., "products": ...}``
        in τ-bench's JSON shape (values, floats and list orders identical)."""
        with self.read() as conn:
            methods = _group(conn.execute("SELECT * FROM payment_methods ORDER BY user_id, pos"))
            user_orders = _group(conn.execute("SELECT user_id, order_id FROM orders ORDER BY user_id, user_pos"))
            users = {
                row["user_id"]: _user_json(row, methods[row["user_id"]], user_orders[row["user_id"]])
                for row in _rows(conn.execute("SELECT * FROM users ORDER BY seq"))
            }
            items = _group(conn.execute("SELECT * FROM order_items ORDER BY order_id, pos"))
            fulfillments = _group(conn.execute("SELECT * FROM fulfillments ORDER BY order_id, pos"))
            history = _group(conn.execute("SELECT * FROM payment_history ORDER BY order_id, pos"))
            orders = {
                row["order_id"]: _order_json(
                    row, items[row["order_id"]], fulfillments[row["order_id"]], history[row["order_id"]]
                )
                for row in _rows(conn.execute("SELECT * FROM orders ORDER BY seq"))
            }
            variants = _group(conn.execute("SELECT * FROM variants ORDER BY product_id, pos"))
            products = {
                row["product_id"]: _product_json(row, variants[row["product_id"]])
                for row in _rows(conn.execute("SELECT * FROM products ORDER BY seq"))
            }
        return {"users": users, "orders": orders, "products": products}


# ---------------------------------------------------------------- loaders
# Each takes a connection already inside a transaction.


def load_user(conn: sqlite3.Connection, user_id: str) -> Json | None:
    row = _one(conn.execute("SELECT * FROM users WHERE user_id = ?", (user_id,)))
    if row is None:
        return None
    methods = _rows(conn.execute("SELECT * FROM payment_methods WHERE user_id = ? ORDER BY pos", (user_id,)))
    orders = _rows(conn.execute("SELECT order_id FROM orders WHERE user_id = ? ORDER BY user_pos", (user_id,)))
    return _user_json(row, methods, orders)


def load_order(conn: sqlite3.Connection, order_id: str) -> Json | None:
    row = _one(conn.execute("SELECT * FROM orders WHERE order_id = ?", (order_id,)))
    if row is None:
        return None
    return _order_json(
        row,
        _rows(conn.execute("SELECT * FROM order_items WHERE order_id = ? ORDER BY pos", (order_id,))),
        _rows(conn.execute("SELECT * FROM fulfillments WHERE order_id = ? ORDER BY pos", (order_id,))),
        _rows(conn.execute("SELECT * FROM payment_history WHERE order_id = ? ORDER BY pos", (order_id,))),
    )


def load_product(conn: sqlite3.Connection, product_id: str) -> Json | None:
    row = _one(conn.execute("SELECT * FROM products WHERE product_id = ?", (product_id,)))
    if row is None:
        return None
    variants = _rows(conn.execute("SELECT * FROM variants WHERE product_id = ? ORDER BY pos", (product_id,)))
    return _product_json(row, variants)


def load_payment_methods(conn: sqlite3.Connection, user_id: str) -> dict[str, Json]:
    """A user's payment methods by id, in τ-bench's shape ({} if none/unknown user)."""
    rows = _rows(conn.execute("SELECT * FROM payment_methods WHERE user_id = ? ORDER BY pos", (user_id,)))
    return {row["payment_method_id"]: _payment_method_json(row) for row in rows}


def address_columns(address: Mapping[str, str]) -> tuple[str, ...]:
    """(address1, address2, city, state, country, zip, address_keys) for an address dict."""
    return (*(address[k] for k in ADDRESS_FIELDS), ",".join(address))


# ------------------------------------------------------- rows -> JSON shape


def _rows(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, values)) for values in cursor.fetchall()]


def _one(cursor: sqlite3.Cursor) -> dict[str, Any] | None:
    rows = _rows(cursor)
    return rows[0] if rows else None


def _group(cursor: sqlite3.Cursor) -> defaultdict[str, list[dict[str, Any]]]:
    """Rows grouped by their first column (the parent key)."""
    groups: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in _rows(cursor):
        groups[next(iter(row.values()))].append(row)
    return groups


def _address_json(row: Mapping[str, Any]) -> Json:
    return {key: row[key] for key in row["address_keys"].split(",")}


def _payment_method_json(row: Mapping[str, Any]) -> Json:
    values = {**row, "id": row["payment_method_id"]}
    return {key: values[key] for key in PAYMENT_METHOD_FIELDS if values[key] is not None}


def _user_json(row: Mapping[str, Any], methods: list[Mapping[str, Any]], orders: list[Mapping[str, Any]]) -> Json:
    return {
        "name": {"first_name": row["first_name"], "last_name": row["last_name"]},
        "address": _address_json(row),
        "email": row["email"],
        "payment_methods": {m["payment_method_id"]: _payment_method_json(m) for m in methods},
        "orders": [o["order_id"] for o in orders],
    }


def _order_json(
    row: Mapping[str, Any],
    items: list[Mapping[str, Any]],
    fulfillments: list[Mapping[str, Any]],
    history: list[Mapping[str, Any]],
) -> Json:
    order = {
        "order_id": row["order_id"],
        "user_id": row["user_id"],
        "address": _address_json(row),
        "items": [
            {
                "name": i["name"],
                "product_id": i["product_id"],
                "item_id": i["item_id"],
                "price": i["price"],
                "options": json.loads(i["options"]),
            }
            for i in items
        ],
        "fulfillments": [
            {"tracking_id": json.loads(f["tracking_id"]), "item_ids": json.loads(f["item_ids"])} for f in fulfillments
        ],
        "status": row["status"],
        "payment_history": [
            {
                "transaction_type": p["transaction_type"],
                "amount": p["amount"],
                "payment_method_id": p["payment_method_id"],
            }
            for p in history
        ],
    }
    for key in ORDER_EXTRA_FIELDS:
        if row[key] is not None:
            order[key] = json.loads(row[key]) if key in _ORDER_EXTRA_JSON else row[key]
    return order


def _product_json(row: Mapping[str, Any], variants: list[Mapping[str, Any]]) -> Json:
    return {
        "name": row["name"],
        "product_id": row["product_id"],
        "variants": {
            v["item_id"]: {
                "item_id": v["item_id"],
                "options": json.loads(v["options"]),
                "available": bool(v["available"]),
                "price": v["price"],
            }
            for v in variants
        },
    }


# ----------------------------------------------------- JSON -> rows (build)


def _rows_from_json(users: Any, orders: Any, products: Any) -> dict[str, list[tuple]]:
    """Validate τ-bench's three JSON documents and flatten them into table rows
    (in schema column order). Raises ValueError naming the bad record."""
    for name, doc in (("users", users), ("orders", orders), ("products", products)):
        if not isinstance(doc, dict):
            raise ValueError(f"{name}.json: expected an object keyed by id, got {type(doc).__name__}")
    rows: dict[str, list[tuple]] = {
        t: []
        for t in (
            "users",
            "payment_methods",
            "products",
            "variants",
            "orders",
            "order_items",
            "fulfillments",
            "payment_history",
        )
    }

    for seq, (product_id, p) in enumerate(products.items()):
        where = f"products[{product_id!r}]"
        _check_keys(where, p, {"name", "product_id", "variants"})
        _check(where, p["product_id"] == product_id, "product_id differs from its key")
        rows["products"].append((product_id, seq, _str(where, "name", p["name"])))
        _check(where, isinstance(p["variants"], dict), "variants must be an object")
        for pos, (item_id, v) in enumerate(p["variants"].items()):
            vwhere = f"{where}.variants[{item_id!r}]"
            _check_keys(vwhere, v, {"item_id", "options", "available", "price"})
            _check(vwhere, v["item_id"] == item_id, "item_id differs from its key")
            _check(vwhere, isinstance(v["available"], bool), "available must be a boolean")
            _check(vwhere, isinstance(v["options"], dict), "options must be an object")
            rows["variants"].append(
                (
                    product_id,
                    item_id,
                    pos,
                    json.dumps(v["options"]),
                    int(v["available"]),
                    _number(vwhere, "price", v["price"]),
                )
            )

    # Where each order sits in its user's "orders" list.
    user_pos: dict[str, tuple[str, int]] = {}
    for seq, (user_id, u) in enumerate(users.items()):
        where = f"users[{user_id!r}]"
        _check_keys(where, u, {"name", "address", "email", "payment_methods", "orders"})
        _check_keys(f"{where}.name", u["name"], {"first_name", "last_name"})
        first, last = (
            _str(where, "first_name", u["name"]["first_name"]),
            _str(where, "last_name", u["name"]["last_name"]),
        )
        email = _str(where, "email", u["email"])
        rows["users"].append(
            (
                user_id,
                seq,
                first,
                last,
                first.lower(),
                last.lower(),
                email,
                email.lower(),
                *_address(where, u["address"]),
            )
        )
        _check(where, isinstance(u["payment_methods"], dict), "payment_methods must be an object")
        for pos, (method_id, m) in enumerate(u["payment_methods"].items()):
            mwhere = f"{where}.payment_methods[{method_id!r}]"
            _check_keys(mwhere, m, {"source", "id"}, optional={"brand", "last_four", "balance"})
            _check(mwhere, m["id"] == method_id, "id differs from its key")
            balance = _number(mwhere, "balance", m["balance"]) if "balance" in m else None
            rows["payment_methods"].append(
                (
                    user_id,
                    method_id,
                    pos,
                    _str(mwhere, "source", m["source"]),
                    m.get("brand"),
                    m.get("last_four"),
                    balance,
                )
            )
        _check(where, isinstance(u["orders"], list), "orders must be a list")
        for pos, order_id in enumerate(u["orders"]):
            _check(where, order_id not in user_pos, f"order {order_id!r} listed twice")
            user_pos[order_id] = (user_id, pos)

    for seq, (order_id, o) in enumerate(orders.items()):
        where = f"orders[{order_id!r}]"
        _check_keys(where, o, set(ORDER_FIELDS), optional=set(ORDER_EXTRA_FIELDS))
        _check(where, o["order_id"] == order_id, "order_id differs from its key")
        _check(where, o["user_id"] in users, f"unknown user {o['user_id']!r}")
        _check(where, user_pos.get(order_id, (None,))[0] == o["user_id"], "not listed in its user's orders")
        extras = tuple(
            (json.dumps(o[k]) if k in _ORDER_EXTRA_JSON else o[k]) if k in o else None for k in ORDER_EXTRA_FIELDS
        )
        rows["orders"].append(
            (
                order_id,
                seq,
                o["user_id"],
                user_pos.pop(order_id)[1],
                _str(where, "status", o["status"]),
                *_address(where, o["address"]),
                *extras,
            )
        )
        for key in ("items", "fulfillments", "payment_history"):
            _check(where, isinstance(o[key], list), f"{key} must be a list")
        for pos, i in enumerate(o["items"]):
            iwhere = f"{where}.items[{pos}]"
            _check_keys(iwhere, i, {"name", "product_id", "item_id", "price", "options"})
            _check(iwhere, i["product_id"] in products, f"unknown product {i['product_id']!r}")
            rows["order_items"].append(
                (
                    order_id,
                    pos,
                    i["item_id"],
                    i["product_id"],
                    i["name"],
                    _number(iwhere, "price", i["price"]),
                    json.dumps(i["options"]),
                )
            )
        for pos, f in enumerate(o["fulfillments"]):
            _check_keys(f"{where}.fulfillments[{pos}]", f, {"tracking_id", "item_ids"})
            rows["fulfillments"].append((order_id, pos, json.dumps(f["tracking_id"]), json.dumps(f["item_ids"])))
        for pos, p in enumerate(o["payment_history"]):
            pwhere = f"{where}.payment_history[{pos}]"
            _check_keys(pwhere, p, {"transaction_type", "amount", "payment_method_id"})
            _check(
                pwhere,
                p["transaction_type"] in ("payment", "refund"),
                f"bad transaction_type {p['transaction_type']!r}",
            )
            rows["payment_history"].append(
                (order_id, pos, p["transaction_type"], _number(pwhere, "amount", p["amount"]), p["payment_method_id"])
            )
    if user_pos:
        raise ValueError(f"users list orders that do not exist: {sorted(user_pos)[:5]}")
    return rows


def _address(where: str, address: Any) -> tuple[str, ...]:
    _check_keys(f"{where}.address", address, set(ADDRESS_FIELDS))
    for key in ADDRESS_FIELDS:
        _str(f"{where}.address", key, address[key])
    return address_columns(address)


def _check(where: str, ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(f"{where}: {message}")


def _check_keys(where: str, record: Any, required: set[str], optional: frozenset[str] | set[str] = frozenset()) -> None:
    _check(where, isinstance(record, dict), f"expected an object, got {type(record).__name__}")
    missing, unknown = required - record.keys(), record.keys() - required - optional
    _check(where, not missing, f"missing keys {sorted(missing)}")
    _check(where, not unknown, f"unknown keys {sorted(unknown)}")


def _str(where: str, key: str, value: Any) -> str:
    _check(where, isinstance(value, str), f"{key} must be a string, got {type(value).__name__}")
    return value


def _number(where: str, key: str, value: Any) -> int | float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    _check(where, ok, f"{key} must be a number, got {type(value).__name__}")
    return value


def _split_sql(script: str) -> list[str]:
    # The schema has no ';' inside statements, so a plain split is exact.
    return [s.strip() for s in script.split(";") if s.strip()]
