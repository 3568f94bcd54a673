"""The router options the seeds asked for, all off by default: expert capacity with backup experts, per-task
router bias through the engine, and router statistics. (Routing itself is checked against transformers in
test_engine_parity.py.)"""

from __future__ import annotations

import pytest
import torch

import model
from model.config import ModelConfig, MoEConfig
from model.layers.moe import TASK_TYPES, Router
from model.serving.sampler import SamplingParams
from tests.model.tiny import save_word_tokenizer, tiny_model


def router(n_experts: int = 4, top_k: int = 2, capacity: int | None = None, **moe) -> Router:
    config = ModelConfig(
        arch="mixtral",
        vocab_size=8,
        dim=n_experts,
        n_layers=1,
        ffn_dim=8,
        n_heads=1,
        n_kv_heads=1,
        head_dim=4,
        moe=MoEConfig(n_experts=n_experts, experts_per_token=top_k, expert_ffn_dim=8, **moe),
    )
    r = Router(config, layer=0)
    r.weight = torch.nn.Parameter(torch.eye(n_experts), requires_grad=False)  # logits = the input itself
    r.capacity = capacity
    return r


def test_capacity_sends_overflow_to_the_next_best_expert():
    # Every token ranks experts 0 > 1 > 2 > 3; each expert has room for 2 and keeps the tokens that score it
    # highest: expert 0 keeps tokens 0 and 1, expert 1 keeps tokens 2 and 1 (softmax gives token 2 the most
    # weight left for it). Tokens 0 and 2 each overflow one slot into their next choice, expert 2.
    x = torch.tensor([[9.0, 5.0, 1.0, 0.0], [8.0, 5.0, 1.0, 0.0], [7.0, 5.0, 1.0, 0.0]])
    r = router(capacity=2)
    weights, experts = r(x)
    assert experts.tolist() == [[0, 2], [0, 1], [2, 1]]
    assert r.rerouted == 2 and r.dropped == 0
    probs = x.softmax(-1)
    torch.testing.assert_close(weights[2], probs[2, [2, 1]] / probs[2, [2, 1]].sum())  # its backup's own weight


def test_capacity_drops_what_no_expert_has_room_for():
    x = torch.randn(5, 4)
    r = router(capacity=2)  # 4 experts x 2 = 8 places for 5 x 2 = 10 assignments
    weights, experts = r(x)
    assert (experts == 4).sum() == 2 and r.dropped == 2
    assert (weights[experts == 4] == 0).all()
    counts = torch.bincount(experts.flatten(), minlength=5)[:4]
    assert counts.tolist() == [2, 2, 2, 2]
    for row in experts.tolist():  # a token never gets the same expert twice
        real = [e for e in row if e != 4]
        assert len(real) == len(set(real))


def test_capacity_that_is_never_reached_changes_nothing():
    x = torch.randn(64, 16)
    groups = dict(scoring="sigmoid", n_group=4, topk_group=2)
    free, capped = router(16, 4, **groups), router(16, 4, capacity=64, **groups)
    free.score_bias = capped.score_bias = None
    (free_weights, free_experts), (capped_weights, capped_experts) = free(x), capped(x)
    assert torch.equal(free_experts.sort(-1).values, capped_experts.sort(-1).values)
    torch.testing.assert_close(free_weights.sort(-1).values, capped_weights.sort(-1).values)
    assert capped.rerouted == 0 and capped.dropped == 0


def test_capacity_respects_group_limited_routing():
    torch.manual_seed(1)
    x = torch.randn(40, 16)
    r = router(16, 4, capacity=10, scoring="sigmoid", n_group=4, topk_group=2)
    r.score_bias = torch.nn.Parameter(torch.zeros(16), requires_grad=False)
    _, experts = r(x)
    allowed = r._limit_groups(x.sigmoid()) > float("-inf")
    real = experts < 16
    assert torch.bincount(experts[real], minlength=16).max() <= 10
    assert allowed.gather(1, experts.clamp(max=15))[real].all(), "a backup never leaves the token's groups"
    assert r.rerouted > 0


def test_task_bias_is_added_to_the_logits_of_that_tasks_tokens_only():
    r = router()
    x = torch.tensor([[4.0, 3.0, 0.0, 0.0]] * 3)
    table = torch.zeros(len(TASK_TYPES) + 1, 4)
    table[TASK_TYPES.index("code"), 2:] = 10.0
    r.task_bias = table
    _, experts = r(x, task_rows=torch.tensor([TASK_TYPES.index("code"), len(TASK_TYPES), TASK_TYPES.index("math")]))
    assert experts.sort(-1).values.tolist() == [[2, 3], [0, 1], [0, 1]]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    directory = tmp_path_factory.mktemp("deepseek")
    tiny_model("deepseek_v3").save_pretrained(directory)
    save_word_tokenizer(directory)
    with model.load(directory, quant=None, threads=1, cache_dir=tmp_path_factory.mktemp("cache")) as engine:
        yield engine


def test_router_stats_count_every_assignment(engine):
    engine.model.reset_router_stats()
    engine.logits(list(range(20, 45)))
    stats = engine.router_stats()
    assert [s.layer for s in stats] == [1, 2]  # layer 0 is dense (first_k_dense_replace = 1)
    assert all(sum(s.tokens) == 25 * 2 for s in stats)  # 25 tokens, 2 experts each
    assert all(0 < s.utilization <= 1 and s.imbalance >= 1 for s in stats)


def test_task_bias_steers_only_that_tasks_requests_and_keeps_their_prefixes_apart(engine):
    prompt = [5, 9, 14, 2, 77, 31, 8, 8, 120, 43, 18, 3, 66, 91, 4, 27, 55]
    params = SamplingParams(max_new_tokens=6, stop_token_ids=(), logprobs=3)
    engine.model.reset_router_stats()
    plain = engine.submit(prompt, params).result()
    plain_load = [s.tokens for s in engine.router_stats()]
    bias = torch.zeros(2, 16)
    bias[:, 3] = bias[:, 11] = 50.0  # sigmoid(logit + 50) = 1 for experts 3 and 11 on every "math" token
    engine.set_task_router_bias({"math": bias})
    try:
        engine.model.reset_router_stats()
        math = engine.submit(prompt, params, task_type="math").result()
        math_load = [s.tokens for s in engine.router_stats()]
        assert math_load != plain_load
        assert sum(load[3] + load[11] for load in math_load) > sum(load[3] + load[11] for load in plain_load)
        assert math.cached_tokens == 0, "K/V computed under another routing must not be reused"
        assert math.logprobs[0].top != plain.logprobs[0].top
        untouched = engine.submit(prompt, params, task_type="code").result()  # no bias set for code
        assert untouched.token_ids == plain.token_ids
        assert [step.top for step in untouched.logprobs] == [step.top for step in plain.logprobs]
    finally:
        engine.set_task_router_bias(None)
    again = engine.submit(prompt, params).result()
    assert again.token_ids == plain.token_ids


def test_expert_capacity_through_the_engine_reroutes_and_is_undone_by_none(engine):
    ids = list(range(30, 90))
    baseline = engine.logits(ids)
    engine.set_expert_capacity(4)  # 60 tokens x 2 into 16 experts of 4 places each: heavy overflow
    try:
        engine.model.reset_router_stats()
        capped = engine.logits(ids)
        stats = engine.router_stats()
        assert all(max(s.tokens) <= 4 and s.rerouted + s.dropped > 0 for s in stats)
        assert not torch.equal(capped, baseline)
    finally:
        engine.set_expert_capacity(None)
    assert torch.equal(engine.logits(ids), baseline)


def test_bad_routing_requests_are_refused(engine, tmp_path):
    with pytest.raises(ValueError, match="task_type 'poetry'"):
        engine.submit([1, 2, 3], task_type="poetry")
    with pytest.raises(ValueError, match="shape"):
        engine.set_task_router_bias({"math": torch.zeros(3, 16)})
    with pytest.raises(ValueError, match="unknown task type"):
        engine.set_task_router_bias({"poetry": torch.zeros(2, 16)})
    llama_dir = tmp_path / "llama"
    tiny_model("llama").save_pretrained(llama_dir)
    save_word_tokenizer(llama_dir)
    llama = model.load(llama_dir, quant=None, threads=1, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="no experts"):
        llama.set_task_router_bias({"math": torch.zeros(1, 1)})
    assert TASK_TYPES == ("math", "code", "chat")
