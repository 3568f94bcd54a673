"""The sensitive-text filter, measured on a labelled set of 110 lines (false positives and negatives)."""

from __future__ import annotations

import json
from pathlib import Path

from app.support.redact import MASK, SensitiveFilter

LABELLED = Path(__file__).resolve().parents[1] / "data" / "sensitive_lines.jsonl"
OWN_EMAIL = "ivan.santos3158@example.com"
OWN_ADDRESS = "477 Park Avenue"
BLOCKED = ("idiot", "stupid", "damn")


def measure() -> tuple[list[dict], list[dict], int, int]:
    """(false positives, false negatives, clean lines, sensitive lines) of the filter on the labelled set."""
    rows = [json.loads(line) for line in LABELLED.read_text().splitlines()]
    flt = SensitiveFilter(BLOCKED)
    false_pos, false_neg = [], []
    for row in rows:
        changed = flt.apply(row["text"], own_emails=[OWN_EMAIL], own_addresses=[OWN_ADDRESS]) != row["text"]
        if changed and not row["sensitive"]:
            false_pos.append(row)
        elif not changed and row["sensitive"]:
            false_neg.append(row)
    sensitive = sum(row["sensitive"] for row in rows)
    return false_pos, false_neg, len(rows) - sensitive, sensitive


def test_labelled_set_false_positive_and_negative_rates() -> None:
    false_pos, false_neg, clean, sensitive = measure()
    assert clean + sensitive >= 100
    print(f"\nsensitive filter: FP {len(false_pos)}/{clean}, FN {len(false_neg)}/{sensitive}")
    for row in false_pos + false_neg:
        print("  missed" if row["sensitive"] else "  over-masked", row["kind"], repr(row["text"]))
    assert len(false_pos) <= 0.05 * clean
    assert len(false_neg) <= 0.05 * sensitive


def test_masks_spans_and_keeps_the_rest() -> None:
    flt = SensitiveFilter(("damn",))
    text = "Order #W8770097: card 4111 1111 1111 1111, mail raj@example.com, damn."
    assert flt.apply(text) == f"Order #W8770097: card {MASK}, mail {MASK}, {MASK}."


def test_own_contact_data_passes_others_do_not() -> None:
    flt = SensitiveFilter()
    text = f"Yours: {OWN_EMAIL}, {OWN_ADDRESS}. Theirs: raj.sanchez2046@example.com, 986 Sunset Drive."
    out = flt.apply(text, own_emails=[OWN_EMAIL.upper()], own_addresses=[OWN_ADDRESS.lower()])
    assert out == f"Yours: {OWN_EMAIL}, {OWN_ADDRESS}. Theirs: {MASK}, {MASK}."
