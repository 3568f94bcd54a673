"""Expert-iteration data: sampled paths kept only where the answer is the gold one and every step is valid, once."""

from __future__ import annotations

import json

from app.train.search_data import SearchDataConfig, build
from tests.reasoning.scripted import ScriptedEngine, answer_last_result, calc

QUESTION = "Tom has 3 boxes of 12 apples and eats 5 apples. How many apples are left?"


def script(steps, seed, greedy):
    """Seeds alternate between the right path, a wrong one, and an ungrounded call (77 is not in the problem)."""
    if steps:
        return answer_last_result(steps)
    return [calc("3*12 - 5"), calc("3*12 + 5"), calc("77 - 46")][seed % 3]


def test_only_verified_valid_paths_are_kept_once(tmp_path):
    engine = ScriptedEngine(script)
    report = build(
        engine, [{"question": QUESTION, "answer": "31"}], tmp_path / "paths.jsonl", SearchDataConfig(samples=6)
    )
    rows = [json.loads(line) for line in (tmp_path / "paths.jsonl").read_text().splitlines()]
    assert report["paths_sampled"] == 6 and report["problems_with_a_verified_path"] == 1
    # "77 - 46" also gives 31, but 77 is no number of the problem: not a valid step; the right path, twice, kept once
    assert [row["steps"] for row in rows] == [['Calc: {"expression": "3*12 - 5"} => 31', "Answer: 31"]]
    assert report["verified_paths"] == 1 and report["yield_per_problem"] == 1.0
    assert rows[0]["prompt"].endswith(f"Problem: {QUESTION}\n")


def test_a_teacher_behind_r1_serve_samples_the_paths(tmp_path):
    """--teacher-base-url: the paths come from an OpenAI-compatible server (our own API over a tiny random llama,
    whose free text reaches no answer: every path is sampled, parsed and checked, none is kept)."""
    from app import Settings
    from app.runtime import Runtime
    from model.backends.remote import OpenAIBackend, RemoteConfig
    from tests.model.tiny import save_word_tokenizer, tiny_model
    from tests.servers import LiveServer
    from ui.server import create_app

    tiny_model("llama", max_position_embeddings=2048).save_pretrained(tmp_path / "model")  # room for the prompt
    save_word_tokenizer(tmp_path / "model")
    runtime = Runtime(
        Settings(model=str(tmp_path / "model"), quant="fp32", threads=1, cache_dir=str(tmp_path / "cache"))
    )
    with LiveServer(create_app(runtime)) as live:
        teacher = OpenAIBackend(RemoteConfig(live.url + "/v1"))
        try:
            report = build(
                teacher,
                [{"question": QUESTION, "answer": "31"}],
                tmp_path / "paths.jsonl",
                SearchDataConfig(samples=3, tokens=400),
            )
            served = runtime.engine.cache_stats().miss_tokens + runtime.engine.cache_stats().hit_tokens
        finally:
            teacher.close()
    runtime.close()
    assert report["paths_sampled"] == 3 and report["verified_paths"] == 0
    assert served > 0, "the server must have run the teacher's requests"
    assert (tmp_path / "paths.jsonl").read_text() == ""
