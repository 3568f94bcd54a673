"""Whether a chat message is a maths or code question, to be answered through the tools rather than the bare model.

A small model states arithmetic it never did ("12 * 7 = 80"), so a message that asks for a computed result goes
to the same tool-using search as `app.solve`. The decision is deliberate and conservative both ways: a message
is routed only when it *shows* the maths (an arithmetic expression, arithmetic in words, an operation on an
expression in a variable, a word problem's numbers and a quantity question) or asks to *write* code; a chat
message that merely mentions a number, a date, "solve" or "Python" stays with the chat model.

A follow-up that names an operation but no expression ("and its integral?") is rewritten into a standalone
problem from the conversation's previous tool turn: "its"/"it" is the expression that turn's problem stated,
"the result"/"that answer" the answer it found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from reasoning.grounding import stated_maths


@dataclass(frozen=True)
class Route:
    """A message the tools answer: the standalone problem the search solves, and its task type."""

    problem: str
    task_type: str  # "math" | "code"
    rewritten_from: str | None = None  # the follow-up as the user wrote it, when `problem` was rewritten


@dataclass(frozen=True)
class PreviousTurn:
    """What a follow-up can refer to: the problem the last tool turn solved and the answer it found."""

    problem: str
    answer: str | None


_CODE_SHOWN = re.compile(r"```|^\s*(?:def|class)\s+\w+|>>>", re.M)
_CODE_ASKED = re.compile(
    r"\b(?:write|implement|code|create|make|give me|show me|generate)\b[^.?!\n]{0,60}?"
    r"\b(?:function|program|script|method|class|snippet|one-liner|lambda|code)\b",
    re.I,
)
_NUMBER = r"\d+(?:\.\d+)?"
# "12*7", "3 + 4", "2^10", "(1+2)/3"; a minus only with spaces or a bracket ("2024-01-05" is a date, not maths)
_ARITHMETIC = re.compile(
    rf"{_NUMBER}\s*(?:\*\*|[+*/^×÷]|\s[x-]\s)\s*\(?-?{_NUMBER}|{_NUMBER}\s*[-+*/^]\s*\("
    rf"|\b(?:what(?:'s| is)|calculate|compute|evaluate)\s+\(?-?{_NUMBER}\s*-\s*{_NUMBER}",
    re.I,
)
_ARITHMETIC_WORDS = re.compile(
    rf"{_NUMBER}\s+(?:times|plus|minus|multiplied by|divided by|over|to the power of|mod(?:ulo)?)\s+-?{_NUMBER}"
    rf"|{_NUMBER}\s+(?:squared|cubed)\b|\b(?:square|cube) root of\s+{_NUMBER}|{_NUMBER}\s*(?:%|percent)\s+of\s+{_NUMBER}"
    rf"|\b(?:sum|product|difference|quotient|average|mean) of\s+{_NUMBER}(?:\s*,\s*{_NUMBER})*\s*,?\s+and\s+{_NUMBER}"
    rf"|\b{_NUMBER}\s*!",
    re.I,
)
_OPERATION = re.compile(
    r"\b(?:derivatives?|differentiate|integrals?|integrate|antiderivative|limit|factori[sz]e|factor|simplify|expand|"
    r"solve|roots?|zeros?|evaluate|calculate|compute)\b",
    re.I,
)
_QUANTITY_QUESTION = re.compile(
    r"\bhow (?:many|much|long|far|old|fast)\b|\bwhat (?:is|was|will be) the (?:total|sum|product|average|cost|price|"
    r"difference|area|perimeter|volume|speed)\b|\bin total\b|\baltogether\b|\bhow .* (?:left|remain)",
    re.I,
)
_NUMBERS = re.compile(rf"(?<![\w.-]){_NUMBER}(?![\w-])")

# Follow-ups: an operation on "it" / the previous result, with no expression of its own.
_FOLLOW_UP_OPERATIONS = {
    "integral": "What is the integral of {}?",
    "integrate": "What is the integral of {}?",
    "antiderivative": "What is the integral of {}?",
    "derivative": "What is the derivative of {}?",
    "differentiate": "What is the derivative of {}?",
    "factor": "Factor {}.",
    "factorise": "Factor {}.",
    "factorize": "Factor {}.",
    "simplify": "Simplify {}.",
    "expand": "Expand {}.",
}
_FOLLOW_UP = re.compile(
    r"\b(integral|integrate|antiderivative|derivative|differentiate|factori[sz]e|factor|simplify|"
    r"expand)\b",
    re.I,
)
_REFERS_TO_RESULT = re.compile(r"\b(?:the|that|this) (?:result|answer)\b", re.I)
_REFERS = re.compile(
    r"\b(?:its?|that|this|the same|the function|the expression)\b|^\s*(?:and|what about|how about|now)\b", re.I
)


def is_code_request(text: str) -> bool:
    """A request to write code ("Write a Python function that ..."), or a message that shows code."""
    return bool(_CODE_SHOWN.search(text) or _CODE_ASKED.search(text))


def is_math_question(text: str) -> bool:
    """A message that asks for something computed: arithmetic (symbols or words), an operation on maths in a
    variable ("derivative of x**3", "Solve x**2 - 5*x + 6 = 0"), or a word problem (two numbers or more and a
    quantity question). Mentioning a number, a date or an operation's name alone is chat."""
    if _ARITHMETIC.search(text) or _ARITHMETIC_WORDS.search(text):
        return True
    shown = [s for s in stated_maths(text) if len(s) > 1]
    if shown and (_OPERATION.search(text) or any("=" in s for s in shown)):
        return True
    return bool(_QUANTITY_QUESTION.search(text) and len(_NUMBERS.findall(text)) >= 2)


def route(text: str, previous: PreviousTurn | None = None) -> Route | None:
    """The tool route of a chat message, or None when it is chat. `previous`: the conversation's last tool turn,
    for follow-ups that refer to it."""
    text = text.strip()
    if is_code_request(text):
        return Route(text, "code")
    if is_math_question(text):
        return Route(text, "math")
    if previous is not None and (rewritten := _follow_up(text, previous)) is not None:
        return Route(rewritten, "math", rewritten_from=text)
    return None


def _follow_up(text: str, previous: PreviousTurn) -> str | None:
    """`text` as a standalone problem on what the previous turn worked on; None if it is no such follow-up."""
    operation = _FOLLOW_UP.search(text)
    if operation is None or not _REFERS.search(text) or any(len(s) > 1 for s in stated_maths(text)):
        return None
    if _REFERS_TO_RESULT.search(text):
        subject = previous.answer
    else:
        expressions = [s for s in stated_maths(previous.problem) if "=" not in s]
        subject = expressions[0] if expressions else None
    if not subject or "\n" in subject:
        return None
    return _FOLLOW_UP_OPERATIONS[operation.group(1).lower()].format(subject)
