"""The step-grammar tests compile under the real tokenizer, with tests/model/serving/test_grammar.py's fixtures."""

from tests.model.serving.test_grammar import compiler, tokenizer  # noqa: F401 (fixtures)
