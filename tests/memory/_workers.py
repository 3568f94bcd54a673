"""Subprocess bodies for the vector-store tests: run as `python -m tests.memory._workers ACTION STORE_PATH`."""

from __future__ import annotations

import json
import sys

from memory.vector_store import VectorStore


def write(store: VectorStore) -> None:
    store.add_turns("alice", "s1", [{"role": "user", "content": "My locker code is 4471."}], first_index=0)
    store.add_solved_problem("alice", "What is 17 * 3?", "17 * 3 = 51", "51")


def read(store: VectorStore) -> None:
    hits = store.search_turns("alice", "locker code", k=1)
    solved = store.similar_problems("alice", "What is 17 * 3?")
    print(json.dumps({"turn": hits[0].text if hits else None, "answer": solved[0].answer if solved else None}))


def write_forever(store: VectorStore) -> None:
    """Commit one turn at a time and report each commit once add_turns has returned; the test SIGKILLs us."""
    number = 0
    while True:
        store.add_turns("alice", "s1", [{"role": "user", "content": f"fact number {number} is {number * 7}"}], number)
        print(number, flush=True)
        number += 1


if __name__ == "__main__":
    action, path = sys.argv[1], sys.argv[2]
    {"write": write, "read": read, "write-forever": write_forever}[action](VectorStore(path))
