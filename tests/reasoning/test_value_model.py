"""The value head: saved and read back, scored over a backend's hidden states (memoized), and in the correctness
layer where no verifier judges an answer, where it changes which path wins."""

from __future__ import annotations

import pytest
import torch

from app.solve import solve
from reasoning.value_model import (
    HEAD_CONFIG,
    HEAD_FILE,
    ValueHead,
    ValueHeadConfig,
    ValueModel,
    ValueModelError,
)
from tests.reasoning.scripted import ScriptedEngine, answer_last_result, calc

QUESTION = "Tom has 3 boxes of 12 apples and eats 5 apples. How many apples are left?"


def head_preferring(feature: int, dim: int = 2) -> ValueHead:
    """A linear head whose estimate is high where hidden[feature] is 1, low where it is 0."""
    head = ValueHead(ValueHeadConfig(dim=dim, hidden=0))
    with torch.no_grad():
        head.net[0].weight.zero_()
        head.net[0].weight[0, feature] = 8.0
        head.net[0].bias.fill_(-4.0)
    return head.eval()


class ScriptedWithHidden(ScriptedEngine):
    """The scripted policy plus hidden states: [1, 0] for a path that added the eaten apples, else [0, 1]."""

    def __init__(self, script) -> None:
        super().__init__(script)
        self.hidden_calls: list[int] = []

    def hidden_states(self, prompts, adapter=None):
        self.hidden_calls.append(len(prompts))
        added = ["3*12 + 5" in self.tokenizer.decode(p).split("Problem:")[-1] for p in prompts]
        return torch.tensor([[1.0, 0.0] if a else [0.0, 1.0] for a in added])


def script(steps, seed, greedy):
    if steps:
        return answer_last_result(steps)
    return calc("3*12 - 5") if greedy else [calc("3*12 + 5"), calc("3*12 - 5")][seed % 2]


def test_a_head_saved_reads_back_the_same(tmp_path):
    head = ValueHead(ValueHeadConfig(dim=6, hidden=4, adapter=True, info={"auc": 0.7}))
    with torch.no_grad():
        head.mean.normal_()
    head.save(tmp_path)
    again = ValueHead.load(tmp_path)
    x = torch.randn(3, 6)
    assert again.config == head.config and torch.equal(again(x), head(x))
    (tmp_path / HEAD_FILE).write_bytes(b"not safetensors")
    with pytest.raises(ValueModelError, match=f"cannot read value head .*{HEAD_FILE}"):
        ValueHead.load(tmp_path)
    (tmp_path / HEAD_CONFIG).write_text("{")
    with pytest.raises(ValueModelError, match=HEAD_CONFIG):
        ValueHead.load(tmp_path)


def test_value_model_scores_through_hidden_states_once_per_prompt():
    engine = ScriptedWithHidden(script)
    values = ValueModel(head_preferring(0), engine)
    added, subtracted = (
        engine.text_prompt("Problem: x\nCalc: 3*12 + 5"),
        engine.text_prompt("Problem: x\nCalc: 3*12 - 5"),
    )
    first = values([added, subtracted, added])
    assert first[0] == first[2] > 0.9 and first[1] < 0.1 and engine.hidden_calls == [2]
    assert values([subtracted]) == [first[1]] and engine.hidden_calls == [2]  # memoized
    with pytest.raises(ValueModelError, match="cannot give hidden states"):
        ValueModel(head_preferring(0), ScriptedEngine(script))


def test_the_head_decides_between_paths_no_verifier_judges():
    """Two answers (31 and 41), one path each, nothing checks them: agreement alone ties (the path found first, 31, wins);
    a head that prefers the path adding the eaten apples makes 41 win, a head preferring the other keeps 31."""

    def run(**options):
        return solve(
            QUESTION,
            task_type="math",
            strategy="best_of_n",
            budget=2,
            seed=0,
            engine=ScriptedWithHidden(script),
            use_cache=False,
            constrained=False,
            **options,
        )

    plain = run()
    assert plain.answer == "31" and set(plain.answers) == {"31", "41"}
    assert run(value_model=head_preferring(0)).answer == "41"
    kept = run(value_model=head_preferring(1))
    assert kept.answer == "31" and kept.reward["correctness"] > plain.reward["correctness"]


def test_a_verified_answer_is_not_overruled_by_the_head():
    solution = solve(
        QUESTION,
        task_type="math",
        strategy="best_of_n",
        budget=2,
        seed=0,
        truth="31",
        engine=ScriptedWithHidden(script),
        use_cache=False,
        constrained=False,
        value_model=head_preferring(0),
    )
    assert solution.answer == "31" and solution.reward["correctness"] == 1.0


def test_value_model_reads_the_real_engines_hidden_states(tmp_path):
    """Over our engine (a tiny llama): the head's probability of `Engine.hidden_states` for each prompt."""
    import model
    from tests.model.tiny import save_word_tokenizer, tiny_model

    tiny_model("llama").save_pretrained(tmp_path / "base")
    save_word_tokenizer(tmp_path / "base")
    engine = model.load(
        tmp_path / "base", quant=None, threads=1, cache_dir=tmp_path / "cache", kv_cache_mb=16, compiled_step=False
    )
    try:
        head = ValueHead(ValueHeadConfig(dim=engine.config.dim, hidden=8))
        prompts = [[5, 9, 33, 7], [5, 9, 34]]
        expected = head.probabilities(engine.hidden_states(prompts)).tolist()
        assert ValueModel(head, engine)(prompts) == pytest.approx(expected, abs=1e-6)
        with pytest.raises(ValueModelError, match="reads 4-wide hidden states; the model's are 64"):
            ValueModel(ValueHead(ValueHeadConfig(dim=4)), engine)
    finally:
        engine.close()
