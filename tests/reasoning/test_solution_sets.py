from reasoning.solution_sets import parse_set, parse_solutions, same_set, set_choices, solution_tuples


def test_the_solve_tools_lines_are_read_per_solution():
    assert parse_solutions("x = 2; x = 3") == [{"x": "2"}, {"x": "3"}]
    assert parse_solutions("x = 1, y = 3; x = 3, y = 1") == [{"x": "1", "y": "3"}, {"x": "3", "y": "1"}]
    assert parse_solutions("no solution") == []
    assert solution_tuples(parse_solutions("x = 1, y = 3; x = 3, y = 1"), ["y"]) == [("3",), ("1",)]


def test_several_solutions_are_offered_only_as_a_whole_set():
    assert set_choices([{"x": "2"}, {"x": "3"}]) == ["x = {2, 3}"]
    assert set_choices([{"x": "-2", "y": "4"}, {"x": "2", "y": "4"}]) == ["(x, y) = {(-2, 4), (2, 4)}"]
    assert set_choices([{"x": "4"}]) == []  # one solution: the per-variable answers stand


def test_sets_compare_as_maths_in_any_order_and_never_partially():
    assert parse_set("{2, 3}") == [("2",), ("3",)] and parse_set("(6, 3)") == [("6", "3")]
    assert parse_set("{(1, 3), (3, 1)}") == [("1", "3"), ("3", "1")] and parse_set("x > 2") is None
    assert same_set(parse_set("{2*pi, 0, pi}"), parse_set("{0, pi, 2*pi}"))
    assert same_set(parse_set("{1/2, 3}"), parse_set("{3, 0.5}"))
    assert not same_set(parse_set("2"), parse_set("{2, 3}")) and not same_set(parse_set("{2, 2}"), parse_set("{2, 3}"))
