"""Atomic, isolated writes: two processes writing the same file lose no
update, and a write that dies half way (exception or killed process) leaves
no trace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tools.orders.conftest import REPO_ROOT
from tests.tools.orders.test_db import write_small_dataset
from tools.orders import OrderDB, actions, call_tool, order_tools


def _worker(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.tools.orders._workers", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_lose_no_update(tmp_path: Path):
    n, amount, balance = 60, 1.25, 1000  # 1.25 is exact in binary: the expected sum is exact
    src = write_small_dataset(tmp_path / "src", n_orders=n, amount=amount, balance=balance)
    path = tmp_path / "o.db"
    OrderDB.create(path, from_dir=src).close()
    order_ids = list(json.loads((src / "orders.json").read_text()))
    go = tmp_path / "go"

    workers = [_worker("switch_payments", str(path), str(go), *order_ids[i::2]) for i in range(2)]
    go.touch()
    for w in workers:
        out, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
        assert json.loads(out) == [], out  # no tool call failed

    with OrderDB(path) as db:
        state = db.export()
    # Every debit of the shared gift card landed, and every order got its two new rows.
    assert state["users"]["ann_lee_1"]["payment_methods"]["gift_card_1"]["balance"] == balance - n * amount
    for oid in order_ids:
        assert [p["payment_method_id"] for p in state["orders"][oid]["payment_history"]] == [
            "credit_card_1",
            "gift_card_1",
            "credit_card_1",
        ], oid


def test_exception_inside_write_rolls_back(db: OrderDB, initial_state: dict, monkeypatch: pytest.MonkeyPatch):
    order = next(
        o
        for o in initial_state["orders"].values()
        if o["status"] == "pending" and o["payment_history"][0]["payment_method_id"].startswith("gift_card")
    )

    def fail(*args: object) -> None:  # after the status update and refund insert
        raise RuntimeError("injected failure")

    monkeypatch.setattr(actions, "_set_balance", fail)
    tools = order_tools(db)
    result = call_tool(
        tools, "cancel_pending_order", json.dumps({"order_id": order["order_id"], "reason": "no longer needed"})
    )
    assert result == "Error: cancel_pending_order failed: RuntimeError"  # text, as for any input
    assert db.export() == initial_state

    monkeypatch.undo()  # the lock was released: the same write now succeeds
    result = json.loads(
        call_tool(tools, "cancel_pending_order", {"order_id": order["order_id"], "reason": "no longer needed"})
    )
    assert result["status"] == "cancelled"


def test_killed_process_mid_write_leaves_db_consistent(db: OrderDB, initial_state: dict):
    order = next(
        o
        for o in initial_state["orders"].values()
        if o["status"] == "pending" and o["payment_history"][0]["payment_method_id"].startswith("gift_card")
    )
    worker = _worker("die_mid_cancel", str(db.path), order["order_id"])
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == -signal.SIGKILL, err

    with OrderDB(db.path) as reopened:
        with reopened.read() as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert reopened.export() == initial_state  # the half-done cancel is gone
        tools = order_tools(reopened)  # and the database takes writes again
        result = json.loads(
            call_tool(tools, "cancel_pending_order", {"order_id": order["order_id"], "reason": "no longer needed"})
        )
        assert result["status"] == "cancelled"
