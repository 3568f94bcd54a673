"""The sampler chain against hand-computed expectations and transformers' logits processors."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor, TopPLogitsWarper

from model.sampler import RepetitionPenalty, Sampler, SamplingParams, TopK, TopP


def test_greedy_picks_argmax():
    logits = torch.tensor([[0.1, 3.0, -1.0], [5.0, 0.0, 4.9]])
    assert Sampler(SamplingParams())(logits, [[], []]).tolist() == [1, 0]


def test_repetition_penalty_matches_transformers():
    logits = torch.randn(2, 50, generator=torch.Generator().manual_seed(0))
    histories = [[1, 3, 3, 49], [0, 7]]
    ours = RepetitionPenalty(1.3)(logits.clone(), histories)
    theirs = torch.stack(
        [RepetitionPenaltyLogitsProcessor(1.3)(torch.tensor([h]), logits[i : i + 1].clone())[0] for i, h in enumerate(histories)]
    )
    torch.testing.assert_close(ours, theirs)


def test_top_p_matches_transformers():
    logits = torch.randn(3, 40, generator=torch.Generator().manual_seed(1))
    ours = TopP(0.7)(logits.clone(), [[]] * 3)
    theirs = TopPLogitsWarper(0.7)(None, logits.clone())
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))


def test_top_k_keeps_k_best():
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0]])
    assert torch.isfinite(TopK(2)(logits, [[]])).tolist() == [[False, True, True, False]]


def test_seeded_sampling_is_reproducible_and_follows_the_distribution():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).repeat(4000, 1)
    params = SamplingParams(temperature=1.0, seed=123)
    first = Sampler(params)(logits, [[]] * 4000)
    assert torch.equal(first, Sampler(params)(logits, [[]] * 4000))
    freq = torch.bincount(first, minlength=3).float() / 4000
    torch.testing.assert_close(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.03, rtol=0)


def test_logits_hook_runs_first_and_can_force_a_token():
    def only_token_2(logits, histories):
        mask = torch.full_like(logits, float("-inf"))
        mask[:, 2] = 0
        return logits + mask

    logits = torch.tensor([[9.0, 8.0, -3.0]])
    sampler = Sampler(SamplingParams(temperature=0.8, top_k=1, seed=0, logits_hook=only_token_2))
    assert sampler(logits, [[]]).tolist() == [2]


@pytest.mark.parametrize(
    "bad",
    [dict(temperature=-1), dict(top_p=0), dict(top_p=1.5), dict(top_k=-1), dict(repetition_penalty=0), dict(max_new_tokens=-1)],
)
def test_invalid_parameters_are_rejected(bad):
    with pytest.raises(ValueError):
        SamplingParams(**bad)
