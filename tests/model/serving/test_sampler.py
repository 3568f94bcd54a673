"""The sampler chain against hand-computed expectations and transformers' logits processors."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor, TopPLogitsWarper

from model.serving.sampler import NoTokenAllowed, RepetitionPenalty, Sampler, SamplingParams, TopK, TopP


def test_greedy_picks_argmax():
    sampler = Sampler(SamplingParams())
    assert sampler.plain_greedy
    assert [sampler(row, [], []) for row in torch.tensor([[0.1, 3.0, -1.0], [5.0, 0.0, 4.9]])] == [1, 0]


def test_repetition_penalty_matches_transformers():
    logits = torch.randn(2, 50, generator=torch.Generator().manual_seed(0))
    histories = [[1, 3, 3, 49], [0, 7]]
    ours = RepetitionPenalty(1.3)(logits.clone(), histories)
    theirs = torch.stack(
        [
            RepetitionPenaltyLogitsProcessor(1.3)(torch.tensor([h]), logits[i : i + 1].clone())[0]
            for i, h in enumerate(histories)
        ]
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
    logits = torch.log(torch.tensor([0.7, 0.2, 0.1]))
    params = SamplingParams(temperature=1.0, seed=123)
    first, second = Sampler(params), Sampler(params)
    draws = [first(logits, [], []) for _ in range(3000)]
    assert draws == [second(logits, [], []) for _ in range(3000)]
    freq = torch.bincount(torch.tensor(draws), minlength=3).float() / 3000
    torch.testing.assert_close(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.03, rtol=0)


def test_logits_processor_runs_first_sees_its_rows_ids_and_can_force_a_token():
    seen = []

    def only_token_2(generated_ids, logits):
        seen.append(generated_ids)
        logits[torch.arange(3) != 2] = float("-inf")
        return logits

    logits = torch.tensor([9.0, 8.0, -3.0])
    sampler = Sampler(SamplingParams(temperature=0.8, top_k=1, seed=0, logits_processor=only_token_2))
    assert not sampler.plain_greedy
    assert sampler(logits, [5, 6, 7], [7]) == 2
    assert seen == [[7]] and logits.tolist() == [9.0, 8.0, -3.0], "the caller's logits are not modified"


def test_a_processor_that_allows_nothing_is_an_error_not_token_0():
    sampler = Sampler(SamplingParams(logits_processor=lambda ids, logits: logits.fill_(float("-inf"))))
    with pytest.raises(NoTokenAllowed):
        sampler(torch.zeros(3), [], [])


@pytest.mark.parametrize(
    "bad",
    [
        dict(temperature=-1),
        dict(top_p=0),
        dict(top_p=1.5),
        dict(top_k=-1),
        dict(repetition_penalty=0),
        dict(max_new_tokens=-1),
        dict(logprobs=21),
    ],
)
def test_invalid_parameters_are_rejected(bad):
    with pytest.raises(ValueError):
        SamplingParams(**bad)
