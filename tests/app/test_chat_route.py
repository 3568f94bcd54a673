"""The chat's "is this a maths / code question" decision, on phrasings both ways, and follow-up rewriting."""

from __future__ import annotations

import pytest

from app.chat_route import PreviousTurn, Route, route

MATHS = [
    "What is 12 times 7?",
    "what's 12*7",
    "How much is 144 / 12?",
    "Compute 2^10",
    "What is 3 + 4 * 5?",
    "What is (1+2)/3?",
    "what is 10-3?",
    "what is 15% of 80?",
    "What is 9 squared?",
    "What is the square root of 144?",
    "What is the sum of 3, 4 and 5?",
    "What is the derivative of x**3 * sin(x)?",
    "Differentiate x**2 + 3*x",
    "Integrate x*exp(x) from 0 to 1",
    "Solve x**2 - 5*x + 6 = 0",
    "Solve for x: 2*x + 3 = 11",
    "x + y = 10, x - y = 2. What is x?",
    "Factor x**2 - 1",
    "Simplify (x + 1)**2 - x**2",
    "What is the limit of sin(x)/x as x -> 0?",
    "A shirt costs $12 and I buy 3 of them. How much do I pay?",
    "Tom has 5 apples and buys 7 more. How many apples does he have now?",
    "A train goes 60 miles per hour for 3 hours. How far does it go?",
]
CODE = [
    "Write a Python function that reverses a string",
    "write a function is_prime(n)",
    "Implement a program that prints the first 10 primes",
    "Can you give me a python script to count words in a file?",
    "def add(a, b):\n    return a + b\nwhat does this do?",
    "Create a class for a bank account",
]
CHAT = [
    "What is the capital of France?",
    "Hi! How are you today?",
    "Tell me a joke",
    "Who wrote Hamlet?",
    "What is Python?",
    "Tell me about the history of calculus",
    "Explain derivatives in simple terms",
    "Can you solve my problem with my landlord?",
    "Write a poem about the sea",
    "My phone number is 555-1234",
    "I was born on 1990-05-12, remember that",
    "Please remember: my locker code is 4471.",
    "What is my locker code?",
    "What happened in 1969?",
    "I have 2 cats and 3 dogs.",
    "How many legs does a spider have?",
    "Count from 1 to 500, one number per line.",
    "Why is the sky blue?",
]


@pytest.mark.parametrize("text", MATHS)
def test_maths_questions_go_to_the_tools(text):
    assert route(text) == Route(text, "math")


@pytest.mark.parametrize("text", CODE)
def test_code_requests_go_to_the_tools(text):
    assert route(text) == Route(text, "code")


@pytest.mark.parametrize("text", CHAT)
def test_chat_stays_with_the_chat_model(text):
    assert route(text) is None
    assert route(text, PreviousTurn("What is the derivative of x**3 * sin(x)?", "x**3*cos(x) + 3*x**2*sin(x)")) is None


@pytest.mark.parametrize(
    ("follow_up", "problem"),
    [
        ("and its integral?", "What is the integral of x**3 * sin(x)?"),
        ("What about the derivative of it?", "What is the derivative of x**3 * sin(x)?"),
        ("now integrate it", "What is the integral of x**3 * sin(x)?"),
        ("and factor the result", "Factor x**3*cos(x) + 3*x**2*sin(x)."),
    ],
)
def test_a_follow_up_is_rewritten_from_the_previous_tool_turn(follow_up, problem):
    previous = PreviousTurn("What is the derivative of x**3 * sin(x)?", "x**3*cos(x) + 3*x**2*sin(x)")
    assert route(follow_up, previous) == Route(problem, "math", rewritten_from=follow_up)


def test_a_follow_up_without_a_previous_tool_turn_is_chat():
    assert route("and its integral?") is None
    previous = PreviousTurn("What is 12 times 7?", "84")  # nothing in a variable to integrate
    assert route("and its integral?", previous) is None
    # an expression of its own is a new question, not a follow-up
    assert route("and the integral of x**2?", PreviousTurn("Differentiate x**3", "3*x**2")) == Route(
        "and the integral of x**2?", "math"
    )
