"""The OpenAI wire format both sides use: what r1 serve writes, the remote backend reads back the same, and
requests are refused with OpenAI's errors naming the field. (End to end over HTTP: tests/ui/test_server*.py and
tests/model/backends/test_remote.py.)"""

from __future__ import annotations

import json

import httpx
import pytest
from pydantic import ValidationError

from model.backends.openai_protocol import (
    MAX_CHOICES,
    MAX_STOP,
    STREAM_END,
    APIError,
    ChatBody,
    CompletionBody,
    Reply,
    assistant_message,
    choice_text,
    chunk_parts,
    context_length,
    error_message,
    failure,
    first_tool_call,
    named_function,
    read_completion,
    sse_event,
    tool_call,
    usage,
    validation_error,
)
from model.backends.remote import _sse_events
from model.serving.request import Completion

USER = [{"role": "user", "content": "hi"}]


def chat(**fields) -> ChatBody:
    return ChatBody.model_validate({"model": "m", "messages": USER, **fields})


def refused(call) -> APIError:
    with pytest.raises(APIError) as caught:
        call()
    assert caught.value.status == 400
    return caught.value


def test_what_the_server_writes_the_client_reads_back():
    reply = Reply.new("m", chat=True)
    chunk = reply.piece(0, "Hel")
    assert chunk["object"] == "chat.completion.chunk" and chunk["id"].startswith("chatcmpl-")
    assert chunk_parts(chunk["choices"][0], chat=True) == ("", "Hel")
    text_reply = Reply.new("m", chat=False)
    assert chunk_parts(text_reply.piece(2, "lo")["choices"][0], chat=False) == ("", "lo")
    assert text_reply.ending(2, "length")["choices"][0] == {
        "index": 2,
        "text": "",
        "logprobs": None,
        "finish_reason": "length",
    }
    assert text_reply.opening(0) is None and reply.opening(0)["choices"][0]["delta"]["role"] == "assistant"

    done = [
        Completion("Hello", [1, 2], "stop", prompt_tokens=7, cached_tokens=3, generated_tokens=2),
        Completion("Hi", [3], "length", prompt_tokens=7, cached_tokens=3, generated_tokens=1),
    ]
    body = json.loads(
        json.dumps(
            reply.response(
                [reply.choice(i, assistant_message(c.text), c.finish_reason) for i, c in enumerate(done)],
                usage(done, prompts=1),
            )
        )
    )
    assert body["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 3},
    }  # the one prompt counted once
    read = read_completion(
        choice_text(body["choices"][1], chat=True), body["choices"][1]["finish_reason"], body["usage"], 0.5
    )
    assert (read.text, read.finish_reason, read.prompt_tokens, read.cached_tokens, read.generated_tokens) == (
        "Hi",
        "length",
        7,
        3,
        3,
    )
    assert read_completion("", "tool_calls", None, 0.0).finish_reason == "stop"  # one we do not know


def test_a_stream_the_server_writes_is_the_events_the_client_reads():
    reply = Reply.new("m", chat=True)
    events = [reply.opening(0), reply.piece(0, "Où"), reply.ending(0, "stop")]
    stream = "".join(sse_event(e) for e in [*events, STREAM_END]) + sse_event({"after": "the end"})
    assert list(_sse_events(httpx.Response(200, content=stream.encode()), "srv")) == events


def test_reasoning_returned_apart_comes_back_in_think_tags():
    assert choice_text({"message": {"reasoning_content": "hmm", "content": "4"}}, chat=True) == "<think>hmm</think>4"
    assert chunk_parts({"delta": {"reasoning": "so"}}, chat=True) == ("so", "")


def test_a_tool_call_written_is_the_call_read():
    message = assistant_message(None, [tool_call("weather", '{"city": "Oslo"}', "call_1")])
    assert message["content"] is None
    assert first_tool_call(json.loads(json.dumps(message))) == ("weather", '{"city": "Oslo"}')
    assert first_tool_call(assistant_message("just words")) is None
    assert named_function({"type": "function", "function": {"name": "weather"}}) == "weather"
    assert named_function({"function": {"name": "weather"}}) is None
    assert named_function({"type": "function", "function": {}}) is None


def test_errors_are_openais_shape_and_any_servers_error_reads_as_its_words():
    err = APIError(404, "no such model", param="model", code="model_not_found")
    assert err.body == {
        "error": {
            "message": "no such model",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }
    assert error_message(err.body) == "no such model"
    assert error_message({"detail": "Not Found"}) == "Not Found"
    assert error_message({"error": "overloaded"}) == "overloaded"
    failed = failure(Completion("", [], "error", prompt_tokens=1, error="boom"))
    assert failed.status == 500 and "boom" in failed.body["error"]["message"]
    assert failure(Completion("", [], "cancelled", prompt_tokens=1)).status == 503
    assert failure(Completion("ok", [], "stop", prompt_tokens=1)) is None


def test_a_body_pydantic_refuses_names_the_field():
    with pytest.raises(ValidationError) as bad:
        chat(temperature=5)
    err = validation_error(bad.value.errors())
    assert err.status == 400 and err.body["error"]["param"] == "temperature"


def test_sampling_checks():
    assert refused(lambda: chat(stop=["a"] * (MAX_STOP + 1)).stop_strings()).body["error"]["param"] == "stop"
    assert refused(lambda: chat(stop=[""]).stop_strings()).body["error"]["param"] == "stop"
    assert chat(stop="\n").stop_strings() == ("\n",)
    assert refused(lambda: chat(presence_penalty=0.5).check()).body["error"]["param"] == "presence_penalty"
    assert refused(lambda: chat(top_logprobs=2).check()).body["error"]["param"] == "top_logprobs"
    assert refused(lambda: chat(n=16).check_choices(MAX_CHOICES)).body["error"]["param"] == "prompt"
    chat(n=16).check_choices(MAX_CHOICES // 16)
    full = refused(lambda: chat().room(100, 100, None)).body["error"]
    assert (full["param"], full["code"]) == ("messages", "context_length_exceeded")
    assert refused(lambda: chat().room(90, 100, 20)).body["error"]["param"] == "max_tokens"
    assert chat().room(90, 100, 10) == 10


def test_tools_and_response_formats_are_read_as_openai_writes_them():
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert chat(tools=tools).tool_choice_name() == "auto"
    assert chat(tools=tools, tool_choice="none").tool_choice_name() is None
    assert chat(tool_choice="required").tool_choice_name() is None  # no tools, nothing to call
    assert chat(tools=tools, tool_choice={"type": "function", "function": {"name": "f"}}).tool_choice_name() == "f"
    assert (
        refused(lambda: chat(tools=tools, tool_choice={"type": "x"}).tool_choice_name()).body["error"]["param"]
        == "tool_choice"
    )
    assert refused(lambda: chat(tools=tools, stream=True).tool_choice_name()).body["error"]["param"] == "stream"
    assert [f.name for f in chat(tools=tools).functions()] == ["f"]

    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert chat().response_schema() is None
    assert (
        chat(response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}).response_schema()
        == schema
    )
    assert chat(response_format={"type": "json_object"}).response_schema() == {"type": "object"}
    assert (
        refused(lambda: chat(response_format={"type": "yaml"}).response_schema()).body["error"]["param"]
        == "response_format"
    )


def test_messages_read_as_the_model_sees_them():
    body = chat(
        messages=[
            {"role": "developer", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": '{"x": 1}'}}],
            },
        ]
    )
    assert body.chat_messages() == [
        {"role": "system", "content": "Be brief."},
        {"role": "assistant", "content": '{"tool": "f", "arguments": {"x": 1}}'},
    ]
    broken = chat(messages=[{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{"}}]}])
    assert "not JSON" in str(refused(broken.chat_messages))


def test_completion_prompts_and_checks():
    def body(**fields) -> CompletionBody:
        return CompletionBody.model_validate({"model": "m", "prompt": "x", **fields})

    assert body(prompt=[1, 2, 3]).prompts() == [[1, 2, 3]]
    assert body(prompt=["a", "b"]).prompts() == ["a", "b"]
    assert refused(body(prompt=[]).prompts).body["error"]["param"] == "prompt"
    assert refused(body(echo=True).check).body["error"]["param"] == "echo"
    assert refused(body(best_of=3).check).body["error"]["param"] == "best_of"
    assert refused(lambda: body().room(10, 10, None)).body["error"]["param"] == "prompt"


def test_the_context_a_model_list_states():
    listed = [{"id": "a", "max_model_len": 4096}, {"id": "b", "meta": {"n_ctx": 2048}}, {"id": "c"}]
    assert [context_length(listed, m) for m in ("a", "b", "c", "z")] == [4096, 2048, None, None]
