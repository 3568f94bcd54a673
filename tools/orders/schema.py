"""SQLite schema of the retail order database.

Entities and the fields the tools query or update are real columns with
indexes; only leaf structures that no tool looks inside (item options,
fulfilment tracking ids, the item-id lists a return or exchange records) are
JSON text, which keeps their key and list order exact.

Invariants the export relies on:
- every list in τ-bench's JSON shape is a child table with an explicit ``pos``
  (list order), and every dict of records has a ``seq`` (insertion order);
  rowids are not used for order because VACUUM may renumber them;
- numbers that τ-bench computes with (prices, amounts, balances) live in
  columns *without* a declared type: such a column has no affinity, so SQLite
  keeps an int an int and a float the same IEEE double, and ``json.dumps``
  prints them exactly as τ-bench does (``63`` vs ``63.0``);
- ``address_keys`` keeps the key order of an address dict: the data lists
  ``country`` before ``state`` while the modify-address tools write ``state``
  first, and τ-bench's ``json.dumps`` results show that order.
"""

SCHEMA_VERSION = 1

# Checked on open: a file with a different user_version is not ours.
APPLICATION_ID = 0x52315244  # "R1RD"

SCHEMA = """
CREATE TABLE users (
    user_id         TEXT PRIMARY KEY,
    seq             INTEGER NOT NULL UNIQUE,
    first_name      TEXT NOT NULL,
    last_name       TEXT NOT NULL,
    -- str.lower() of the fields above, computed in Python: SQLite's lower()
    -- only folds ASCII, τ-bench compares with Python's lower().
    first_name_key  TEXT NOT NULL,
    last_name_key   TEXT NOT NULL,
    email           TEXT NOT NULL,
    email_key       TEXT NOT NULL,
    address1        TEXT NOT NULL,
    address2        TEXT NOT NULL,
    city            TEXT NOT NULL,
    state           TEXT NOT NULL,
    country         TEXT NOT NULL,
    zip             TEXT NOT NULL,
    address_keys    TEXT NOT NULL
);
CREATE INDEX users_email_key ON users (email_key);
CREATE INDEX users_name_zip ON users (last_name_key, first_name_key, zip);

CREATE TABLE payment_methods (
    user_id            TEXT NOT NULL REFERENCES users (user_id),
    payment_method_id  TEXT NOT NULL,
    pos                INTEGER NOT NULL,
    source             TEXT NOT NULL,
    brand              TEXT,
    last_four          TEXT,
    balance            CHECK (balance IS NULL OR typeof(balance) IN ('integer', 'real')),
    PRIMARY KEY (user_id, payment_method_id),
    UNIQUE (user_id, pos)
);

CREATE TABLE products (
    product_id  TEXT PRIMARY KEY,
    seq         INTEGER NOT NULL UNIQUE,
    name        TEXT NOT NULL
);
CREATE INDEX products_name ON products (name);

CREATE TABLE variants (
    product_id  TEXT NOT NULL REFERENCES products (product_id),
    item_id     TEXT NOT NULL,
    pos         INTEGER NOT NULL,
    options     TEXT NOT NULL,  -- JSON object
    available   INTEGER NOT NULL CHECK (available IN (0, 1)),
    price       NOT NULL CHECK (typeof(price) IN ('integer', 'real')),
    PRIMARY KEY (product_id, item_id),
    UNIQUE (product_id, pos)
);
CREATE INDEX variants_item_id ON variants (item_id);

CREATE TABLE orders (
    order_id                    TEXT PRIMARY KEY,
    seq                         INTEGER NOT NULL UNIQUE,
    user_id                     TEXT NOT NULL REFERENCES users (user_id),
    user_pos                    INTEGER NOT NULL,  -- position in the user's "orders" list
    status                      TEXT NOT NULL,
    address1                    TEXT NOT NULL,
    address2                    TEXT NOT NULL,
    city                        TEXT NOT NULL,
    state                       TEXT NOT NULL,
    country                     TEXT NOT NULL,
    zip                         TEXT NOT NULL,
    address_keys                TEXT NOT NULL,
    -- Set by the write tools: NULL means the key is absent from the JSON.
    cancel_reason               TEXT,
    return_items                TEXT,  -- JSON list of item ids
    return_payment_method_id    TEXT,
    exchange_items              TEXT,  -- JSON list of item ids
    exchange_new_items          TEXT,  -- JSON list of item ids
    exchange_payment_method_id  TEXT,
    exchange_price_difference   CHECK (exchange_price_difference IS NULL
                                       OR typeof(exchange_price_difference) IN ('integer', 'real')),
    UNIQUE (user_id, user_pos)
);
CREATE INDEX orders_status ON orders (status);

CREATE TABLE order_items (
    order_id    TEXT NOT NULL REFERENCES orders (order_id),
    pos         INTEGER NOT NULL,
    item_id     TEXT NOT NULL,
    product_id  TEXT NOT NULL REFERENCES products (product_id),
    name        TEXT NOT NULL,
    price       NOT NULL CHECK (typeof(price) IN ('integer', 'real')),
    options     TEXT NOT NULL,  -- JSON object
    PRIMARY KEY (order_id, pos)
);
CREATE INDEX order_items_item_id ON order_items (item_id);
CREATE INDEX order_items_product_id ON order_items (product_id);

CREATE TABLE fulfillments (
    order_id     TEXT NOT NULL REFERENCES orders (order_id),
    pos          INTEGER NOT NULL,
    tracking_id  TEXT NOT NULL,  -- JSON list of tracking numbers
    item_ids     TEXT NOT NULL,  -- JSON list of item ids
    PRIMARY KEY (order_id, pos)
);

CREATE TABLE payment_history (
    order_id           TEXT NOT NULL REFERENCES orders (order_id),
    pos                INTEGER NOT NULL,
    transaction_type   TEXT NOT NULL CHECK (transaction_type IN ('payment', 'refund')),
    amount             NOT NULL CHECK (typeof(amount) IN ('integer', 'real')),
    payment_method_id  TEXT NOT NULL,
    PRIMARY KEY (order_id, pos)
);
CREATE INDEX payment_history_method ON payment_history (payment_method_id);
"""
