"""The OpenAI-compatible API, driven by the official `openai` client over loopback against the real model."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.servers import LiveServer
from ui.server import create_app

pytestmark = pytest.mark.slow

MODEL = "default"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server(runtime):
    with LiveServer(create_app(runtime)) as live:
        yield live


@pytest.fixture
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_plain_chat_completion_answers_with_usage_and_logprobs(client):
    reply = client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=16, temperature=0, logprobs=True, top_logprobs=3
    )
    choice = reply.choices[0]
    assert "Paris" in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    tokens = choice.logprobs.content
    assert "".join(t.token for t in tokens) == choice.message.content
    assert all(len(t.top_logprobs) == 3 and t.logprob <= 0 for t in tokens)
    assert tokens[0].top_logprobs[0].logprob >= tokens[0].top_logprobs[-1].logprob
    assert reply.usage.completion_tokens == len(tokens)
    assert reply.usage.prompt_tokens > 0


def test_streaming_chat_matches_the_plain_answer(client):
    plain = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=16, temperature=0)
    stream = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=16, temperature=0, stream=True)
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1  # it really streamed, token by token
    assert "".join(pieces) == plain.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == plain.choices[0].finish_reason


def test_n_choices_sampled_with_a_seed_are_reproducible(client, submitted):
    def ask():
        return client.chat.completions.create(
            model=MODEL, messages=QUESTION, max_tokens=12, temperature=1.0, n=4, seed=7
        )

    first, second = ask(), ask()
    assert [c.index for c in first.choices] == [0, 1, 2, 3]
    texts = [c.message.content for c in first.choices]
    assert texts == [c.message.content for c in second.choices]
    assert len(set(texts)) > 1  # each choice has its own seed
    assert len(submitted) == 8  # one engine request per choice
    assert first.usage.completion_tokens == sum(r.result().generated_tokens for r in submitted[:4])
    assert first.usage.prompt_tokens == submitted[0].result().prompt_tokens  # the prompt counts once


def test_text_completion_with_stop_and_logprobs(client):
    reply = client.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=16, temperature=0, stop=["."], logprobs=2
    )
    choice = reply.choices[0]
    assert "Paris" in choice.text and "." not in choice.text
    assert choice.finish_reason == "stop"
    assert "".join(choice.logprobs.tokens) == choice.text
    assert all(len(top) == 2 for top in choice.logprobs.top_logprobs)


def test_malformed_requests_get_openai_errors(client, server):
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=5)
    assert bad.value.status_code == 400 and bad.value.body["param"] == "temperature"
    assert bad.value.body["type"] == "invalid_request_error"

    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert missing.value.body["code"] == "model_not_found"

    raw = httpx.post(
        server.url + "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert raw.status_code == 400
    assert set(raw.json()["error"]) == {"message", "type", "param", "code"}

    long_prompt = [{"role": "user", "content": "word " * 10_000}]
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(model=MODEL, messages=long_prompt, max_tokens=4)
    assert too_long.value.body["code"] == "context_length_exceeded"


ORDER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_order_details",
        "description": "Look up an order by its id.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string", "pattern": "^#W[0-9]{7}$"}},
            "required": ["order_id"],
            "additionalProperties": False,
        },
    },
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Today's weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 40}},
            "required": ["city"],
        },
    },
}


def test_required_tool_calls_are_always_valid_calls(client):
    """The grammar makes even the 135M model emit a call that parses and matches the tool's schema."""
    import jsonschema

    messages = [{"role": "user", "content": "Where is my order #W1234567?"}]
    # max_tokens leaves room for the longest call the schemas allow (a 40-character city can take 80 tokens)
    reply = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        tools=[ORDER_TOOL, WEATHER_TOOL],
        tool_choice="required",
        max_tokens=200,
        n=3,
        temperature=1.0,
        seed=3,
    )
    for choice in reply.choices:
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        (call,) = choice.message.tool_calls
        spec = {"get_order_details": ORDER_TOOL, "weather": WEATHER_TOOL}[call.function.name]["function"]
        jsonschema.validate(json.loads(call.function.arguments), spec["parameters"])
    forced = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        tools=[ORDER_TOOL, WEATHER_TOOL],
        max_tokens=200,
        tool_choice={"type": "function", "function": {"name": "weather"}},
    )
    assert forced.choices[0].message.tool_calls[0].function.name == "weather"


def test_a_tool_result_goes_back_to_the_model(client):
    first = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Order #W1234567?"}],
        tools=[ORDER_TOOL],
        tool_choice="required",
        max_tokens=200,
    )
    call = first.choices[0].message.tool_calls[0]
    follow_up = [
        {"role": "user", "content": "Order #W1234567?"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "status: delivered"},
    ]
    reply = client.chat.completions.create(model=MODEL, messages=follow_up, tools=[ORDER_TOOL], max_tokens=40)
    choice = reply.choices[0]
    assert (choice.message.content or "").strip() or choice.message.tool_calls  # a message or another valid call


def test_bad_tool_requests_are_clear_400s(client):
    with pytest.raises(openai.BadRequestError, match="not among the tools"):
        client.chat.completions.create(
            model=MODEL,
            messages=QUESTION,
            tools=[ORDER_TOOL],
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )
    with pytest.raises(openai.BadRequestError, match="stream"):
        client.chat.completions.create(model=MODEL, messages=QUESTION, tools=[ORDER_TOOL], stream=True)
    plain = client.chat.completions.create(
        model=MODEL, messages=QUESTION, tools=[ORDER_TOOL], tool_choice="none", max_tokens=8
    )
    assert plain.choices[0].message.tool_calls is None


def test_api_key_is_required_when_set(runtime):
    with LiveServer(create_app(runtime, api_key="sesame")) as live:
        wrong = openai.OpenAI(base_url=live.url + "/v1", api_key="guess", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        right = openai.OpenAI(base_url=live.url + "/v1", api_key="sesame", max_retries=0)
        assert [m.id for m in right.models.list().data] == [MODEL]


def test_eight_concurrent_streaming_clients_all_complete(client, submitted):
    def chat(i: int) -> tuple[str, str]:
        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"Say a sentence about the number {i}."}],
            max_tokens=16,
            temperature=0,
            stream=True,
        )
        text, finish = "", None
        for chunk in stream:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        return text, finish

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(chat, range(8)))
    assert all(text and finish in ("stop", "length") for text, finish in results)
    assert len(submitted) == 8 and all(r.result().finish_reason in ("stop", "length") for r in submitted)
    # They were served together: at some moment most of them were in flight in the same engine.
    spans = [(r.submitted_at, r.submitted_at + r.result().seconds) for r in submitted]
    peak = max(sum(start <= t < end for start, end in spans) for t, _ in spans)
    assert peak >= 4


def test_client_disconnect_mid_stream_cancels_the_request(client, submitted):
    stream = client.completions.create(
        model=MODEL, prompt="Count from 1 to 1000: 1, 2, 3, 4,", max_tokens=1000, temperature=0, stream=True
    )
    received = 0
    for _chunk in stream:
        received += 1
        if received == 3:
            break
    stream.close()
    [request] = submitted
    completion = request.result(timeout=30)
    assert completion.finish_reason == "cancelled"
    assert completion.generated_tokens < 1000
