"""Dimensional analysis of word-problem arithmetic (reasoning/units.py), on its own and inside the reward."""

from __future__ import annotations

import json
import re

import pytest

from reasoning.grounding import cancelled_number, canonical_number
from reasoning.reward import LayeredReward, Problem
from reasoning.search import Path, SearchBudget, best_path, score
from reasoning.steps import Step, parse_step
from reasoning.units import asked_unit, expression_unit, stated_units, units_ok
from tests.model.test_default_model import GSM8K


def calc(expression: str) -> Step:
    return parse_step(json.dumps({"expression": expression}).join(["Calc: ", ""]))


def answer_ok(problem: str, expression: str) -> bool:
    """The verdict on answering with what `expression` computed (the call itself must pass too)."""
    step = calc(expression)
    return units_ok(step, problem, []) and units_ok(parse_step("Answer: " + step.tool_output), problem, [step])


def test_stated_units_reads_the_unit_written_with_each_number():
    units = stated_units("A jacket costs $60 and is 25% off; 3 kg of apples, 2 hours, from 40 to 50.")
    assert units["60"] == {(("dollar", 1),)} and units["25"] == {(("percent", 1),)}
    assert units["3"] == {(("kg", 1),)} and units["2"] == {(("hour", 1),)}
    assert units["40"] == {()} and units["50"] == {()}  # "from 40 to 50": plain numbers
    rates = stated_units("Cards cost $1.25 each; she earns $9 per hour and 12 dollars an hour; he buys 3 more.")
    assert rates["1.25"] == {(("dollar", 1), ("each", -1))}  # dollars per whatever counted thing it multiplies
    assert rates["9"] == {(("dollar", 1), ("hour", -1))} and rates["3"] == {None}  # "3 more": the unit unsaid
    assert rates["12"] == {None}  # "an hour": "$60000 a year" is as often one year's pay as a rate
    assert stated_units("Pies sell for 5 each and bakers work 8 hours a day.")["5"] == {None}  # no unit before "each"
    assert stated_units("He reads 20 pages for each hour.")["20"] == {(("hour", -1), ("page", 1))}
    speeds = stated_units("It drives at 60 km/h, then 50 mph, on the 2nd day.")
    assert speeds["60"] == speeds["50"] == speeds["2"] == {None}
    assert stated_units("5 pencils and 20 Pencils; 4 boxes; 2 people")["20"] == {(("pencil", 1),)}
    assert stated_units("4 boxes; 2 people")["2"] == {(("person", 1),)}


@pytest.mark.parametrize(
    ("problem", "unit"),
    [
        ("What is 20% of 150?", ()),
        ("A price rises from 40 to 50. By what percent did it rise?", (("percent", 1),)),
        ("5 pencils cost 2 dollars. How many dollars do 20 pencils cost?", (("dollar", 1),)),
        ("A worker earns 90 dollars in 6 hours. How much per hour?", (("dollar", 1), ("hour", -1))),
        ("3 kg of apples cost 7.5 dollars. What is the price per kg?", (("dollar", 1), ("kg", -1))),
        ("A car travels 180 km in 3 hours. What is its speed in km per hour?", (("hour", -1), ("km", 1))),
        ("A cyclist rides 48 km in 2 hours. How far in 5 hours at the same speed?", (("km", 1),)),
        ("A jacket costs 60 dollars and is 25% off. What is the sale price?", (("dollar", 1),)),
        ("A town of 2000 people grows by 10%. What is the new population?", None),  # no unit named
        ("Fred had 236 dollars for 6 books and 14 dollars left. On average, how much did each book cost?", None),
        ("Sam has 3 red apples. How many apples are there?", None),  # "red" is what the problem wrote after 3
    ],
)
def test_asked_unit_is_read_from_the_question_only_where_it_names_one(problem, unit):
    assert asked_unit(problem) == unit


def test_percent_is_a_unit_that_the_hundred_cancels():
    assert not answer_ok("What is 20% of 150?", "20*150")
    assert answer_ok("What is 20% of 150?", "20/100*150") and answer_ok("What is 20% of 150?", "150*20/100")
    jacket = "A jacket costs 60 dollars and is 25% off. What is the sale price?"
    assert not units_ok(calc("100 - 60*25/100"), jacket, [])  # percent minus dollars
    assert answer_ok(jacket, "60 - 60*25/100") and answer_ok(jacket, "60*(100 - 25)/100")
    rise = "A price rises from 40 to 50. By what percent did it rise?"
    assert answer_ok(rise, "(50 - 40)/40*100") and not answer_ok(rise, "50 - 40")


@pytest.mark.parametrize(
    ("problem", "right", "wrong"),
    [
        ("A printer prints 45 pages in 3 minutes. How many pages in 8 minutes?", "45*8/3", "45*3*8"),
        ("A worker earns 90 dollars in 6 hours. How much per hour?", "90/6", "90*6"),
        ("3 kg of apples cost 7.5 dollars. What is the price per kg?", "7.5/3", "3/3"),
        ("12 eggs cost 3 dollars. How many dollars do 30 eggs cost?", "3/12*30", "30*3"),
        ("A cyclist rides 48 km in 2 hours. How far in 5 hours at the same speed?", "48/2*5", "48/2"),
    ],
)
def test_a_rate_answer_must_come_out_in_the_unit_asked(problem, right, wrong):
    assert answer_ok(problem, right) and not answer_ok(problem, wrong)


def test_no_verdict_where_the_units_cannot_be_told():
    pets = "Ed has 2 dogs and 3 cats. How many pets does Ed have?"
    assert units_ok(calc("2 + 3"), pets, [])  # counted things may be added
    assert not units_ok(calc("2 + 3"), "It costs $2 and takes 3 hours. What is the total?", [])  # measures may not
    half = "A pound of cheese costs half the price of 2 pounds at $10. How much is the cheese?"
    assert answer_ok(half, "10/2")  # 2 is both "2 pounds" and "half": no verdict
    first = calc("45*3")
    follow = "A printer prints 45 pages in 3 minutes. How many pages in 8 minutes?"
    chained = calc("135*8")
    assert units_ok(parse_step("Answer: 1080"), follow, [first, chained])  # an earlier result's unit is not tracked
    # ... unless it is a total from a price each (test_a_price_each_times_a_count_...)
    assert answer_ok("Factor x**2 + 5*x + 6.", "2 + 3")  # no unit anywhere
    big = "It costs 999999999 dollars for 0 hours. What is the price?"
    for overflowing in ("999999999**63", "0**-1", "999999999**2**3"):
        assert expression_unit(overflowing, big, set()) is None


def test_a_price_each_times_a_count_is_money_and_multiplying_by_the_count_again_is_caught():
    problem = "Pencils cost 4 dollars each. Ben buys 6 pencils. How many dollars does he spend?"
    first = calc("4*6")
    assert units_ok(first, problem, []) and units_ok(parse_step("Answer: 24"), problem, [first])
    again = calc("24*6")  # dollar pencils, not dollars
    assert not units_ok(parse_step("Answer: 144"), problem, [first, again])
    rate = "A pump moves 30 liters per minute. How many liters does it move in 4 minutes?"
    assert answer_ok(rate, "30*4") and not answer_ok(rate, "30/4")
    assert expression_unit("4*6", "Pies cost $4 each. She sells 6. How much money does she make?", set()) is None


def test_wrong_units_lose_validity_and_their_vote():
    problem = Problem("What is 20% of 150?", "math")
    paths = [Path([], [calc("20*150"), parse_step("Answer: 3000")]) for _ in range(3)]
    paths.append(Path([], [calc("20/100*150"), parse_step("Answer: 30")]))
    score(paths, problem, LayeredReward(), SearchBudget(tokens=600))
    assert paths[0].reward["validity"] == 0.5 and paths[-1].reward["validity"] == 1.0
    assert best_path(paths).answer == "30"  # three popular wrong answers no longer outvote it


def gsm8k_gold(limit: int) -> list[tuple[str, list[Step]]]:
    """The first `limit` GSM8K train problems with their gold solutions as steps: each <<calculation=result>> a
    Calc step, then the answer."""
    solved = []
    for line in GSM8K.read_text().splitlines()[:limit]:
        row = json.loads(line)
        steps = [
            Step(
                "tool",
                f"Calc: {json.dumps({'expression': e})} => {r}",
                "math_simplify",
                json.dumps({"expression": e}),
                r.strip(),
            )
            for e, r in re.findall(r"<<([^=<>]+)=([^<>]+)>>", row["answer"])
        ]
        steps.append(Step("answer", "Answer: " + row["answer"].split("####")[-1].strip().replace(",", "")))
        solved.append((row["question"], steps))
    return solved


@pytest.mark.skipif(not GSM8K.exists(), reason="needs ../shared/datasets/gsm8k")
def test_no_step_of_a_gsm8k_gold_solution_is_rejected():
    """The check must not reject right arithmetic: every calculation of the first 2000 gold solutions passes. It is
    conservative: only one of those answers (multi-step, mostly) gets a unit verdict at all."""
    solved = gsm8k_gold(2000)
    rejected = [
        question for question, steps in solved if not all(units_ok(s, question, steps[:i]) for i, s in enumerate(steps))
    ]
    assert rejected == []
    judged = 0
    for question, steps in solved:
        computed = [
            i
            for i, s in enumerate(steps[:-1])
            if canonical_number(s.tool_output) == canonical_number(steps[-1].text.removeprefix("Answer: "))
        ]
        if asked_unit(question) is not None and computed:
            results = {canonical_number(s.tool_output) for s in steps[: computed[-1]]}
            judged += isinstance(
                expression_unit(json.loads(steps[computed[-1]].tool_input)["expression"], question, results), tuple
            )
    assert judged == 1


@pytest.mark.skipif(not GSM8K.exists(), reason="needs ../shared/datasets/gsm8k")
def test_a_cancelled_number_is_a_rare_slip_in_gsm8k_gold_solutions():
    """The figure docs/BENCHMARKS.md gives for grounding's cancelled-number rule: 22 of the 6,336 gold
    calculations of the first 2000 problems ("3*(2/3)", "60/60") write a number that cancels out."""
    calculations = [s.tool_input for _, steps in gsm8k_gold(2000) for s in steps if s.kind == "tool"]
    cancelled = [c for c in calculations if cancelled_number(json.loads(c)["expression"]) is not None]
    assert (len(cancelled), len(calculations)) == (22, 6336)
