"""The strategies greedy, best-of-n and self-consistency against a tiny deterministic policy (a scripted engine)
with the real tools behind the steps."""

from __future__ import annotations

import pytest

from app.solve import solve
from model.serving.grammar import GrammarError
from reasoning.search import Path, Policy, SearchBudget, _done
from reasoning.step_grammar import step_grammar
from reasoning.steps import Step, parse_step
from reasoning.tasks import TASKS
from tests.reasoning.scripted import ScriptedEngine, answer_last_result, calc

PROBLEM = "What is six times seven?"


def six_times_seven(steps: list[str], seed: int, greedy: bool) -> str:
    """The greedy first step multiplies the wrong numbers; sampled ones vary with the seed."""
    if steps:
        return answer_last_result(steps)
    return calc("6*6") if greedy else [calc("6*7"), calc("6*8"), calc("5*7")][seed % 3]


def run(strategy: str, engine, truth: str | None = "42", budget: int | SearchBudget = 6, **options):
    return solve(
        PROBLEM,
        task_type="math",
        strategy=strategy,
        budget=budget,
        seed=0,
        engine=engine,
        truth=truth,
        use_cache=False,
        constrained=False,
        **options,
    )


def test_greedy_takes_the_models_first_choice_and_runs_its_tool_call():
    solution = run("greedy", ScriptedEngine(six_times_seven))
    assert [s["text"] for s in solution.steps] == ['Calc: {"expression": "6*6"} => 36', "Answer: 36"]
    assert solution.steps[0]["tool"] == "math_simplify" and solution.steps[0]["tool_ok"]
    assert solution.answer == "36" and solution.reward["correctness"] == 0.0 and solution.paths == 1


def test_the_task_type_reaches_every_engine_call():
    """An MoE model's routers can bias experts per task type; the search passes the solved task's type on."""
    engine = ScriptedEngine(six_times_seven)
    run("best_of_n", engine)
    assert engine.task_types == {"math"}


def test_best_of_n_picks_the_verified_path_from_one_batch():
    engine = ScriptedEngine(six_times_seven)
    solution = run("best_of_n", engine)
    assert solution.answer == "42" and solution.reward["correctness"] == 1.0 and solution.paths == 6
    assert len(engine.batches[0]) == 6, "the n paths are decoded as one batch"
    assert set(solution.answers) == {"42", "48", "35"}


def test_self_consistency_returns_the_majority_answer():
    votes = {0: calc("2+3"), 1: calc("1+4"), 2: calc("3+4")}  # 5, 5, 7

    def script(steps, seed, greedy):
        return answer_last_result(steps) if steps else votes[(seed - 1) % 3]

    solution = run("self_consistency", ScriptedEngine(script), truth=None, budget=3)
    assert solution.answer == "5" and solution.paths == 3
    assert solution.reward["correctness"] == pytest.approx(0.5)  # one of the two other paths agrees


def test_budgets_and_stop_end_the_search_with_the_best_so_far():
    engine = ScriptedEngine(six_times_seven)
    few_tokens = run("best_of_n", engine, budget=SearchBudget(iterations=6, tokens=10))
    assert len(engine.batches) == 1 and few_tokens.answer is None  # out of tokens after the first step
    engine = ScriptedEngine(six_times_seven)
    stopped = run("mcts", engine, budget=50, should_stop=lambda: len(engine.batches) >= 2)
    assert len(engine.batches) == 2 and stopped.answer == "36"  # the greedy path, then stop: the best so far
    assert run("mcts", ScriptedEngine(six_times_seven), should_stop=lambda: True).answer is None


def test_every_decoded_step_reaches_on_step_with_its_tool_result():
    """The chat streams the search's tool calls from this callback, in whichever path they were written."""
    seen: list[dict] = []
    solution = run("best_of_n", ScriptedEngine(six_times_seven), on_step=seen.append)
    tools = [s for s in seen if s["kind"] == "tool"]
    assert len(tools) == 6 and {s["tool_output"] for s in tools} == {"42", "48", "35"}  # every path's call, run
    assert all(s["tool"] == "math_simplify" and s["text"].endswith(" => " + s["tool_output"]) for s in tools)
    assert [s for s in seen if s["kind"] == "answer"] and solution.steps[0] in seen
    seen.clear()
    run("mcts", ScriptedEngine(six_times_seven), on_step=seen.append)
    assert {"36", "42"} <= {s["tool_output"] for s in seen if s["kind"] == "tool"}  # the greedy path and a sampled one


def test_a_derailed_path_ends_and_the_answer_is_what_follows_the_last_equals():
    budget = SearchBudget()
    assert _done(Path([], [Step("thought", "")]), budget)
    assert _done(Path([], [parse_step("Calc: 1+1"), Step("thought", "Problem: Solve 2*x + 3 = 11 for x.")]), budget)
    assert not _done(Path([], [parse_step("Calc: 1+1")]), budget)
    assert _done(Path([], [parse_step("Calc: 1+1")] * budget.max_steps), budget)


class SourceRecordingCompiler:
    """Stands in for model.serving.grammar.GrammarCompiler: a "compiled" grammar is its source; `refuse` makes lark()
    refuse every source that holds it, as llguidance may refuse a narrowed grammar."""

    def __init__(self, refuse: str | None = None) -> None:
        self.refuse = refuse

    def lark(self, source: str) -> str:
        if self.refuse and self.refuse in source:
            raise GrammarError("grammar does not compile: out of fuel")
        return source

    def processor(self, grammar: str) -> str:
        return grammar


def test_a_word_problems_calc_steps_get_only_its_numbers_and_fall_back_to_any_if_refused():
    problem = "Natalia sold 48 clips in April and half as many in May. How many in all?"
    narrowed = step_grammar(TASKS["math"].labels, answers=[], numbers=["48", "2"])
    policy = Policy(
        ScriptedEngine(six_times_seven),
        TASKS["math"],
        SearchBudget(),
        seed=0,
        grammar=SourceRecordingCompiler(),
        problem=problem,
    )
    assert policy._constraint(Path([]))["logits_processor"] == narrowed
    refusing = Policy(
        ScriptedEngine(six_times_seven),
        TASKS["math"],
        SearchBudget(),
        seed=0,
        grammar=SourceRecordingCompiler(refuse="48|2"),
        problem=problem,
    )
    assert refusing._constraint(Path([]))["logits_processor"] == step_grammar(TASKS["math"].labels, answers=[])


def test_a_symbolic_problems_calls_get_only_its_expressions_and_points():
    problem = "What is the limit of 1/x as x approaches infinity?"
    policy = Policy(
        ScriptedEngine(six_times_seven),
        TASKS["math"],
        SearchBudget(),
        seed=0,
        grammar=SourceRecordingCompiler(),
        problem=problem,
    )
    assert policy._constraint(Path([]))["logits_processor"] == step_grammar(
        TASKS["math"].labels, answers=[], numbers=["1"], arguments={"expression": ["1/x", "x"], "point": ["oo"]}
    )


def test_among_verified_paths_the_shortest_is_chosen():
    from reasoning.reward import LayeredReward, Problem
    from reasoning.search import best_path, score

    problem = Problem("What is the derivative of x**2 + 3*x?", "math")
    diff = parse_step('Diff: {"expression": "x**2 + 3*x", "variable": "x"}')
    padded = Path([], [parse_step("Thought: differentiate it"), diff, parse_step("Answer: 2*x + 3")])
    short = Path([], [diff, parse_step("Answer: 2*x + 3")])
    score([padded, short], problem, LayeredReward(), SearchBudget(tokens=10_000))
    assert padded.verified and short.verified
    assert best_path([padded, short]) is short
    unverified = Problem("What is six times seven?", "math")
    paths = [Path([], [parse_step(calc("6*7")), parse_step("Answer: 42")]) for _ in range(2)]
    score(paths, unverified, LayeredReward(), SearchBudget(tokens=10_000))
    assert not paths[0].verified and best_path(paths) is paths[0]  # no verifier: the first found


def test_a_word_problem_adapter_runs_only_maths_word_problems():
    from reasoning.search import REASONING_ADAPTER, WORD_PROBLEM_ADAPTER, step_adapter

    word = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell?"
    symbolic = "What is the derivative of x**3 * sin(x)?"
    held = (WORD_PROBLEM_ADAPTER,)
    assert step_adapter(held, "math", word) == WORD_PROBLEM_ADAPTER
    assert step_adapter(held, "math", symbolic) is None
    assert step_adapter(held, "code", "Write a function that adds 2 and 3.") is None
    assert step_adapter(held, "math", None) is None  # nothing to tell a word problem by
    assert step_adapter((REASONING_ADAPTER,), "math", symbolic) == REASONING_ADAPTER  # every reasoning step
    assert step_adapter((), "math", word) is None


def test_reasoning_steps_run_with_the_reasoning_adapter_and_plain_generation_does_not(tmp_path):
    """A backend holding the per-request REASONING_ADAPTER: the Policy's steps decode as on an engine with the
    adapter merged for everything, while a plain request on the same engine decodes as on the base model."""
    pytest.importorskip("peft")
    import model
    from reasoning.search import REASONING_ADAPTER
    from tests.model.loading.test_lora import peft_model

    peft_model("llama", ["q_proj", "v_proj"], tmp_path / "base").save_pretrained(tmp_path / "adapter")

    def load(**kwargs):
        return model.load(
            tmp_path / "base",
            quant=None,
            threads=1,
            cache_dir=tmp_path / "cache",
            kv_cache_mb=16,
            compiled_step=False,
            **kwargs,
        )

    mixed, merged, base = (
        load(request_adapters={REASONING_ADAPTER: tmp_path / "adapter"}),
        load(adapter=tmp_path / "adapter"),
        load(),
    )
    prompt = "t5 t9 t33 t7 t120"

    def first_steps(engine) -> list[str]:
        policy = Policy(engine, TASKS["math"], SearchBudget(step_tokens=12), seed=0)
        return [p.steps[0].text for p in policy.extend([policy.root(prompt)] * 2, temperature=[0.0, 0.9])]

    try:
        assert Policy(mixed, TASKS["math"], SearchBudget(), seed=0).adapter == REASONING_ADAPTER
        assert Policy(base, TASKS["math"], SearchBudget(), seed=0).adapter is None
        assert first_steps(mixed) == first_steps(merged) != first_steps(base)
        plain = mixed.generate(prompt, max_new_tokens=12)
        assert plain == base.generate(prompt, max_new_tokens=12) != merged.generate(prompt, max_new_tokens=12)
    finally:
        for engine in (mixed, merged, base):
            engine.close()
