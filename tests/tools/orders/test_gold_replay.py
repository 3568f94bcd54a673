"""Replaying τ-bench's gold actions through our tools reproduces τ-bench.

For every task in tasks_train.json: a fresh database, each gold action called
the way an agent calls a tool (name + JSON arguments), then the results must
equal gold_train.json's ``action_results`` string for string, and the records
that differ from the initial data must equal its ``changed`` records.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from tests.tools.orders.conftest import copy_db
from tools.orders import OrderDB, call_tool, order_tools

# table -> (record kind, its key column, the columns that form that record)
# for every table: a row that differs marks its record as changed. An order
# row also forms its user's "orders" list through (user_id, user_pos).
_RECORD_OF_TABLE = {
    "users": [("users", "user_id", "*")],
    "payment_methods": [("users", "user_id", "*")],
    "orders": [("orders", "order_id", "*"), ("users", "user_id", "user_id, user_pos, order_id")],
    "order_items": [("orders", "order_id", "*")],
    "fulfillments": [("orders", "order_id", "*")],
    "payment_history": [("orders", "order_id", "*")],
    "products": [("products", "product_id", "*")],
    "variants": [("products", "product_id", "*")],
}


def changed_records(db: OrderDB, template: Path) -> dict[str, dict]:
    """Records (τ-bench JSON) whose rows differ from the template database,
    found with SQL set differences instead of exporting everything."""
    keys: dict[str, set[str]] = {"users": set(), "orders": set(), "products": set()}
    conn = sqlite3.connect(db.path)
    try:
        conn.execute("ATTACH DATABASE ? AS tmpl", (str(template),))
        for table, records in _RECORD_OF_TABLE.items():
            for kind, key, columns in records:
                rows = conn.execute(
                    f"SELECT {key} FROM (SELECT {columns} FROM main.{table} EXCEPT SELECT {columns} FROM tmpl.{table})"
                    f" UNION SELECT {key} FROM (SELECT {columns} FROM tmpl.{table} EXCEPT SELECT {columns} FROM main.{table})"
                )
                keys[kind].update(key for (key,) in rows)
    finally:
        conn.close()
    loaders = {"users": db.user, "orders": db.order, "products": db.product}
    return {kind: {key: loaders[kind](key) for key in sorted(ids)} for kind, ids in keys.items() if ids}


def test_gold_replay_matches_tau_bench(gold_dir: Path, template_db: Path, initial_state: dict, tmp_path: Path):
    tasks = json.loads((gold_dir / "tasks_train.json").read_text())
    gold = json.loads((gold_dir / "gold_train.json").read_text())
    assert len(tasks) == len(gold) == 500

    failures = []
    start = time.perf_counter()
    for n, (task, expected) in enumerate(zip(tasks, gold)):
        with copy_db(template_db, tmp_path / "task.db") as db:
            tools = order_tools(db)
            results = [call_tool(tools, a["name"], json.dumps(a["kwargs"])) for a in task["actions"]]
            changed = changed_records(db, template_db)
        # Every flagged record really differs from the initial data.
        for kind, records in changed.items():
            assert all(record != initial_state[kind][key] for key, record in records.items()), (n, kind)
        problems = []
        for i, (action, got, want) in enumerate(zip(task["actions"], results, expected["action_results"])):
            if got != want:
                problems.append(
                    f"  action {i} {action['name']}({action['kwargs']}):\n    got  {got[:400]}\n    want {want[:400]}"
                )
        if changed != expected["changed"]:
            for kind in sorted(changed.keys() | expected["changed"].keys()):
                ours, theirs = changed.get(kind, {}), expected["changed"].get(kind, {})
                for key in sorted(ours.keys() | theirs.keys()):
                    if ours.get(key) != theirs.get(key):
                        problems.append(
                            f"  changed {kind}[{key}]:\n    got  {json.dumps(ours.get(key))[:400]}"
                            f"\n    want {json.dumps(theirs.get(key))[:400]}"
                        )
        if problems:
            failures.append(f"task {n} (user {task['user_id']}):\n" + "\n".join(problems))
    elapsed = time.perf_counter() - start

    passed = len(tasks) - len(failures)
    print(f"gold replay: {passed}/{len(tasks)} tasks match in {elapsed:.1f}s")
    assert not failures, f"gold replay {passed}/{len(tasks)}; first failures:\n" + "\n".join(failures[:10])
