"""`tool_call_turn`, the one call r1 serve makes for a request with tools, over the default model's real tokenizer
and grammar compiler (the weights are not needed; on the real model: tests/ui/test_server.py)."""

from __future__ import annotations

import json

import pytest

from app.tool_calls import tool_call_turn
from model.backends.openai_protocol import FunctionSpec
from model.serving.grammar import GrammarCompiler
from model.serving.request import Completion

WEATHER = FunctionSpec(
    name="weather",
    description="Today's weather in a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
PING = FunctionSpec(name="ping")


class TokenizerEngine:
    """What tool_call_turn uses of an engine: its chat prompt and its grammar compiler, over a real tokenizer."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.grammar_compiler = GrammarCompiler(tokenizer)

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        return self.tokenizer.encode(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True))

    def json_grammar(self, schema) -> str:
        return self.grammar_compiler.json_schema(schema)


@pytest.fixture(scope="module")
def engine(default_tokenizer) -> TokenizerEngine:
    return TokenizerEngine(default_tokenizer)


def done(text: str, reason: str = "stop") -> Completion:
    return Completion(text=text, token_ids=[], finish_reason=reason, prompt_tokens=1)


def test_the_prompt_lists_the_tools_in_the_system_message(engine):
    turn = tool_call_turn(
        engine,
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Oslo?"}],
        [WEATHER, PING],
        "auto",
    )
    prompt = engine.tokenizer.decode(turn.prompt)
    assert "Be brief.\n\nYou can call these tools:" in prompt
    assert json.dumps({"name": "ping", "description": "", "parameters": {"type": "object"}}) in prompt
    assert prompt.count("You can call these tools") == 1
    assert turn.processor() is not turn.processor()  # stateful: one per choice


def test_a_decoded_call_becomes_tool_calls_and_words_a_message(engine):
    turn = tool_call_turn(engine, [{"role": "user", "content": "Oslo?"}], [WEATHER], "auto")
    message, finish = turn.message(done('{"tool": "weather", "arguments": {"city": "Oslo"}}'))
    assert finish == "tool_calls" and message["content"] is None
    (call,) = message["tool_calls"]
    assert call["function"] == {"name": "weather", "arguments": '{"city": "Oslo"}'}
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert turn.message(done('{"message": "Sunny."}')) == ({"role": "assistant", "content": "Sunny."}, "stop")
    cut = '{"tool": "weather", "argum'
    assert turn.message(done(cut, "length")) == ({"role": "assistant", "content": cut}, "length")


def test_the_grammar_allows_only_the_named_tool(engine):
    turn = tool_call_turn(engine, [{"role": "user", "content": "hi"}], [WEATHER, PING], "ping")
    assert [t.name for t in turn.grammar.tools] == ["ping"]
    with pytest.raises(ValueError, match="not among the tools"):
        tool_call_turn(engine, [{"role": "user", "content": "hi"}], [WEATHER], "nope")
