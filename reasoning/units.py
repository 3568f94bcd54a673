"""Dimensional analysis of a word problem's arithmetic: a check that needs no ground truth.

Each number a word problem states carries the unit written with it ("45 pages", "3 minutes", "$12", "25%"), and
the question names the unit of the answer ("How many pages", "price per kg", "By what percent"). A Calc step's
expression, with every number replaced by its quantity, must add only like units, and the step that computed the
answer must come out in the unit asked for. So for "A printer prints 45 pages in 3 minutes. How many pages in 8
minutes?" `45*8/3` (pages) passes and `45*3*8` (page minute²) does not; for "What is 20% of 150?" `20/100*150`
passes and `20*150` (a percentage of 150, not a number) does not: a percent is a unit that the 100 of "per
cent" cancels.

The check only judges what it can read. A number whose unit it cannot tell ("3 more", a conversion such as 60
minutes an hour, a number the problem states twice with different units) or a question that names no unit
leaves the verdict to the other layers (None: no verdict). `StepValidity` (reward.py) counts a step with a
False verdict as invalid, so its path does not vote in the agreement layer.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache

from reasoning.grounding import canonical_number, spelled_numbers, unit_constants
from reasoning.steps import MATH_TOOLS, Step, answer_of
from tools.math import MathToolError, arithmetic

Unit = tuple[tuple[str, int], ...]  # sorted (unit, power) pairs; () is a plain number
PERCENT = "percent"
_PLAIN: Unit = ()
_CURRENCIES = {"dollar", "cent", "euro"}
_LENGTHS = {"km", "kilometer", "mile", "meter", "metre", "foot", "yard", "inch", "cm"}
# units of measure (as opposed to counted things, "3 red hats and 4 blue hats", which a sum may mix freely)
_MEASURES = {
    *_CURRENCIES,
    *_LENGTHS,
    PERCENT,
    "second",
    "minute",
    "hour",
    "day",
    "week",
    "month",
    "year",
    "kg",
    "kilogram",
    "gram",
    "pound",
    "lb",
    "ounce",
    "liter",
    "litre",
    "gallon",
    "ml",
    "milliliter",
}
_ABBREVIATIONS = {
    "hr": "hour",
    "hrs": "hour",
    "h": "hour",
    "min": "minute",
    "mins": "minute",
    "sec": "second",
    "secs": "second",
    "kms": "km",
    "kgs": "kg",
    "lbs": "lb",
}
_IRREGULAR = {
    "people": "person",
    "feet": "foot",
    "children": "child",
    "men": "man",
    "women": "woman",
    "teeth": "tooth",
    "mice": "mouse",
    "geese": "goose",
}
# after a number, these end the quantity with a plain number ("from 40 to 50", "3 times as many")
_PLAIN_AFTER = {"to", "and", "or", "times", "than", "from"}
# ... and these hide the unit, or the word after a number is no unit at all: no verdict on that number
_NO_UNIT = {
    "more",
    "fewer",
    "less",
    "each",
    "of",
    "in",
    "at",
    "for",
    "per",
    "a",
    "an",
    "the",
    "is",
    "are",
    "was",
    "were",
    "other",
    "new",
    "extra",
    "additional",
    "another",
    "on",
    "with",
    "by",
    "as",
    "that",
    "this",
    "he",
    "she",
    "it",
    "they",
    "we",
    "you",
    "i",
    "his",
    "her",
    "their",
    "its",
    "if",
    "so",
    "then",
    "but",
    "will",
    "would",
    "can",
    "has",
    "have",
    "had",
    "do",
    "does",
    "did",
    "be",
    "been",
}
_QUANTITY = re.compile(r"(\$)?\s?(\d+(?:\.\d+)?)(?:\s*(%)|[ -]?(?:per ?cent\b|([A-Za-z]+)))?")
# a rate written with the unit ("5 arms each", "$12 an hour", "4 hours for every game"): its unit is per something
_RATE_AFTER = re.compile(r"\s*/|\s+(?:each|apiece|per|every|for every|for each|a|an)\b", re.I)
_RATE_UNITS = {"mph", "kph", "kmh", "rpm", "wpm", "bpm", "st", "nd", "rd", "th"}  # rates, and ordinals ("2nd")
_RATE_WORDS = {"each", "apiece", "per", "every", "a", "an"}
# the wording after a quantity that makes it a rate: "each"/"apiece" (per counted thing), or "per"/"for each" and
# the unit it is per ("$12 an hour", "30 minutes every day" stay unknown: "$60000 a year" is often one year's pay)
_RATE_NAMED = re.compile(r"\s+(?:(each|apiece)\b|(?:per|for each)\s+([A-Za-z]+)\b)", re.I)
_VAGUE = {"few", "lot", "little", "bit", "total", "single", "piece", "new", "half", "quarter", "couple", "dozen"}
EACH = "each"  # a rate's "each": per whatever counted thing it multiplies
_MONEY_WORDS = re.compile(
    r"\bhow much (?:money|does|do|did|will|is|are|was|would|should|can)\b|"
    r"\b(?:price|cost|costs|spend|spent|pay|pays|paid|earn|earns|earned|charge|charges)\b"
)


def singular(word: str) -> str:
    """A unit word in one spelling: lower case, singular, abbreviations spelled out ("Hours", "hrs" -> "hour")."""
    word = word.lower()
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word in _ABBREVIATIONS:
        return _ABBREVIATIONS[word]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if re.search(r"(?:ch|sh|x|ss)es$", word):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and len(word) > 2:
        return word[:-1]
    return word


@lru_cache(maxsize=1024)
def stated_units(problem: str) -> dict[str, frozenset[Unit | None]]:
    """Each number the problem writes -> the units it is written with (None: cannot tell). A rate is read where
    its wording names both sides: "8 dollars each" is dollars per counted thing, "40 bolts per hour" and "$9 for
    each hour" are per hour; "60 km/h", "$12 an hour" or "5 each" (no unit before "each") stay unknown."""
    units: dict[str, set[Unit | None]] = {}
    for match in _QUANTITY.finditer(problem):
        dollar, number, percent, word = match.groups()
        rate_word = word is not None and word.lower() in _RATE_WORDS
        if dollar:
            base: Unit | None = (("dollar", 1),)
            rest = match.end(2)
        elif (
            word is not None
            and not rate_word
            and word.lower() not in _NO_UNIT | _PLAIN_AFTER | _RATE_UNITS
            and not percent
        ):
            base, rest = ((singular(word), 1),), match.end()
        else:
            base, rest = None, match.end(2)
        if _RATE_AFTER.match(problem, match.end(2)) or _RATE_AFTER.match(problem, match.end()):
            unit: Unit | None = _rate(base, problem, rest)
        elif percent or re.match(r"[ -]?per ?cent", problem[match.end(2) : match.end()]):
            unit = ((PERCENT, 1),)
        elif dollar:
            unit = base
        elif word is None:
            unit = _PLAIN  # "... 150?", "50."
        elif word.lower() in _PLAIN_AFTER:
            unit = _PLAIN
        else:
            unit = base
        units.setdefault(canonical_number(number), set()).add(unit)
    return {number: frozenset(found) for number, found in units.items()}


def _rate(base: Unit | None, problem: str, at: int) -> Unit | None:
    """The unit of a rate whose wording starts at `at`: `base` per the thing it names ("each": per counted thing,
    `EACH`); None where either side is not named."""
    per = _RATE_NAMED.match(problem, at)
    if base is None or per is None:
        return None
    if per.group(1):
        return _combine(base, ((EACH, 1),), -1)
    thing = per.group(2).lower()
    if thing in _NO_UNIT or thing in _VAGUE:
        return None
    return _combine(base, ((singular(thing), 1),), -1)


def _question(problem: str) -> str:
    sentences = [s for s in re.split(r"(?<=[.?!])\s+", problem.strip()) if s]
    asked = [s for s in sentences if s.endswith("?")]
    return (asked or sentences or [""])[-1]


@lru_cache(maxsize=1024)
def asked_unit(problem: str) -> Unit | None:
    """The unit the question asks for, where its wording names one the problem uses; None where it does not."""
    question = _question(problem).lower()
    known = {name for found in stated_units(problem).values() for unit in found if unit for name, _ in unit}
    currencies = known & _CURRENCIES
    currency = next(iter(currencies)) if len(currencies) == 1 else None
    if re.search(r"\bwhat percent|\bwhat percentage|\bhow many percent", question):
        return ((PERCENT, 1),)
    of = re.search(r"(\d+(?:\.\d+)?)\s*%\s*of\s+\$?(\d+(?:\.\d+)?)", question)
    if of:  # "What is 20% of 150?": the unit of the 150
        units = stated_units(problem).get(canonical_number(of.group(2)), frozenset())
        return next(iter(units)) if len(units) == 1 else None
    rate = re.search(r"\b([a-z]+) per ([a-z]+)\b", question)
    if rate:
        numerator, denominator = singular(rate.group(1)), singular(rate.group(2))
        if numerator not in known:
            numerator = currency if _MONEY_WORDS.search(question) or rate.group(1) == "much" else None
        if numerator is None or denominator not in known or numerator == denominator:
            return None
        return tuple(sorted(((numerator, 1), (denominator, -1))))
    if re.search(r"\b(?:each|every|average|apiece)\b", question):
        return None  # "how much did each book cost": a rate whose per-unit the wording leaves implicit
    many = re.search(r"\bhow many ([a-z]+)", question)
    if many:
        unit = singular(many.group(1))
        return ((unit, 1),) if unit in known else None
    if re.search(r"\bhow (?:far|long a distance)\b", question):
        lengths = known & _LENGTHS
        return ((lengths.pop(), 1),) if len(lengths) == 1 else None
    if currency and _MONEY_WORDS.search(question):
        return ((currency, 1),)
    return None


class _Unknown(Exception):
    """A number whose unit cannot be told: no verdict."""


class _Mismatch(Exception):
    """Unlike units added, or a unit raised to a power that is not a plain whole number."""


def expression_unit(expression: str, problem: str, results: Mapping[str, Unit | None] | set[str]) -> Unit | None | bool:
    """The unit of a Calc expression; False where it adds unlike measures; None where it cannot be told.

    `results`: earlier tool results (canonical numbers), each with the unit of the call that computed it where that
    was known (a set: none known). So "3 dollars each" times "7 notebooks" is 21 dollars, and 21 times 7 again is
    dollar notebooks, not the dollars asked for. A result whose unit was not known stays unknown: a chain of steps
    multiplies counted things whose relation the wording leaves implicit ("4 trips ... 12 people during one trip").
    """
    if not isinstance(results, Mapping):
        results = dict.fromkeys(results)
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval").body
        unit = _unit(tree, problem, results)
    except _Mismatch:
        return False
    except (_Unknown, SyntaxError, RecursionError):
        return None
    return None if any(name == EACH for name, _ in unit) else unit


def _unit(node: ast.AST, problem: str, results: Mapping[str, Unit | None]) -> Unit:
    """The unit of an arithmetic node."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return _number_unit(node.value, problem, results)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return _unit(node.operand, problem, results)
    if isinstance(node, ast.BinOp):
        left, right = _unit(node.left, problem, results), _unit(node.right, problem, results)
        if isinstance(node.op, (ast.Add, ast.Sub)):
            if left != right:  # unlike measures (dollars and percent) are a mistake; counted things, no verdict;
                # a rate and a total ("$9 per hour" and "$20") are often one hour's worth in the wording: no verdict
                rate = any(power < 0 for _, power in (*left, *right))
                raise _Mismatch if _measure(left) and _measure(right) and not rate else _Unknown
            return left
        if isinstance(node.op, (ast.Mult, ast.Div)):
            return _combine(left, right, 1 if isinstance(node.op, ast.Mult) else -1)
        if isinstance(node.op, ast.Pow):
            exponent = _plain_value(node.right) if right == _PLAIN else None
            if exponent is None or exponent != int(exponent):
                raise _Mismatch if left != _PLAIN else _Unknown
            return tuple((name, power * int(exponent)) for name, power in left)
    raise _Unknown


def _plain_value(node: ast.AST) -> float | None:
    """The value of a plain-number exponent (tools.math's evaluator); None where it has none."""
    try:
        return arithmetic(ast.unparse(node))
    except MathToolError:
        return None


def _measure(unit: Unit) -> bool:
    return bool(unit) and all(name in _MEASURES for name, _ in unit)


def _combine(left: Unit, right: Unit, sign: int) -> Unit:
    """The unit of a product (sign 1) or quotient (-1). A rate's "each" cancels against one counted thing (not a
    measure): "8 dollars each" times "5 tickets" is dollars."""
    powers = dict(left)
    for name, power in right:
        powers[name] = powers.get(name, 0) + sign * power
    if powers.get(EACH) == -1:
        counted = [name for name, power in powers.items() if power == 1 and name != EACH and name not in _MEASURES]
        if len(counted) == 1:
            del powers[EACH], powers[counted[0]]
    return tuple(sorted((name, power) for name, power in powers.items() if power))


def _number_unit(value: float, problem: str, results: Mapping[str, Unit | None]) -> Unit:
    number = canonical_number(repr(value) if isinstance(value, float) else str(value))
    candidates = set(stated_units(problem).get(number, ()))
    if number in results:
        candidates.add(results[number])
    if number == "100" and (PERCENT in problem.lower() or "%" in problem):
        candidates.add(((PERCENT, 1),))  # the 100 of "per cent": 25 percent / 100 percent is a plain 0.25
    elif number in spelled_numbers(problem) | unit_constants(problem):  # "half", "60 minutes an hour": unit unknown
        candidates.add(None)
    if len(candidates) != 1 or None in candidates:
        raise _Unknown
    return candidates.pop()


def units_ok(step: Step, problem: str, before: Sequence[Step]) -> bool:
    """False where a word problem's step breaks dimensional analysis: a Calc call that adds unlike units, or an
    answer computed in a unit other than the one the question asks for. True where it holds or no verdict."""
    if step.kind == "tool":
        return _calc_unit(step, problem, before) is not False
    answer = answer_of(step)
    asked = asked_unit(problem)
    if answer is None or asked is None:
        return True
    for i in range(len(before) - 1, -1, -1):  # the call that computed the answer
        if (
            before[i].kind == "tool"
            and before[i].tool_output is not None
            and canonical_number(before[i].tool_output.strip()) == canonical_number(answer)
        ):
            unit = _calc_unit(before[i], problem, before[:i])
            return unit is None or unit == asked
    return True


def _calc_unit(step: Step, problem: str, before: Sequence[Step]) -> Unit | None | bool:
    """The unit of a Calc step's result (None: no verdict, False: unlike units added)."""
    if step.tool != MATH_TOOLS["Calc"] or not step.tool_ok or not step.text.startswith("Calc:"):
        return None
    expression = _expression(step)
    if expression is None or re.search(r"[A-Za-z]", expression):
        return None
    return expression_unit(expression, problem, _result_units(problem, tuple(before)))


def _result_units(problem: str, before: tuple[Step, ...]) -> dict[str, Unit | None]:
    """Each earlier tool result (canonical number) -> the unit its call computed, where that call used a price each
    and came out in one unit to the first power; None otherwise, or where two calls gave the same number in
    different units."""
    results: dict[str, Unit | None] = {}
    for i, earlier in enumerate(before):
        if not earlier.tool_output:
            continue
        unit = _calc_unit(earlier, problem, before[:i])
        number = canonical_number(earlier.tool_output.strip())
        # only a total from a price each ("3 dollars each" x "7 notebooks" = 21 dollars, in one plain unit): other
        # chains relate counted things implicitly ("4 trips" x "12 people"; "12 pages" in "one hour"), so their
        # units say nothing
        known = (
            unit
            if isinstance(unit, tuple) and len(unit) == 1 and unit[0][1] == 1 and _uses_each(earlier, problem)
            else None
        )
        results[number] = known if results.get(number, known) == known else None
    return results


def _uses_each(step: Step, problem: str) -> bool:
    """Whether a Calc call uses a number the problem states as a price or amount "each"."""
    stated = stated_units(problem)
    return any(
        unit is not None and any(name == EACH for name, _ in unit)
        for number in re.findall(r"\d+(?:\.\d+)?", _expression(step) or "")
        for unit in stated.get(canonical_number(number), ())
    )


def _expression(step: Step) -> str | None:
    try:
        arguments = json.loads(step.tool_input or "{}")
    except ValueError:
        return None
    expression = arguments.get("expression") if isinstance(arguments, dict) else None
    return expression if isinstance(expression, str) else None
