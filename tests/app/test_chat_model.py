"""ChatR1, the LangChain chat model over our engine: invoke, stream, batch, reasoning, usage, a real tool-calling
loop with our math and order tools, and structured output, all on the real default model."""

from __future__ import annotations

import json

import jsonschema
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from pydantic import BaseModel, ConfigDict, Field

from app import ChatR1
from app.chat_model import ReasoningSplitter, _tool_choice, to_chat_messages
from model.tokenizer import split_reasoning
from tools.math import math_tools
from tools.orders import order_tools

# ----- fast ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "<think>Six sevens are 42.</think>The answer is 42.",
        "  <think>a < b, and </thin is not a tag</think>  done",
        "No reasoning here, just <b>html</b>.",
        "<think>cut off while thinking",
    ],
)
def test_streamed_split_matches_the_whole_split_for_any_chunking(text):
    for size in (1, 2, 3, 7, len(text)):
        splitter = ReasoningSplitter()
        reasoning, answer = "", ""
        for i in range(0, len(text), size):
            r, a = splitter.push(text[i : i + size])
            reasoning, answer = reasoning + r, answer + a
        r, a = splitter.finish()
        assert ((reasoning + r).strip(), (answer + a).strip()) == split_reasoning(text)


def test_a_template_that_opens_the_think_tag_starts_in_reasoning():
    splitter = ReasoningSplitter(thinking=True)
    pieces = [splitter.push(p) for p in ["Let me", " see.</th", "ink>\n\n", "Paris."]]
    assert "".join(r for r, _ in pieces) == "Let me see." and "".join(a for _, a in pieces) == "Paris."


def test_langchain_messages_become_our_chat_messages():
    call = {"name": "math_simplify", "args": {"expression": "12*7"}, "id": "call_1", "type": "tool_call"}
    messages = [
        SystemMessage("Be brief."),
        HumanMessage("12*7?"),
        AIMessage("", tool_calls=[call]),
        ToolMessage("84", tool_call_id="call_1"),
        ToolMessage("bad", tool_call_id="call_2", status="error"),
    ]
    assert to_chat_messages(messages) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "12*7?"},
        {"role": "assistant", "content": json.dumps({"tool": "math_simplify", "arguments": {"expression": "12*7"}})},
        {"role": "tool", "content": "84"},
        {"role": "tool", "content": "Error: bad"},
    ]


def test_tool_choice_spellings():
    assert [_tool_choice(c) for c in (None, "auto", "any", True, "required", "none", "math_solve")] == [
        "auto",
        "auto",
        "required",
        "required",
        "required",
        "none",
        "math_solve",
    ]
    assert _tool_choice({"type": "function", "function": {"name": "math_solve"}}) == "math_solve"
    with pytest.raises(ValueError, match="tool_choice"):
        _tool_choice({"type": "function"})


# ----- on the real default model -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llm(runtime) -> ChatR1:
    return ChatR1(engine=runtime.engine, max_tokens=24, temperature=0)


@pytest.mark.slow
def test_no_arguments_means_the_default_settings(runtime, monkeypatch):
    monkeypatch.setenv("R1_QUANT", "int4")
    monkeypatch.setenv("R1_CACHE_DIR", runtime.settings.cache_dir)  # the session's warm weight cache
    monkeypatch.setenv("R1_MAX_NEW_TOKENS", "8")
    reply = ChatR1().invoke("Hello")
    assert isinstance(reply, AIMessage) and reply.content
    assert reply.response_metadata["model_name"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert reply.usage_metadata["output_tokens"] <= 8


@pytest.mark.slow
def test_invoke_reports_usage_with_cached_prompt_tokens(llm):
    question = "In one sentence: why is the sky blue? " * 3
    first, second = llm.invoke(question), llm.invoke(question)
    assert first.content == second.content  # greedy
    usage = second.usage_metadata
    assert usage["input_tokens"] > 20 and 0 < usage["output_tokens"] <= 24
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["input_token_details"]["cache_read"] >= 16  # the prompt's blocks came from the prefix cache
    assert second.response_metadata["finish_reason"] in ("stop", "length")


@pytest.mark.slow
def test_stream_adds_up_to_invoke(llm):
    # Warm the prefix cache first, so that the stream and the invoke both read the prompt's K/V from it: K/V computed
    # in another batch shape can flip a near-tie token (docs/BENCHMARKS.md, "Run-to-run variation").
    llm.invoke("Name a color.")
    chunks = list(llm.stream("Name a color."))
    full = sum(chunks[1:], chunks[0])
    assert len(chunks) > 2 and full.content == llm.invoke("Name a color.").content
    assert chunks[-1].chunk_position == "last" and full.usage_metadata["output_tokens"] > 0


@pytest.mark.slow
def test_batch_runs_in_one_engine_batch(llm, submitted):
    prompts = [f"Say the number {i}." for i in range(4)]
    replies = llm.batch(prompts)
    assert len(replies) == 4 and all(r.content for r in replies)
    spans = [(r.submitted_at, r.submitted_at + r.result().seconds) for r in submitted]
    peak = max(sum(start <= t < end for start, end in spans) for t, _ in spans)
    assert len(submitted) == 4 and peak >= 3  # in flight together: the scheduler stepped them as one batch


@pytest.mark.slow
def test_reasoning_goes_to_reasoning_content(llm, runtime):
    # The default model does not think: R1's output is written into a real completion of it.
    completion = runtime.engine.submit("Hi", max_new_tokens=2).result()
    completion.text = "<think>Six sevens: 42.</think>The answer is 42."
    message = llm.message(completion)
    assert message.content == "The answer is 42."
    assert message.additional_kwargs["reasoning_content"] == "Six sevens: 42."
    assert "reasoning_content" not in llm.invoke("Hello").additional_kwargs


def few_shot(question: str, tool: str, arguments: dict) -> SystemMessage:
    """A system message showing one worked call: the 135M default model copies the pattern."""
    return SystemMessage(
        f"Call one tool.\nQuestion: {question}\nCall: {json.dumps({'tool': tool, 'arguments': arguments})}"
    )


@pytest.mark.slow
def test_a_tool_calling_loop_with_our_math_and_order_tools(llm, order_db):
    tools = [t for t in math_tools() if t.name == "math_simplify"] + [
        t for t in order_tools(order_db) if t.name == "get_order_details"
    ]
    runnable = {t.name: t.to_langchain() for t in tools}
    schemas = {t.name: t.schema for t in tools}
    cases = [
        (
            few_shot("What is 3 times 5?", "math_simplify", {"expression": "3*5"}),
            "What is 12 times 7?",
            "math_simplify",
            "84",
        ),
        (
            few_shot("Where is my order #W1234567?", "get_order_details", {"order_id": "#W1234567"}),
            "Where is my order #W8770097?",
            "get_order_details",
            '"status": "pending"',
        ),
    ]
    for system, question, expected_tool, expected_result in cases:
        messages = [system, HumanMessage(question)]
        forced = llm.bind_tools(tools, tool_choice="any", max_tokens=64).invoke(messages)
        [call] = forced.tool_calls
        assert call["name"] == expected_tool and forced.response_metadata["finish_reason"] == "tool_calls"
        jsonschema.validate(call["args"], schemas[call["name"]])  # the grammar made it a valid call
        result = runnable[call["name"]].invoke(call)  # LangChain runs our Tool: a ToolMessage back
        assert isinstance(result, ToolMessage) and result.tool_call_id == call["id"]
        assert expected_result in result.content
        messages += [forced, result]
        final = llm.bind_tools(tools, max_tokens=64).invoke(messages)  # "auto": words or another call, both parse
        assert final.content or final.tool_calls


@pytest.mark.slow
def test_a_named_tool_choice_and_openai_dicts(llm, order_db):
    [tool] = [t for t in order_tools(order_db) if t.name == "find_user_id_by_email"]
    bound = llm.bind_tools(
        [tool.to_openai()], tool_choice={"type": "function", "function": {"name": tool.name}}, max_tokens=64
    )
    [call] = bound.invoke("My email is ivan.santos3158@example.com").tool_calls
    assert call["name"] == tool.name and set(call["args"]) == {"email"}
    cut = llm.bind_tools([tool], tool_choice="any", max_tokens=4).invoke("My email is ivan.santos3158@example.com")
    assert not cut.tool_calls and "cut off after 4 tokens" in cut.invalid_tool_calls[0]["error"]


class City(BaseModel):
    model_config = ConfigDict(extra="forbid")  # additionalProperties: false, so the grammar ends the object

    name: str = Field(max_length=30)
    is_capital: bool


@pytest.mark.slow
def test_structured_output_is_constrained_to_the_schema(llm):
    llm = llm.model_copy(update={"max_tokens": 64})  # room for the whole document
    city = llm.with_structured_output(City).invoke("Paris is the capital of France. Describe Paris.")
    assert isinstance(city, City)
    schema = {
        "title": "city",
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "is_capital"],
        "properties": {"name": {"type": "string", "maxLength": 30}, "is_capital": {"type": "boolean"}},
    }
    raw = llm.with_structured_output(schema, include_raw=True).invoke("Describe Rome.")
    assert raw["parsing_error"] is None and set(raw["parsed"]) == {"name", "is_capital"}
    assert raw["raw"].usage_metadata["output_tokens"] > 0
    called = llm.with_structured_output(City, method="function_calling").invoke("Describe Berlin.")
    assert isinstance(called, City)


def test_chat_r1_names_the_remote_alternative(monkeypatch):
    monkeypatch.setenv("R1_BACKEND", "openai")
    with pytest.raises(ValueError, match="ChatOpenAI"):
        ChatR1().invoke("hi")
