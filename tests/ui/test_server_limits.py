"""What `r1 serve` refuses, and how it shares itself, before a model is involved: Host and Origin, the API key,
body size, choices per request, the event loop, the fair share, and JSON schemas without a bounded grammar.

The app runs over a stand-in engine (the default model's real tokenizer and grammar compiler, requests that
the test completes), so each limit is tested small and fast."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from app import Settings
from app.runtime import Runtime
from model.backends.openai_protocol import MAX_CHOICES
from model.serving.grammar import GrammarCompiler
from model.serving.request import Completion, RequestHandle
from tests.servers import LiveServer
from ui.server import create_app

MODEL = "default"


class HeldRequest(RequestHandle):
    """An engine request that finishes when the test says (or at once, for an engine that does not hold)."""

    def __init__(self, ids: list[int]) -> None:
        super().__init__()
        self.ids = ids

    def finish(self, text: str = "ok", reason: str = "stop") -> None:
        if not self.done:
            self.emit(text)
            self.complete(
                Completion(
                    text=text, token_ids=[1], finish_reason=reason, prompt_tokens=len(self.ids), generated_tokens=1
                )
            )

    def cancel(self) -> None:
        self.finish("", "cancelled")


class WatchedTokenizer:
    """The real tokenizer, with `on_encode(text)` called before each encode (to watch or slow it)."""

    def __init__(self, tokenizer, on_encode: Callable[[str], None] | None) -> None:
        self._tokenizer = tokenizer
        self._on_encode = on_encode

    def __getattr__(self, name: str):
        return getattr(self._tokenizer, name)

    def encode(self, text: str, **kwargs) -> list[int]:
        if self._on_encode is not None:
            self._on_encode(text)
        return self._tokenizer.encode(text, **kwargs)


_compilers: dict[int, GrammarCompiler] = {}


def compiler_for(tokenizer) -> GrammarCompiler:
    """One grammar compiler per tokenizer for the module: building one takes about half a second."""
    if id(tokenizer) not in _compilers:
        _compilers[id(tokenizer)] = GrammarCompiler(tokenizer)
    return _compilers[id(tokenizer)]


class StandInEngine:
    """What the API calls of an engine, over the default model's tokenizer; `hold` keeps requests running."""

    context_length = 8192

    def __init__(self, tokenizer, *, hold: bool = False, on_encode: Callable[[str], None] | None = None) -> None:
        self.tokenizer = WatchedTokenizer(tokenizer, on_encode)
        self.hold = hold
        self.submitted: list[HeldRequest] = []
        self.grammar_compiler = compiler_for(tokenizer)

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        return self.tokenizer.encode(
            self.tokenizer.apply_chat_template(messages, add_generation_prompt=True), add_bos=False
        )

    def json_grammar(self, schema) -> str:
        return self.grammar_compiler.json_schema(schema)

    def submit(self, ids, **_) -> HeldRequest:
        request = HeldRequest(list(ids))
        self.submitted.append(request)
        if not self.hold:
            request.finish()
        return request


def served(
    tokenizer, *, settings: Settings | None = None, api_key: str | None = None, slots: int = 64, **engine_options
) -> tuple[LiveServer, StandInEngine]:
    """The API over a stand-in engine, ready to start (`with`), and the engine."""
    engine = StandInEngine(tokenizer, **engine_options)
    return LiveServer(create_app(Runtime(settings or Settings(), engine), api_key=api_key, slots=slots)), engine


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def completion(prompt, **fields) -> dict:
    return {"model": MODEL, "prompt": prompt, "max_tokens": 1, **fields}


# ----- 2: DNS rebinding ----------------------------------------------------------------------------


def test_a_forged_host_is_refused_and_names_of_this_server_pass(default_tokenizer):
    live, engine = served(default_tokenizer, settings=Settings(allowed_hosts=("r1.lan",)))
    with live:
        port = live.url.rsplit(":", 1)[1]
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "192.168.1.20"):
            refused = httpx.get(live.url + "/v1/models", headers={"Host": host})
            assert refused.status_code == 403, host
            assert refused.json()["error"]["code"] == "forbidden_host"
            posted = httpx.post(live.url + "/v1/completions", json=completion("hi"), headers={"Host": host})
            assert posted.status_code == 403
        for host in (
            f"127.0.0.1:{port}",
            f"localhost:{port}",
            "LOCALHOST",
            f"[::1]:{port}",
            "r1.lan",
            f"r1.lan:{port}",
        ):
            assert httpx.get(live.url + "/v1/models", headers={"Host": host}).status_code == 200, host
    assert engine.submitted == []


def test_a_cross_site_request_that_changes_state_is_refused(default_tokenizer):
    live, engine = served(default_tokenizer)
    with live:
        port = live.url.rsplit(":", 1)[1]
        for origin in ("http://evil.example", f"http://evil.example:{port}", "null", "file://"):
            refused = httpx.post(live.url + "/v1/completions", json=completion("hi"), headers={"Origin": origin})
            assert refused.status_code == 403, origin
            assert "cross-site" in refused.json()["error"]["message"]
        assert engine.submitted == []
        # Reading is not a change; the server's own pages and programs without an Origin may post.
        assert httpx.get(live.url + "/v1/models", headers={"Origin": "http://evil.example"}).status_code == 200
        assert (
            httpx.post(
                live.url + "/v1/completions", json=completion("hi"), headers={"Origin": f"http://localhost:{port}"}
            ).status_code
            == 200
        )
        assert httpx.post(live.url + "/v1/completions", json=completion("hi")).status_code == 200
    assert len(engine.submitted) == 2


# ----- 3: the API key ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["", "  "])
def test_an_empty_api_key_is_refused(default_tokenizer, key):
    with pytest.raises(ValueError, match="API key is empty"):
        create_app(Runtime(Settings(), StandInEngine(default_tokenizer)), api_key=key)


# ----- 5: denial of service ------------------------------------------------------------------------


def raw_request(url: str, head: str, timeout: float = 5.0) -> str:
    """Send only `head` (request line and headers) and return the first line of the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head.encode())
        return sock.recv(4096).decode(errors="replace").split("\r\n", 1)[0]


def test_the_api_key_is_checked_before_the_body_is_read(default_tokenizer):
    live, _ = served(default_tokenizer, api_key="sesame")
    with live:
        head = (
            "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Content-Length: 30000000\r\n\r\n"
        )
        started = time.monotonic()
        assert raw_request(live.url, head) == "HTTP/1.1 401 Unauthorized"  # without waiting for the 30 MB
        assert time.monotonic() - started < 2
        wrong = httpx.post(
            live.url + "/v1/completions", json=completion("hi"), headers={"Authorization": "Bearer guess"}
        )
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        right = httpx.post(
            live.url + "/v1/completions", json=completion("hi"), headers={"Authorization": "Bearer sesame"}
        )
        assert right.status_code == 200


def test_a_body_over_the_limit_is_a_413_in_openai_shape(default_tokenizer):
    live, engine = served(default_tokenizer, settings=Settings(max_request_mb=0.01))  # 10,485 bytes
    with live:
        big = completion("word " * 4000)
        declared = httpx.post(live.url + "/v1/completions", json=big)
        assert declared.status_code == 413
        assert declared.json()["error"]["code"] == "request_too_large"
        assert set(declared.json()["error"]) == {"message", "type", "param", "code"}

        def chunks():  # no Content-Length: the server counts what arrives
            payload = json.dumps(big).encode()
            for i in range(0, len(payload), 1000):
                yield payload[i : i + 1000]

        chunked = httpx.post(
            live.url + "/v1/completions", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert chunked.status_code == 413
        assert httpx.post(live.url + "/v1/completions", json=completion("word " * 100)).status_code == 200
    assert len(engine.submitted) == 1


def test_a_long_prompt_is_tokenized_off_the_event_loop(default_tokenizer):
    tokenizing = threading.Event()

    def slow(text: str) -> None:
        if text.startswith("slow"):
            tokenizing.set()
            time.sleep(3)  # as a 12 MB prompt takes seconds

    live, _ = served(default_tokenizer, on_encode=slow)
    with live:
        answer: dict = {}
        worker = threading.Thread(
            target=lambda: answer.update(
                r=httpx.post(live.url + "/v1/completions", json=completion("slow prompt"), timeout=30)
            )
        )
        worker.start()
        assert tokenizing.wait(10)
        started = time.monotonic()
        assert httpx.get(live.url + "/v1/models", timeout=10).status_code == 200
        assert time.monotonic() - started < 1.5, "GET /v1/models waited for the tokenizer"
        worker.join(30)
        assert answer["r"].status_code == 200


def test_prompts_times_n_over_the_cap_is_a_400(default_tokenizer):
    live, engine = served(default_tokenizer)
    with live:
        for prompts, n in (([f"p{i}" for i in range(1000)], 16), (["a", "b", "c", "d", "e"], 16)):
            refused = httpx.post(live.url + "/v1/completions", json=completion(prompts, n=n))
            assert refused.status_code == 400
            assert refused.json()["error"]["param"] == "prompt"
            assert f"at most {MAX_CHOICES}" in refused.json()["error"]["message"]
        assert httpx.post(live.url + "/v1/completions", json=completion(["a"] * 4, n=16)).status_code == 200
    assert len(engine.submitted) == MAX_CHOICES


def test_a_big_request_does_not_starve_another_client(default_tokenizer):
    """Two slots; one request of 8 choices holds both. A second request gets the next slot that frees."""
    live, engine = served(default_tokenizer, hold=True, slots=2)
    with live:
        answers: dict = {}

        def post(name: str, body: dict) -> None:
            answers[name] = httpx.post(live.url + "/v1/completions", json=body, timeout=30)

        big = threading.Thread(target=post, args=("big", completion("the big one", n=8)))
        big.start()
        wait_for(lambda: len(engine.submitted) == 2, "the big request's first two choices")
        time.sleep(0.3)
        assert len(engine.submitted) == 2, "more choices ran than there are slots"
        share = live.server.config.app.state.fair_share
        assert len(share.waiting) == 6
        small = threading.Thread(target=post, args=("small", completion("a small one")))
        small.start()
        wait_for(lambda: len(share.waiting) == 7, "the small request to queue")  # behind the slots, not in the engine
        assert len(engine.submitted) == 2
        engine.submitted[0].finish()
        wait_for(lambda: len(engine.submitted) == 3, "the next choice")
        small_ids = default_tokenizer.encode("a small one")
        assert engine.submitted[2].ids == small_ids, "the freed slot went to the big request again"
        while not all(r.done for r in engine.submitted) or len(engine.submitted) < 9:
            for request in list(engine.submitted):
                request.finish()
            time.sleep(0.02)
        big.join(30)
        small.join(30)
    assert answers["big"].status_code == 200 and len(answers["big"].json()["choices"]) == 8
    assert answers["small"].status_code == 200


# ----- 10: schemas without a bounded grammar --------------------------------------------------------


def nested(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


BAD_SCHEMAS = {
    "350-deep": (nested(350), "nests deeper"),
    "ref-root": ({"$ref": "#"}, "refers to itself"),
    "self-defs": (
        {
            "$defs": {"a": {"type": "object", "properties": {"x": {"$ref": "#/$defs/a"}}, "required": ["x"]}},
            "$ref": "#/$defs/a",
        },
        "refers to itself",
    ),
    "anyOf-3000": (
        {
            "type": "object",
            "properties": {"x": {"anyOf": [{"const": f"v{i}"} for i in range(3000)]}},
            "required": ["x"],
        },
        "alternatives",
    ),
}


def test_deeply_nested_tool_call_arguments_are_a_400(default_tokenizer):
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "[" * 100_000 + "]" * 100_000}}
    body = {
        "model": MODEL,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [call]}],
    }
    live, engine = served(default_tokenizer)
    with live:
        answer = httpx.post(live.url + "/v1/chat/completions", json=body, timeout=30)
    assert answer.status_code == 400 and "not JSON" in answer.json()["error"]["message"]
    assert engine.submitted == []


@pytest.mark.parametrize("name", list(BAD_SCHEMAS))
@pytest.mark.parametrize("where", ["tools", "response_format"])
def test_a_schema_without_a_bounded_grammar_is_a_400(default_tokenizer, name, where):
    schema, message = BAD_SCHEMAS[name]
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    if where == "tools":
        body["tools"] = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
        body["tool_choice"] = "required"
    else:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    live, engine = served(default_tokenizer)
    with live:
        answer = httpx.post(live.url + "/v1/chat/completions", json=body, timeout=30)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]["message"]
    assert answer.json()["error"]["param"] == where
    assert engine.submitted == []  # found when the grammar was built, not during generation
