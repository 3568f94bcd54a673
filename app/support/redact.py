"""Sensitive-text filter for what the support bot says: blocked words, card numbers, and other people's
emails, phone numbers and street addresses are masked before a message leaves.

The authenticated customer's own email and addresses pass unmasked (they asked about them); everything
else that looks like contact data is someone else's and is masked. Measured on a labelled set in
tests/app/data/sensitive_lines.jsonl (figures in docs/BENCHMARKS.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

MASK = "[redacted]"

# 13 to 19 digits, optionally in groups split by spaces or dashes: card numbers. Our ids are shorter
# (item and product ids have 10 digits, tracking ids 12), so they pass.
_CARD = re.compile(r"(?<![\w#])\d(?:[ -]?\d){12,18}(?!\w)")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# North-American style numbers with separators or a +country prefix; a bare 10-digit run is an item id.
_PHONE = re.compile(
    r"(?<![\w#])(?:\+\d{1,3}[ .-]?)?(?:\(\d{3}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}(?!\w)"
    r"|(?<![\w#])\+\d{10,14}(?!\w)"
)
_STREET_SUFFIX = (
    r"(?:street|st|avenue|ave|road|rd|drive|dr|lane|ln|boulevard|blvd|court|ct|place|pl|way|terrace|"
    r"circle|cir|parkway|pkwy|highway|hwy|square|sq|trail|trl)"
)
_ADDRESS = re.compile(rf"\b\d{{1,6}}(?: [A-Z][A-Za-z'.-]*){{1,4}} {_STREET_SUFFIX}\b", re.IGNORECASE)


@dataclass(frozen=True)
class SensitiveFilter:
    """Masks sensitive spans. `blocked_words` are matched as whole words, case-insensitively."""

    blocked_words: tuple[str, ...] = ()
    mask: str = MASK
    _blocked: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        words = [re.escape(w.strip()) for w in self.blocked_words if w.strip()]
        pattern = re.compile(rf"\b(?:{'|'.join(words)})\b", re.IGNORECASE) if words else None
        object.__setattr__(self, "_blocked", pattern)

    def apply(self, text: str, *, own_emails: Iterable[str] = (), own_addresses: Iterable[str] = ()) -> str:
        """`text` with sensitive spans replaced by the mask; the customer's own email/addresses are kept."""
        emails = {e.lower() for e in own_emails}
        addresses = {_normalise(a) for a in own_addresses}
        text = _CARD.sub(self.mask, text)
        text = _EMAIL.sub(lambda m: m.group(0) if m.group(0).lower() in emails else self.mask, text)
        text = _PHONE.sub(self.mask, text)
        text = _ADDRESS.sub(lambda m: m.group(0) if _normalise(m.group(0)) in addresses else self.mask, text)
        if self._blocked is not None:
            text = self._blocked.sub(self.mask, text)
        return text


def _normalise(address: str) -> str:
    return " ".join(address.lower().rstrip(".").split())
