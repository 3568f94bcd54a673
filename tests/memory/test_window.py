"""The sliding window: eviction order, pinned system prompt, tool call + result pairing, chunked eviction
that keeps the prompt's prefix stable (checked with the default model's tokenizer)."""

from __future__ import annotations

import pytest

from memory.window import SlidingWindow, chat_token_counter, default_budget


def word_count(messages) -> int:
    return sum(len(str(m["content"]).split()) + 3 for m in messages)  # 3 = per-message framing


def chat(n: int, words: int = 5):
    for i in range(n):
        yield {"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i} " + "w " * (words - 1)}


def test_oldest_leave_first_and_the_system_prompt_stays():
    evicted: list[tuple[list[dict], int]] = []
    window = SlidingWindow(word_count, 60, "be brief", on_evict=lambda ms, first: evicted.append((ms, first)))
    messages = list(chat(40))
    for message in messages:
        window.add(message)
        assert window.tokens() <= 60
        assert window.messages[0] == {"role": "system", "content": "be brief"}
    handed_over = [m for batch, _ in evicted for m in batch]
    kept = window.messages[1:]
    assert handed_over + kept == messages  # nothing lost, nothing reordered
    firsts = [first for _, first in evicted]
    assert firsts == [sum(len(b) for b, _ in evicted[:i]) for i in range(len(evicted))]  # turn numbers run on


def test_eviction_comes_in_chunks():
    chunked = SlidingWindow(word_count, 80, "sys", evict_to=0.5)
    one_by_one = SlidingWindow(word_count, 80, "sys", evict_to=1.0)
    for message in chat(60):
        chunked.add(message)
        one_by_one.add(message)
    assert one_by_one.evictions >= 45  # every turn once full
    assert chunked.evictions <= 12
    assert chunked.tokens() <= 80


def test_a_tool_call_never_leaves_without_its_results():
    batches: list[list[dict]] = []
    window = SlidingWindow(word_count, 40, "sys", on_evict=lambda ms, first: batches.append(ms))
    for i in range(12):
        window.add({"role": "user", "content": f"question {i}"})
        window.add({"role": "assistant", "content": "", "tool_calls": [{"id": f"c{i}", "name": "lookup"}]})
        window.add({"role": "tool", "content": f"result {i} a", "tool_call_id": f"c{i}"})
        window.add({"role": "tool", "content": f"result {i} b", "tool_call_id": f"c{i}"})
        window.add({"role": "assistant", "content": f"answer {i}"})
        assert window.messages[1]["role"] != "tool"  # the window never starts with an orphaned result
    assert len(batches) >= 3
    for batch in batches:
        for position, message in enumerate(batch):
            if message["role"] == "tool":  # its call travelled in the same batch, right before its results
                calls = [m for m in batch[:position] if m.get("tool_calls")]
                assert calls and calls[-1]["tool_calls"][0]["id"] == message["tool_call_id"]
        assert batch[-1]["role"] != "assistant" or not batch[-1].get("tool_calls")


def test_refuses_a_message_that_cannot_fit_and_keeps_the_window():
    window = SlidingWindow(word_count, 30, "sys")
    window.add({"role": "user", "content": "hello"})
    before = window.messages
    with pytest.raises(ValueError, match="does not fit the window"):
        window.add({"role": "user", "content": "w " * 40})
    assert window.messages == before
    with pytest.raises(ValueError, match="role"):
        window.add({"role": "robot", "content": "x"})
    with pytest.raises(ValueError, match="must follow"):
        SlidingWindow(word_count, 30).add({"role": "tool", "content": "orphan"})


def test_a_failing_tier3_write_loses_nothing():
    def broken(messages, first):
        raise OSError("disk full")

    window = SlidingWindow(word_count, 30, "sys", on_evict=broken)
    messages = list(chat(6))
    with pytest.raises(OSError, match="disk full"):
        for message in messages:
            window.add(message)
    assert window.messages[1:] == messages[: len(window.messages) - 1]  # every message added is still here


def test_recalled_snippets_go_into_the_last_user_message_only():
    window = SlidingWindow(word_count, 100, "sys")
    for message in chat(3):
        window.add(message)
    prompt = window.prompt("[notes.md, chunk 1] the code is 42")
    assert prompt[0] == {"role": "system", "content": "sys"}
    assert prompt[-1]["content"].startswith("Recalled from earlier") and prompt[-1]["content"].endswith(
        window.messages[-1]["content"]
    )
    assert window.messages[-1]["content"] == "m2 w w w w "  # the window itself is unchanged


def test_default_budget():
    assert default_budget(8192, 512) == 7680
    with pytest.raises(ValueError, match="no room"):
        default_budget(512, 512)


def test_prompts_share_their_prefix_between_evictions(default_tokenizer):
    """With the real chat template: each turn's prompt ids extend the previous turn's, except right after
    an eviction, so the engine's prefix cache reuses all earlier tokens on almost every turn."""
    count = chat_token_counter(default_tokenizer)
    window = SlidingWindow(count, 400, "You are a helpful assistant.", evict_to=0.6)

    def prompt_ids() -> list[int]:
        text = default_tokenizer.apply_chat_template(window.messages, add_generation_prompt=True)
        return default_tokenizer.encode(text, add_bos=False)

    previous, evictions_before, reused, cut = None, 0, 0, 0
    for message in chat(60, words=12):
        window.add(message)
        ids = prompt_ids()
        assert len(ids) == window.tokens() <= 400
        if message["role"] == "assistant":
            continue  # prompts are built before each assistant reply
        if previous is not None:
            if window.evictions != evictions_before:
                cut += 1
            else:
                assert ids[: len(previous)] == previous
                reused += 1
        previous, evictions_before = ids, window.evictions
    assert cut >= 2 and reused >= 3 * cut
