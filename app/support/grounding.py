"""Grounded bot messages: every number, id, amount, date and product name in a message the model wrote must
appear in this session's tool results or in the customer's own words. A sentence stating anything else is
dropped before the message is sent: a 135M model, after a correct look-up, adds made-up refunds and gift
cards ("You will receive a refund of $10.00"). Sentences that state none of these pass as written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from memory.documents import sentence_spans

NUMBER_WORDS = {
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "fifteen": 15,
    "twenty": 20,
    "thirty": 30,
    "fifty": 50,
    "hundred": 100,
    "thousand": 1000,
}
DATE_WORDS = {
    "january",
    "february",
    "march",
    "april",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "tomorrow",
    "yesterday",
}  # not "may": "You may ..." is no date
# A word with a digit in it, with the marks ids, amounts, dates and times are written with ("#W1234567",
# "$10.00", "2024-05-01", "16:40", "gift_card_7245904"); trailing sentence punctuation is not part of it.
_TOKEN = re.compile(r"[#$]?\w(?:[\w#$.,:/@-]*\w)?")
_NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")
_ORDINAL = re.compile(r"(\d+)(?:st|nd|rd|th)")
_RANGE = re.compile(r"\d+(?:\.\d+)?-\d+(?:\.\d+)?")  # "5-7"; "2024-05-01" is a date, kept whole
_EVIDENCE_NUMBER = re.compile(r"\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Claim:
    text: str  # as the message wrote it
    kind: str  # "number", "id", "date" or "product"


class Evidence:
    """What this session's messages may state: the tool results and the customer's words so far."""

    def __init__(self, texts: Iterable[str]) -> None:
        self.text = "\n".join(texts).lower()
        self.words = set(re.findall(r"\w+", self.text))
        self.numbers = {float(n) for n in _EVIDENCE_NUMBER.findall(self.text)}
        self.numbers |= {float(value) for word, value in NUMBER_WORDS.items() if word in self.words}

    def supports(self, claim: Claim) -> bool:
        said = claim.text.lower()
        if claim.kind == "number":
            return _value(said) in self.numbers
        if claim.kind == "id":  # whole: "#W1" is not grounded by "#W1234567"
            return any(re.search(rf"(?<!\w){re.escape(form)}(?!\w)", self.text) for form in {said, said.lstrip("#$")})
        if claim.kind == "date":
            return said in self.words
        return re.search(rf"(?<!\w){re.escape(said)}", self.text) is not None  # a product, also as a plural


def claims(sentence: str, products: Iterable[str] = ()) -> list[Claim]:
    """The numbers, ids, amounts, dates and product names a sentence states."""
    found: list[Claim] = []
    for token in _TOKEN.findall(sentence):
        word = token.lower()
        if word in NUMBER_WORDS:
            found.append(Claim(token, "number"))
        elif word in DATE_WORDS:
            found.append(Claim(token, "date"))
        elif any(c.isdigit() for c in token):
            bare = token.lstrip("$")
            if _NUMBER.fullmatch(bare):
                found.append(Claim(bare, "number"))
            elif ordinal := _ORDINAL.fullmatch(bare):
                found.append(Claim(ordinal.group(1), "number"))
            elif _RANGE.fullmatch(bare):  # "5-7": each end is a number
                found += [Claim(n, "number") for n in bare.split("-")]
            else:
                found.append(Claim(token, "id"))
    lowered = sentence.lower()
    found += [Claim(name, "product") for name in products if re.search(rf"(?<!\w){re.escape(name.lower())}", lowered)]
    return found


def unsupported(sentence: str, evidence: Evidence, products: Iterable[str] = ()) -> list[Claim]:
    """The claims of `sentence` that `evidence` does not support."""
    return [claim for claim in claims(sentence, products) if not evidence.supports(claim)]


def sentences(text: str) -> list[str]:
    return [text[start:end] for start, end in sentence_spans(text)]


def grounded(text: str, evidence: Evidence, products: Iterable[str] = ()) -> tuple[str, list[str]]:
    """(the message without its ungrounded sentences, the sentences dropped): the text as written when none
    is dropped; it may be empty."""
    products = tuple(products)
    kept, dropped = [], []
    for sentence in sentences(text):
        (dropped if unsupported(sentence, evidence, products) else kept).append(sentence)
    return (" ".join(kept) if dropped else text), dropped


def _value(number: str) -> float:
    return float(NUMBER_WORDS.get(number, 0) or number.replace(",", ""))
