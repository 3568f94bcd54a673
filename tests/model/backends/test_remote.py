"""The remote backend against our own API server (the real default model, over loopback), plus the failure
paths through a real proxy in front of it that fails, stalls or disappears on purpose."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import httpx
import jsonschema
import pytest
from starlette.applications import Starlette
from starlette.requests import Request as HTTPRequest
from starlette.responses import Response
from starlette.routing import Route

from model.backends.remote import OpenAIBackend, RemoteConfig, RemoteError, _first_json_object, _sse_events
from tests.servers import LiveServer, free_port
from ui.server import create_app

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


# ----- fast: the pieces that parse what servers send -------------------------------------------------------


def test_server_sent_events_are_read_up_to_done_and_errors_name_the_server():
    body = (
        b'data: {"choices": [{"delta": {"content": "Hi"}}]}\n\n: a comment\n\n'
        b'data: {"choices": [{"delta": {"content": "!"}}]}\n\ndata: [DONE]\n\ndata: {"after": "done"}\n\n'
    )
    events = list(_sse_events(httpx.Response(200, content=body), "srv"))
    assert [e["choices"][0]["delta"]["content"] for e in events] == ["Hi", "!"]
    failing = httpx.Response(200, content=b'data: {"error": {"message": "out of memory"}}\n\n')
    with pytest.raises(RemoteError, match="srv: out of memory"):
        list(_sse_events(failing, "srv"))


def test_first_json_object_skips_prose_and_broken_braces():
    assert _first_json_object('Sure! {"a": {"b": 1}} and {"c": 2}') == '{"a": {"b": 1}}'
    assert _first_json_object('{oops} then ```json\n{"ok": true}\n```') == '{"ok": true}'
    assert _first_json_object("[1, 2] no object") is None


def test_unreachable_server_is_a_one_line_error_naming_it():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ValueError, match=f"cannot reach an OpenAI-compatible server at {url}"):
        OpenAIBackend(RemoteConfig(url, retries=0))


# ----- against our server ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(runtime):
    with LiveServer(create_app(runtime)) as live:
        yield live


@pytest.fixture(scope="module")
def remote(server):
    backend = OpenAIBackend(RemoteConfig(server.url + "/v1"))
    yield backend
    backend.close()


@pytest.mark.slow
def test_our_server_offers_every_feature_and_is_recognised(remote, server):
    caps = remote.capabilities
    assert (caps.ours, caps.completions, caps.streaming, caps.n, caps.logprobs, caps.tools) == (True,) * 6
    assert caps.structured == "json_schema" and caps.reasoning_content is False
    assert remote.action_mode == "tools"  # our server: its grammar-constrained tools
    assert remote.model == "default" and server.url in remote.name
    assert dict(remote.status())["server"] == server.url + "/v1"


@pytest.mark.slow
def test_a_base_url_without_v1_is_found(server):
    backend = OpenAIBackend(RemoteConfig(server.url))
    try:
        assert backend.base_url == server.url + "/v1"
    finally:
        backend.close()


@pytest.mark.slow
def test_streamed_chat_is_the_local_engines_reply(remote, runtime):
    local = runtime.engine.chat(QUESTION, max_new_tokens=12)
    request = remote.submit(remote.chat_prompt(QUESTION), max_new_tokens=12)
    deltas = list(request.stream())
    completion = request.result()
    assert "".join(deltas) == completion.text == local
    assert len(deltas) > 1  # streamed, not one piece
    assert completion.finish_reason in ("stop", "length") and completion.prompt_tokens > 0
    assert completion.generated_tokens == 12 or completion.finish_reason == "stop"
    assert remote.generate("The capital of France is", max_new_tokens=5) == runtime.engine.generate(
        "The capital of France is", max_new_tokens=5
    )


@pytest.mark.slow
def test_sampled_siblings_go_as_one_request_with_n(remote, submitted):
    from model import SamplingParams

    prompt = remote.text_prompt("Problem: 6 * 7 = ?\nStep 1:")
    params = [SamplingParams(max_new_tokens=4, temperature=0.0, stop=("\n",))] + [
        SamplingParams(max_new_tokens=4, temperature=0.8, seed=s, stop=("\n",)) for s in (1, 2, 3)
    ]
    before = dict(remote._counts)
    done = remote.generate_batch([prompt] * 4, params)
    assert len(done) == 4 and all(c.finish_reason in ("stop", "length") for c in done)
    assert remote._counts["requests"] - before["requests"] == 2  # the greedy one, and n=3 for the samples
    assert len(submitted) == 4  # the server ran every choice
    assert sum(c.generated_tokens for c in done) == sum(r.result().generated_tokens for r in submitted)
    assert all(c.prompt_tokens > 0 for c in done)


@pytest.mark.slow
def test_without_n_siblings_go_as_separate_concurrent_requests(server, submitted):
    from model import SamplingParams

    backend = OpenAIBackend(RemoteConfig(server.url + "/v1"))
    backend.capabilities = dataclasses.replace(backend.capabilities, n=False)  # as a server without `n` is probed
    try:
        before = backend._counts["requests"]
        params = [SamplingParams(max_new_tokens=4, temperature=0.8, seed=s) for s in range(3)]
        done = backend.generate_batch(["Once upon a time"] * 3, params)
        assert backend._counts["requests"] - before == 3 and len(done) == 3
    finally:
        backend.close()


@pytest.mark.slow
def test_cancelling_a_stream_stops_generation_on_the_server(remote, submitted):
    request = remote.submit("Count from 1 to 1000: 1, 2, 3, 4,", max_new_tokens=1000)
    stream = request.stream()
    for _ in range(3):
        next(stream)
    stream.close()  # closing the iterator cancels, as with the local engine
    assert request.result(timeout=30).finish_reason == "cancelled"
    [served] = submitted
    assert served.result(timeout=30).finish_reason == "cancelled"
    assert served.result().generated_tokens < 1000


@pytest.mark.slow
def test_json_and_actions_are_constrained_by_the_servers_grammar(remote):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}, "is_large": {"type": "boolean"}},
        "required": ["city", "is_large"],
        "additionalProperties": False,
    }
    done = remote.chat_json(QUESTION, schema, max_new_tokens=40)
    assert done.finish_reason == "stop"
    jsonschema.validate(json.loads(done.text), schema)
    tools = {
        "get_weather": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
            "required": ["city"],
            "additionalProperties": False,
        }
    }
    messages = [
        {"role": "system", "content": "Call get_weather for weather questions."},
        {"role": "user", "content": "What is the weather in Paris?"},
    ]
    action = json.loads(remote.chat_action(messages, tools, message_max_length=80, max_new_tokens=40).text)
    assert action in (
        {"tool": "get_weather", "arguments": {"city": "Paris"}},
        {"tool": "get_weather", "arguments": {"city": "Rome"}},
    ) or set(action) == {"message"}


@pytest.mark.slow
def test_requests_the_server_rejects_are_value_errors_naming_it(remote):
    with pytest.raises(ValueError, match=r"default at http://127\.0\.0\.1:\d+/v1 rejected /completions \(400\)"):
        remote.submit("Hello", max_new_tokens=10**6)
    with pytest.raises(ValueError, match="token-id prompts need the local engine"):
        remote.submit([1, 2, 3])
    with pytest.raises(ValueError, match="at most 4 stop strings"):
        remote.submit("Hello", stop=("a", "b", "c", "d", "e"))


@pytest.mark.slow
def test_an_unknown_model_is_named_in_the_error(server):
    with pytest.raises(ValueError, match="'nope' does not exist"):
        OpenAIBackend(RemoteConfig(server.url + "/v1", model="nope"))


# ----- failures, through a real proxy in front of the real server -----------------------------------------


class Proxy:
    """Forwards to `target`; the next `fail` POSTs get 503, and every POST waits `delay` seconds first."""

    def __init__(self, target: str) -> None:
        self.target, self.fail, self.delay, self.posts = target, 0, 0.0, 0
        self.client = httpx.AsyncClient(timeout=120)

    async def handle(self, request: HTTPRequest) -> Response:
        if request.method == "POST":
            self.posts += 1
            await asyncio.sleep(self.delay)
            if self.fail > 0:
                self.fail -= 1
                return Response(
                    json.dumps({"error": {"message": "overloaded, try later"}}),
                    status_code=503,
                    headers={"retry-after": "0.1"},
                )
        upstream = await self.client.request(
            request.method,
            self.target + request.url.path,
            content=await request.body(),
            headers={"content-type": "application/json"},
        )
        return Response(
            upstream.content, status_code=upstream.status_code, media_type=upstream.headers.get("content-type")
        )


@pytest.fixture(scope="module")
def proxy(server):
    forward = Proxy(server.url)
    app = Starlette(routes=[Route("/{path:path}", forward.handle, methods=["GET", "POST"])])
    with LiveServer(app) as live:
        forward.url = live.url
        yield forward


@pytest.mark.slow
def test_overloaded_server_is_retried_with_backoff(proxy):
    backend = OpenAIBackend(RemoteConfig(proxy.url + "/v1", retries=3, tool_calls="json_schema"))
    try:
        proxy.fail = 2
        assert backend.generate("The capital of France is", max_new_tokens=3)  # non-streamed: proxy buffers
        assert backend._counts["retries"] == 2 and proxy.fail == 0
        proxy.fail = 5
        with pytest.raises(RemoteError, match=r"/completions failed \(503\): overloaded, try later"):
            backend.generate_batch(["Hi"], None)
    finally:
        proxy.fail = 0
        backend.close()


@pytest.mark.slow
def test_a_silent_server_times_out_with_its_name(proxy):
    backend = OpenAIBackend(RemoteConfig(proxy.url + "/v1"))
    slow = dataclasses.replace(backend.config, timeout=0.3, retries=0)
    backend.config = slow
    backend._client.timeout = httpx.Timeout(0.3)
    try:
        proxy.delay = 2.0
        with pytest.raises(RemoteError, match=rf"default at {proxy.url}/v1: no answer to /completions within 0.3 s"):
            backend.generate_batch(["Hi"], None)
    finally:
        proxy.delay = 0.0
        backend.close()
