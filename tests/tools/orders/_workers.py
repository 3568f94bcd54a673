"""Processes for the concurrency and crash tests, run as
``python -m tests.tools.orders._workers <command> <args>`` from the repo root."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from tools.orders import OrderDB, actions, call_tool, order_tools


def switch_payments(db_path: str, go_file: str, *order_ids: str) -> None:
    """Pay each order with gift_card_1 instead (each debits the same gift card
    balance: a read-modify-write that loses updates without a transaction)."""
    tools = order_tools(OrderDB(db_path))
    while not Path(go_file).exists():  # start together with the other worker
        time.sleep(0.001)
    results = [
        call_tool(
            tools, "modify_pending_order_payment", json.dumps({"order_id": o, "payment_method_id": "gift_card_1"})
        )
        for o in order_ids
    ]
    print(json.dumps([r[:200] for r in results if r.startswith("Error")]))


def die_mid_cancel(db_path: str, order_id: str) -> None:
    """Cancel an order but get killed after its status and refund rows are
    written and before the gift card balance is, i.e. inside the transaction."""

    def killed(*args: object) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    actions._set_balance = killed
    tools = order_tools(OrderDB(db_path))
    call_tool(tools, "cancel_pending_order", json.dumps({"order_id": order_id, "reason": "no longer needed"}))
    raise AssertionError("unreachable: the process was killed")


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"switch_payments": switch_payments, "die_mid_cancel": die_mid_cancel}[command](*args)
