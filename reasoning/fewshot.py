"""Few-shot examples, chosen per problem: the pool's examples most similar to the problem, most similar last.

A 135M model copies the shape of the nearest example far more reliably than it follows an instruction, and
it copies the most recent one most: with one fixed list it wrote "Solve" for "What is 20% of 150?" because the
equation examples came last. So each task type keeps a pool covering its kinds of problem, and the prompt shows
the `k` closest by word overlap (numbers count as one word, "#"), in a fixed order for a given problem.

The examples are ours, written for this purpose; none is an item of a benchmark set.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    problem: str
    solution: str  # the steps, one per line, as the model should write them


def nearest(pool: Sequence[Example], problem: str, k: int) -> list[Example]:
    """The `k` examples of `pool` closest to `problem`, least similar first (ties keep pool order)."""
    words = _words(problem)
    scored = sorted(range(len(pool)), key=lambda i: (-_similarity(words, _words(pool[i].problem)), i))
    return [pool[i] for i in reversed(scored[:k])]


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+|#|%|\*\*|[*/+-]", re.sub(r"\d+(?:\.\d+)?", " # ", text.lower())))


def _similarity(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


MATH_EXAMPLES = (
    Example("What is 15 times 4?", 'Calc: {"expression": "15*4"} => 60\nAnswer: 60'),
    Example("What is 245 plus 378?", 'Calc: {"expression": "245 + 378"} => 623\nAnswer: 623'),
    Example("What is 96 divided by 8?", 'Calc: {"expression": "96/8"} => 12\nAnswer: 12'),
    Example(
        "Tom has 3 boxes of 12 apples and eats 5 apples. How many apples are left?",
        'Calc: {"expression": "3*12 - 5"} => 31\nAnswer: 31',
    ),
    Example(
        "A baker sells 24 muffins a day at 3 dollars each. How many dollars does she make in 5 days?",
        'Calc: {"expression": "24*3"} => 72\nCalc: {"expression": "72*5"} => 360\nAnswer: 360',
    ),
    Example(
        "Sara had 45 stickers. She gave 12 to her brother and then bought 20 more. How many stickers does she "
        "have now?",
        'Calc: {"expression": "45 - 12"} => 33\nCalc: {"expression": "33 + 20"} => 53\nAnswer: 53',
    ),
    Example(
        "A farmer has 6 rows of 8 trees. Half of the trees are apple trees. How many apple trees are there?",
        'Calc: {"expression": "6*8"} => 48\nCalc: {"expression": "48/2"} => 24\nAnswer: 24',
    ),
    Example("What is 30% of 70?", 'Calc: {"expression": "30/100*70"} => 21\nAnswer: 21'),
    Example(
        "A shirt costs 40 dollars and is 25% off. What is the sale price?",
        'Calc: {"expression": "40 - 40*25/100"} => 30\nAnswer: 30',
    ),
    Example(
        "A salary rises from 200 to 260 dollars. By what percent did it rise?",
        'Calc: {"expression": "(260 - 200)/200*100"} => 30\nAnswer: 30',
    ),
    Example(
        "A school of 500 students grows by 20%. How many students does it have now?",
        'Calc: {"expression": "500 + 500*20/100"} => 600\nAnswer: 600',
    ),
    Example(
        "4 pens cost 6 dollars. How many dollars do 10 pens cost?", 'Calc: {"expression": "6/4*10"} => 15\nAnswer: 15'
    ),
    Example(
        "A train goes 150 km in 2 hours. What is its speed in km per hour?",
        'Calc: {"expression": "150/2"} => 75\nAnswer: 75',
    ),
    Example(
        "4 kg of rice cost 10 dollars. What is the price per kg?", 'Calc: {"expression": "10/4"} => 5/2\nAnswer: 5/2'
    ),
    Example(
        "A plumber earns 120 dollars in 4 hours. How many dollars does he earn per hour?",
        'Calc: {"expression": "120/4"} => 30\nAnswer: 30',
    ),
    Example(
        "A pump moves 20 liters in 5 minutes. How many liters does it move in 8 minutes?",
        'Calc: {"expression": "20/5*8"} => 32\nAnswer: 32',
    ),
    Example("Solve 3*x - 2 = 10 for x.", 'Solve: {"equations": ["3*x - 2 = 10"]} => x = 4\nAnswer: x = 4'),
    Example("Solve 3*(x - 1) = x + 5 for x.", 'Solve: {"equations": ["3*(x - 1) = x + 5"]} => x = 4\nAnswer: x = 4'),
    Example(
        "Solve x**2 - 3*x + 2 = 0 for x.",
        'Solve: {"equations": ["x**2 - 3*x + 2 = 0"]} => x = 1; x = 2\nAnswer: x = {1, 2}',
    ),
    Example(
        "Solve cos(x) = 1 for x in the interval [0, 4*pi].",
        'Solve: {"equations": ["cos(x) = 1", "x >= 0", "x <= 4*pi"]} => x = 0; x = 2*pi; x = 4*pi\n'
        "Answer: x = {0, 2*pi, 4*pi}",
    ),
    Example("Solve 2*x - 1 > 5 for x.", 'Solve: {"equations": ["2*x - 1 > 5"]} => x > 3\nAnswer: x > 3'),
    Example(
        "Solve the system x + y = 5, x - y = 1. What is y?",
        'Solve: {"equations": ["x + y = 5", "x - y = 1"]} => x = 3, y = 2\nAnswer: y = 2',
    ),
    Example(
        "Solve the system 2*a + b = 7, a = b + 2. What is a?",
        'Solve: {"equations": ["2*a + b = 7", "a = b + 2"]} => a = 3, b = 1\nAnswer: a = 3',
    ),
    Example(
        "What is the derivative of x**3 + x with respect to x?",
        'Diff: {"expression": "x**3 + x", "variable": "x"} => 3*x**2 + 1\nAnswer: 3*x**2 + 1',
    ),
    Example(
        "What is the derivative of cos(3*x) with respect to x?",
        'Diff: {"expression": "cos(3*x)", "variable": "x"} => -3*sin(3*x)\nAnswer: -3*sin(3*x)',
    ),
    Example(
        "What is the integral of 3*x**2 with respect to x (no constant)?",
        'Integrate: {"expression": "3*x**2", "variable": "x"} => x**3\nAnswer: x**3',
    ),
    Example(
        "What is the definite integral of 4*x from 1 to 2?",
        'Integrate: {"expression": "4*x", "variable": "x", "lower": "1", "upper": "2"} => 6\nAnswer: 6',
    ),
    Example(
        "What is the limit of sin(2*x)/x as x approaches 0?",
        'Limit: {"expression": "sin(2*x)/x", "point": "0", "variable": "x"} => 2\nAnswer: 2',
    ),
    Example(
        "What is the limit of (x**2 - 4)/(x + 2) as x approaches 1?",
        'Limit: {"expression": "(x**2 - 4)/(x + 2)", "point": "1", "variable": "x"} => -1\nAnswer: -1',
    ),
    Example(
        "What is the limit of (5*x + 1)/x as x approaches infinity?",
        'Limit: {"expression": "(5*x + 1)/x", "point": "oo", "variable": "x"} => 5\nAnswer: 5',
    ),
    Example("Factor x**2 - 4.", 'Factor: {"expression": "x**2 - 4"} => (x - 2)*(x + 2)\nAnswer: (x - 2)*(x + 2)'),
    Example(
        "Factor x**2 + 3*x + 2.", 'Factor: {"expression": "x**2 + 3*x + 2"} => (x + 1)*(x + 2)\nAnswer: (x + 1)*(x + 2)'
    ),
    Example("Simplify 3*a + 2*a - a.", 'Simplify: {"expression": "3*a + 2*a - a"} => 4*a\nAnswer: 4*a'),
    Example("Simplify (x**2 - 1)/(x + 1).", 'Simplify: {"expression": "(x**2 - 1)/(x + 1)"} => x - 1\nAnswer: x - 1'),
)

CODE_EXAMPLES = (
    Example(
        'def double(x: int) -> int:\n    """ Return twice x.\n    >>> double(4)\n    8\n    """',
        "Answer:\n```python\ndef double(x: int) -> int:\n    return 2 * x\n```",
    ),
    Example(
        'from typing import List\n\n\ndef count_evens(numbers: List[int]) -> int:\n    """ Count the even numbers '
        'in the list.\n    >>> count_evens([1, 2, 4])\n    2\n    """',
        'Run: {"code": "print([n for n in [1, 2, 4] if n % 2 == 0])"} => [2, 4]\nAnswer:\n```python\n'
        "def count_evens(numbers: List[int]) -> int:\n    count = 0\n    for n in numbers:\n        if n % 2 == 0:\n"
        "            count += 1\n    return count\n```",
    ),
    Example(
        'def first_word(text: str) -> str:\n    """ Return the first word of text, or an empty string.\n'
        '    >>> first_word("hello big world")\n    \'hello\'\n    """',
        "Answer:\n```python\ndef first_word(text: str) -> str:\n    words = text.split()\n"
        "    return words[0] if words else ''\n```",
    ),
    Example(
        "Write a function is_palindrome(text) that returns True when text reads the same backwards.",
        "Answer:\n```python\ndef is_palindrome(text):\n    return text == text[::-1]\n```",
    ),
)
