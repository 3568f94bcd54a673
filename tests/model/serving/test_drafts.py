"""Draft tokens (model/serving/drafts.py): prompt lookup, jump-forward under grammars, and their verification.

The claim under test: with drafts on, a greedy request produces exactly the token ids it produces with them off,
on copy-heavy prompts (where drafts are kept), under grammars (where forced tokens are drafted), and at the
boundaries where a request ends mid-draft (max_new_tokens, stop strings, EOS). The verify step runs on the
native step (built once per session: the `library` fixture of test_compiled_step.py).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch

import model
from model.engine import Engine
from model.serving.drafts import NO_DRAFTS, DraftConfig, LookupState, prompt_lookup, token_rows, verify_step
from model.serving.grammar import tool_or_message_schema
from model.serving.scheduler import SchedulerConfig, forward_step
from tests.model.serving.test_scheduler import tiny_transformer

PASSAGE = (
    "The history of computing is a story of abstractions stacked upon abstractions. Early machines were "
    "programmed by rewiring panels of cables, and every new problem meant a new arrangement of hardware."
)


# ----- prompt lookup and the verify layout (no model) ----------------------------------------------------


def test_prompt_lookup_drafts_what_followed_the_latest_longest_match():
    ids = [1, 2, 3, 9, 9, 5, 2, 3, 7, 8, 6, 1, 2, 3]
    # The 3-gram (1, 2, 3) occurs at the start only; the tail's own occurrence is not a match.
    assert prompt_lookup(ids, max_ngram=3, min_ngram=1, k=4) == [9, 9, 5, 2]
    # Without that 3-gram, the 2-gram (2, 3) matches latest at index 6..7, followed by 7, 8.
    assert prompt_lookup([4, 4, *ids[1:]], max_ngram=3, min_ngram=1, k=2) == [7, 8]


def test_prompt_lookup_without_a_long_enough_match_drafts_nothing():
    assert prompt_lookup([1, 2, 3, 4, 5], max_ngram=3, min_ngram=1, k=4) == []
    assert prompt_lookup([5, 1, 2, 9, 2], max_ngram=3, min_ngram=2, k=4) == []  # only the 1-gram (2) repeats
    assert prompt_lookup([7], max_ngram=3, min_ngram=1, k=4) == []


def test_bad_draft_settings_are_refused():
    with pytest.raises(ValueError, match="lookup_min_ngram"):
        DraftConfig(lookup_ngram=2, lookup_min_ngram=3)
    with pytest.raises(ValueError, match="lookup_tokens"):
        DraftConfig(lookup_tokens=0)


def test_token_rows_make_each_fed_token_a_decode_row_over_its_own_prefix():
    transformer = tiny_transformer(50)
    cache = transformer.new_cache(max_seq_len=256, capacity_bytes=1 << 20)
    a, b = cache.new_sequence(), cache.new_sequence()
    cache.commit(cache.append([a, b], [14, 3]))
    layout = cache.append([a, b], [4, 1])  # a crosses its 16-token block boundary
    rows = token_rows(layout)
    assert rows.batch_size == 5 and rows.max_new == 1 and rows.n_new == (1,) * 5
    assert rows.starts == (14, 15, 16, 17, 3) and rows.ends == (15, 16, 17, 18, 4)
    assert torch.equal(rows.positions, layout.positions) and torch.equal(rows.write_slots, layout.write_slots)
    for row, (b_row, end) in enumerate(zip([0, 0, 0, 0, 1], rows.ends)):
        assert torch.equal(rows.read_slots[row, :end], layout.read_slots[b_row, :end])
        assert not rows.read_slots[row, end:].any()  # padding points at slot 0 and is masked by `ends`


# ----- verification on the native step (slow: builds the native library) -------------------------------


@pytest.fixture(scope="module")
def tokenizer(default_checkpoint):
    return default_checkpoint.tokenizer


def engines(transformer, tokenizer, directory: Path, drafts: DraftConfig | None = None) -> tuple[Engine, Engine]:
    """(drafts on, drafts off) over one model, both decoding on the native step."""
    made = [
        Engine(transformer, tokenizer, kv_cache_mb=64, native_dir=directory, scheduler=SchedulerConfig(drafts=d))
        for d in (drafts or DraftConfig(), NO_DRAFTS)
    ]
    for engine in made:
        assert engine.compiled.wait() and engine.compiled.reason is None
    return made[0], made[1]


@pytest.mark.slow
def test_verify_rows_equal_single_token_decodes_bit_for_bit(library, tmp_path):
    transformer = tiny_transformer(211, quant="int4")
    engine = Engine(transformer, None, kv_cache_mb=16, native_dir=tmp_path)
    assert engine.compiled.wait()
    cache, prompt, draft = engine.cache, list(range(3, 33)), [40, 41, 7, 8, 9]
    one = cache.new_sequence()
    forward_step(transformer, cache, [one], [prompt])
    singles = torch.cat([forward_step(transformer, cache, [one], [[t]], compiled=engine.compiled) for t in draft])
    other, two = cache.new_sequence(), cache.new_sequence()
    forward_step(transformer, cache, [other, two], [prompt[:7], prompt])
    rows = verify_step(transformer, cache, [other, two], [[5, 6], draft], engine.compiled)  # ragged, with a neighbour
    assert engine.compiled.steps == len(draft) + 1  # every step above ran natively
    assert torch.equal(rows[2:], singles)
    assert cache.length(two) == len(prompt) + len(draft)


def assert_lookup_keeps_greedy_ids(on: Engine, off: Engine, prompts: list, samplings: list[dict]) -> tuple[int, int]:
    """Each prompt's greedy output with and without prompt lookup; returns (tokens drafted, tokens kept)."""
    drafted = kept = 0
    for prompt in prompts:
        for sampling in samplings:
            plain = off.submit(prompt, **sampling).result()
            request = on.submit(prompt, **sampling)
            result = request.result()
            assert result.token_ids == plain.token_ids and result.text == plain.text, (prompt, sampling)
            assert result.finish_reason == plain.finish_reason
            assert request.forward_steps <= plain.generated_tokens + 1
            drafted, kept = drafted + request.drafted, kept + request.draft_accepted
    assert on.cache_stats().bytes_used == off.cache_stats().bytes_used  # truncated drafts left no blocks behind
    return drafted, kept


@pytest.mark.slow
def test_prompt_lookup_keeps_the_plain_greedy_ids_on_a_tiny_model(library, tokenizer, tmp_path):
    # int4, whose native rows are bit-identical to single-token decodes (fp32 matmuls round batched rows otherwise).
    # The model mostly counts up (t -> t + 1), so runs of ids seen before continue as drafted, until it does not.
    on, off = engines(tiny_transformer(tokenizer.vocab_size, quant="int4", successor=True), tokenizer, tmp_path)
    counting = list(range(1000, 1060))
    prompts = [counting + [7, 8] + counting[:5], counting[:30] + counting[:3], [5, 9, 2]]
    samplings = [
        {"max_new_tokens": 1},
        {"max_new_tokens": 3},
        {"max_new_tokens": 40},
        {"max_new_tokens": 40, "stop": [tokenizer.decode([1020])]},
        {"max_new_tokens": 40, "stop_token_ids": (1012, 1031)},
    ]
    drafted, kept = assert_lookup_keeps_greedy_ids(on, off, prompts, samplings)
    assert 0 < kept < drafted  # drafts were kept and rejected: both paths ran


@pytest.mark.slow
def test_prompt_lookup_on_the_default_model_copies_in_fewer_steps(
    library,
    default_gguf_path,
    loading_cache_dir,
    tmp_path,
):
    with model.load(default_gguf_path, cache_dir=loading_cache_dir, compiled_step=False) as loaded:
        on, off = engines(loaded.model, loaded.tokenizer, tmp_path)
        copy = on.chat_prompt([{"role": "user", "content": f"{PASSAGE}\n\n{PASSAGE}\n\nCopy the passage once more."}])
        samplings = [{"max_new_tokens": 40}, {"max_new_tokens": 40, "stop": ["new problem"]}]
        drafted, kept = assert_lookup_keeps_greedy_ids(on, off, [copy], samplings)
        assert kept >= 20


def grammars(engine) -> dict[str, str]:
    """Solve's step grammar, the support bot's action grammar and a JSON schema, compiled for `engine`."""
    from app.support.offer import argument_schemas
    from reasoning.step_grammar import step_grammar
    from tools.orders import OrderDB, order_tools

    with tempfile.TemporaryDirectory() as workdir:
        db = OrderDB.create(Path(workdir) / "orders.db")
        schemas = argument_schemas(order_tools(db))  # the bot's tools as its grammar offers them
        db.close()
    action = tool_or_message_schema(schemas)
    person = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 30},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "city": {"enum": ["Paris", "Denver", "Tokyo"]},
        },
        "required": ["name", "age", "city"],
        "additionalProperties": False,
    }
    return {
        "solve step": engine.grammar_compiler.lark(step_grammar(["Calc", "Solve", "Diff"], answers=["4"])),
        "bot action": engine.json_grammar(action),
        "json schema": engine.json_grammar(person),
    }


PROMPTS_UNDER_GRAMMAR = {
    "solve step": "Problem: Solve 2*x + 3 = 11 for x.\nStep 1:",
    "bot action": "Customer: Please cancel order #W4316152, I ordered it by mistake.\nAction:",
    "json schema": "A person as JSON (name, age, city):",
}


def assert_jump_forward_keeps_greedy_ids(on: Engine, off: Engine, max_new_tokens: int) -> int:
    """Each grammar's greedy output with and without jump-forward; returns the forced tokens kept."""
    kept = 0
    for name, grammar in grammars(on).items():
        prompt = PROMPTS_UNDER_GRAMMAR[name]
        plain = off.submit(
            prompt, max_new_tokens=max_new_tokens, logits_processor=off.grammar_compiler.processor(grammar)
        ).result()
        request = on.submit(
            prompt, max_new_tokens=max_new_tokens, logits_processor=on.grammar_compiler.processor(grammar)
        )
        assert request.result().token_ids == plain.token_ids, name
        assert plain.finish_reason != "error", plain.error
        assert request.forward_steps <= len(plain.token_ids)
        kept += request.draft_accepted
    return kept


@pytest.mark.slow
def test_jump_forward_keeps_greedy_ids_on_a_tiny_model(library, tokenizer, tmp_path):
    # A random model splits forced text its own way as often as not: drafts are rejected as well as kept.
    on, off = engines(
        tiny_transformer(tokenizer.vocab_size, quant="int4"), tokenizer, tmp_path, DraftConfig(prompt_lookup=False)
    )
    assert assert_jump_forward_keeps_greedy_ids(on, off, 60) > 0


@pytest.mark.slow
def test_jump_forward_keeps_greedy_ids_on_the_default_model(
    library,
    default_gguf_path,
    loading_cache_dir,
    tmp_path,
):
    with model.load(default_gguf_path, cache_dir=loading_cache_dir, compiled_step=False) as loaded:
        on, off = engines(loaded.model, loaded.tokenizer, tmp_path)
        kept = assert_jump_forward_keeps_greedy_ids(on, off, 60)
        assert kept >= 10  # keys, quotes, braces, a tool's name: most structure is forced


def test_lookup_pacing_widens_on_kept_drafts_and_pauses_after_misses():
    state = LookupState(window=8)
    state.update(drafted=8, kept=3, max_window=8)
    assert (state.window, state.pause) == (4, 0)
    state.update(drafted=4, kept=4, max_window=8)
    assert state.window == 8
    pauses = []
    for _ in range(8):
        state.update(drafted=1, kept=0, max_window=8)
        pauses.append(state.pause)
    assert pauses == [1, 2, 4, 8, 16, 32, 32, 32] and state.window == 1
    assert [state.ready() for _ in range(33)] == [False] * 32 + [True]
    state.update(drafted=1, kept=1, max_window=8)
    assert (state.window, state.pause, state.misses) == (2, 0, 0)
