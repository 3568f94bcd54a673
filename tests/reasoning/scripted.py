"""A tiny deterministic policy for the search tests: an engine that answers each request from a script."""

from __future__ import annotations

from collections.abc import Callable

from model import Completion


class CharTokenizer:
    eos_token_ids = ()

    def encode(self, text: str, add_bos=None) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids) -> str:
        return "".join(chr(i) for i in ids)


Script = Callable[[list[str], int, bool], str]  # (steps written so far, request seed, greedy?) -> the next step


class ScriptedEngine:
    """Writes the next step of each path as `script` says; records every batch (for batching assertions).

    A path's steps are the lines after the last "Problem: ..." line of its prompt. Half of each prompt counts as
    served from the prefix cache, so token accounting has something to add up.
    """

    name = "scripted"  # what the path cache keys its solutions by (Backend.name)
    grammar_compiler = None  # like a server's: steps are free text cut at stop strings, even when constrained

    def __init__(self, script: Script) -> None:
        self.tokenizer = CharTokenizer()
        self.script = script
        self.batches: list[list[list[str]]] = []  # per generate_batch call: the steps so far of each path
        self.task_types: set[str | None] = set()  # the task_type of every call

    def text_prompt(self, text: str, *, continuation: bool = False) -> list[int]:
        return self.tokenizer.encode(text)

    def generate_batch(self, prompts, params, task_type=None):
        self.task_types.add(task_type)
        out, batch = [], []
        for ids, p in zip(prompts, params):
            steps = self.tokenizer.decode(ids).split("Problem:")[-1].strip().splitlines()[1:]
            batch.append(steps)
            text = self.script(steps, p.seed, p.temperature == 0)
            out.append(
                Completion(
                    text=text,
                    token_ids=[0] * len(text),
                    finish_reason="stop",
                    prompt_tokens=len(ids),
                    cached_tokens=len(ids) // 2,
                    generated_tokens=len(text),
                )
            )
        self.batches.append(batch)
        return out


def calc(expression: str) -> str:
    return f'Calc: {{"expression": "{expression}"}}'


def answer_last_result(steps: list[str]) -> str:
    """The answer a model copying the last tool result would write."""
    return f"Answer: {steps[-1].split(' => ')[-1]}"
