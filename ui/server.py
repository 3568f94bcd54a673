"""An OpenAI-compatible HTTP API over the engine: /v1/models, /v1/chat/completions, /v1/completions.

Every choice of every request is one `engine.submit`, so concurrent clients (and `n` > 1) are batched
by the scheduler step by step and share cached prompt prefixes. Each engine request is drained by a
small thread into the event loop; a client that goes away (mid-stream or while waiting) cancels its
requests within one scheduler step. Errors use OpenAI's shape: {"error": {message, type, param, code}}.

Fields left out take OpenAI's defaults (temperature 1, top_p 1, n 1); `max_tokens` defaults to the
`max_new_tokens` setting, cut to what the context window has room for.

Before a route sees a request: the Host and Origin checks of `ui.http_guard`, then the API key and the body's
size (`_Gate`: both before the body is read). Prompts are tokenized and grammars compiled in a worker thread,
never on the event loop, and the choices of every request queue for the engine through `ui.fair_share`.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.runtime import Runtime
from app.tool_calls import FunctionTool, ToolCallGrammar
from model.serving.request import Completion, GenerationError, Request
from ui.fair_share import FairShare
from ui.http_guard import HostGuard, error_body

MAX_N = 16  # choices per prompt
MAX_CHOICES = 64  # prompts x n per request: each choice is an engine request and a thread
RUNNING_CHOICES = 64  # engine requests the server keeps running at once: the scheduler's batch (max_running)
MAX_STOP = 4  # stop strings per request, as OpenAI allows
MAX_TOP_LOGPROBS = 20


class APIError(Exception):
    """An error answered in OpenAI's JSON shape with its HTTP status."""

    def __init__(
        self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = error_body(message, type=type, param=param, code=code)

    async def send(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer with this error from ASGI middleware, before any route runs."""
        await JSONResponse(self.body, status_code=self.status)(scope, receive, send)


# ----- request bodies ----------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send fields we do not use (user, metadata, ...)


class StreamOptions(_Body):
    include_usage: bool = False


class _SamplingBody(_Body):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None

    def stop_strings(self) -> tuple[str, ...]:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or ())
        if len(stop) > MAX_STOP:
            raise APIError(400, f"at most {MAX_STOP} stop sequences are allowed, got {len(stop)}", param="stop")
        if any(s == "" for s in stop):
            raise APIError(400, "stop sequences must not be empty", param="stop")
        return tuple(stop)

    def check_unsupported(self) -> None:
        for name in ("frequency_penalty", "presence_penalty"):
            if getattr(self, name) != 0:
                raise APIError(400, f"{name} is not supported; leave it at 0", param=name)
        if self.logit_bias:
            raise APIError(400, "logit_bias is not supported", param="logit_bias")


class TextPart(_Body):
    type: Literal["text"]
    text: str


class FunctionCallIn(_Body):
    name: str
    arguments: str


class ToolCallIn(_Body):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessageIn(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    tool_calls: list[ToolCallIn] | None = None  # an assistant turn that called tools
    tool_call_id: str | None = None  # a tool turn: the result of that call

    def text(self) -> str:
        """The turn as the model sees it; an earlier tool call reads as the JSON action it was decoded as."""
        if self.tool_calls:
            return "\n".join(
                json.dumps({"tool": c.function.name, "arguments": _json_object(c.function.arguments)}) for c in self.tool_calls
            )
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


def _json_object(text: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):  # RecursionError: nested deeper than the parser goes
        raise APIError(400, f"tool call arguments are not JSON: {text[:80]!r}", param="messages") from None


class FunctionSpec(_Body):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolSpec(_Body):
    type: Literal["function"]
    function: FunctionSpec


class ChatBody(_SamplingBody):
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: list[ToolSpec] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None


class CompletionBody(_SamplingBody):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None


# ----- one submitted choice ----------------------------------------------------------------------


@dataclass
class _Choice:
    """One choice to generate: `start` submits it to the engine once the fair share lets it run."""

    index: int
    start: Callable[[], Request]
    request: Request | None = None


_END = object()
_request_ids = itertools.count()


def _drain(choice: _Choice, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, ended: Callable[[], None]) -> None:
    """Thread body: move one request's text deltas into the event loop's queue, then an end marker."""
    try:
        for delta in choice.request.stream():
            loop.call_soon_threadsafe(queue.put_nowait, (choice.index, delta))
    except GenerationError:
        pass  # the completion carries the error; the handler reports it
    finally:
        try:
            loop.call_soon_threadsafe(ended)
            loop.call_soon_threadsafe(queue.put_nowait, (choice.index, _END))
        except RuntimeError:  # the loop is closed: the server is gone
            pass


async def _deltas(choices: Sequence[_Choice], share: FairShare, client: str) -> AsyncIterator[tuple[int, str]]:
    """(choice index, text delta) from every choice as produced, each started when `share` gives it a slot;
    cancels them all if the consumer stops early."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    request_id = next(_request_ids)

    def ended() -> None:
        share.release(client, request_id)

    async def start(choice: _Choice) -> None:
        await share.acquire(client, request_id)
        try:
            choice.request = choice.start()
        except Exception as err:  # the engine refused it (e.g. a token id outside the vocabulary)
            ended()
            queue.put_nowait((choice.index, err))
            return
        threading.Thread(target=_drain, args=(choice, loop, queue, ended), daemon=True,
                         name=f"r1-api-{choice.request.id}").start()

    starters = [asyncio.ensure_future(start(choice)) for choice in choices]
    running = len(choices)
    try:
        while running:
            index, delta = await queue.get()
            if delta is _END:
                running -= 1
            elif isinstance(delta, ValueError):
                raise APIError(400, str(delta), param="prompt")
            elif isinstance(delta, Exception):
                raise delta
            else:
                yield index, delta
    finally:
        for starter in starters:
            starter.cancel()
        _cancel(choices)


async def _until_disconnected(http: HTTPRequest) -> None:
    while (await http.receive())["type"] != "http.disconnect":
        pass


async def _wait_all(http: HTTPRequest, choices: Sequence[_Choice], deltas: AsyncIterator) -> list[Completion]:
    """Wait for every choice to finish; a client that disconnects first cancels them all."""

    async def collect() -> None:
        async for _ in deltas:
            pass

    work = asyncio.ensure_future(collect())
    watch = asyncio.ensure_future(_until_disconnected(http))
    await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    watch.cancel()
    if not work.done():
        work.cancel()
        _cancel(choices)
        raise APIError(499, "the client closed the request")  # nobody is left to read it
    work.result()  # raises what ended it early: a choice the engine refused
    completions = [choice.request.result() for choice in choices]  # all finished: their drains ended
    for completion in completions:
        _raise_if_failed(completion)
    return completions


def _raise_if_failed(completion: Completion) -> None:
    if completion.finish_reason == "error":
        raise APIError(500, f"generation failed: {completion.error}", type="server_error")
    if completion.finish_reason == "cancelled":
        raise APIError(503, "the request was cancelled (the server is shutting down or reloading its model)", type="server_error")


# ----- the app -----------------------------------------------------------------------------------


class _Gate:
    """ASGI middleware: the API key is checked, and the body read up to `max_body` bytes, before any route runs.

    FastAPI reads and parses a body before it resolves a route's dependencies, so an auth dependency would come
    too late: a stranger could make the server read and parse any amount of JSON.
    """

    def __init__(self, app: ASGIApp, *, api_key: str | None, max_body: int) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if self.api_key is not None:
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.api_key.encode()):
                await APIError(401, "missing or wrong API key (send 'Authorization: Bearer <key>')",
                               code="invalid_api_key").send(scope, receive, send)
                return
        too_large = APIError(413, f"the request body is larger than the server's limit of {self.max_body} bytes "
                             "(r1 serve --max-request-mb)", code="request_too_large")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            await too_large.send(scope, receive, send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body:
                await too_large.send(scope, receive, send)
                return
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: the disconnect the handlers watch for
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


def create_app(runtime: Runtime, *, api_key: str | None = None, slots: int = RUNNING_CHOICES) -> FastAPI:
    """The API app over `runtime`'s engine; `api_key` set = every call needs `Authorization: Bearer <key>`.

    The runtime's settings give the Host names served (`host`, `allowed_hosts`) and the largest request body
    (`max_request_mb`); `slots` is how many engine requests run at once, shared fairly between clients.
    """
    if api_key is not None and not api_key.strip():
        raise ValueError("the API key is empty: give a key, or None to serve without one")
    settings = runtime.settings
    app = FastAPI(title="r1-reasoner", docs_url=None, redoc_url=None, openapi_url=None, middleware=[
        Middleware(HostGuard, bound_host=settings.host, allowed_hosts=settings.allowed_hosts),
        Middleware(_Gate, api_key=api_key, max_body=int(settings.max_request_mb * (1 << 20))),
    ])
    model_id = settings.model
    share = app.state.fair_share = FairShare(slots)

    def client(http: HTTPRequest) -> str:
        return http.client.host if http.client else "unknown"

    @app.exception_handler(APIError)
    async def api_error(_: HTTPRequest, err: APIError) -> JSONResponse:
        return JSONResponse(err.body, status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_: HTTPRequest, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        if first.get("type") == "json_invalid":
            reason = first.get("ctx", {}).get("error", "")
            return JSONResponse(APIError(400, f"the request body is not valid JSON: {reason}".rstrip(": ")).body, status_code=400)
        where = [str(part) for part in first.get("loc", ()) if part != "body"]
        param = ".".join(where) or None
        message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
        return JSONResponse(APIError(400, message, param=param).body, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: HTTPRequest, err: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if err.status_code == 404 else None
        return JSONResponse(APIError(err.status_code, str(err.detail), code=code).body, status_code=err.status_code)

    @app.exception_handler(Exception)
    async def unexpected(_: HTTPRequest, err: Exception) -> JSONResponse:
        return JSONResponse(APIError(500, f"internal error: {err}", type="server_error").body, status_code=500)

    def check_model(name: str) -> None:
        if name != model_id:
            raise APIError(404, f"the model {name!r} does not exist; this server serves {model_id!r}", param="model", code="model_not_found")

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(model_id)]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str) -> dict[str, Any]:
        check_model(name)
        return _model_card(model_id)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatBody, http: HTTPRequest):
        check_model(body.model)
        body.check_unsupported()
        if body.top_logprobs and not body.logprobs:
            raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        if body.stream and body.logprobs:
            raise APIError(400, "logprobs are not supported with stream: true", param="logprobs")
        top = body.top_logprobs or 0
        engine = runtime.engine

        def prepare() -> tuple[ToolCallGrammar | None, list[_Choice]]:  # grammars and tokens: CPU work, off the loop
            grammar = _tool_grammar(engine, body)
            json_grammar = _response_grammar(engine, body)
            if grammar is not None and json_grammar is not None:
                raise APIError(400, "tools and a JSON response_format cannot be combined", param="response_format")
            messages = [
                {"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages
            ]
            if grammar is not None:
                messages = grammar.with_tools(messages)
            processor = grammar.processor if grammar is not None else None
            if json_grammar is not None:
                processor = lambda: engine.grammar_compiler.processor(json_grammar)  # noqa: E731
            return grammar, _choices(runtime, [engine.chat_prompt(messages)], body,
                                     body.max_completion_tokens or body.max_tokens,
                                     logprobs=max(1, top) if body.logprobs else 0, processor=processor)

        grammar, choices = await run_in_threadpool(prepare)
        deltas = _deltas(choices, share, client(http))
        meta = _Meta("chatcmpl-" + uuid.uuid4().hex, int(time.time()), model_id)
        if body.stream:
            return _sse(_chat_stream(meta, choices, deltas,
                                     include_usage=bool(body.stream_options and body.stream_options.include_usage)))
        completions = await _wait_all(http, choices, deltas)
        tokenizer = engine.tokenizer
        return {
            "id": meta.id, "object": "chat.completion", "created": meta.created, "model": meta.model,
            "choices": [
                {
                    "index": i,
                    **_chat_message(c, grammar),
                    "logprobs": _chat_logprobs(tokenizer, c, top) if body.logprobs else None,
                }
                for i, c in enumerate(completions)
            ],
            "usage": _usage(completions, prompts=1),
        }

    @app.post("/v1/completions")
    async def completions(body: CompletionBody, http: HTTPRequest):
        check_model(body.model)
        body.check_unsupported()
        if body.echo:
            raise APIError(400, "echo is not supported", param="echo")
        if body.suffix:
            raise APIError(400, "suffix is not supported", param="suffix")
        if body.best_of is not None and body.best_of != body.n:
            raise APIError(400, "best_of other than n is not supported", param="best_of")
        if body.stream and body.logprobs is not None:
            raise APIError(400, "logprobs are not supported with stream: true", param="logprobs")
        prompts = _prompts(body.prompt)
        choices = await run_in_threadpool(_choices, runtime, prompts, body, body.max_tokens,
                                          logprobs=max(1, body.logprobs) if body.logprobs is not None else 0)
        deltas = _deltas(choices, share, client(http))
        meta = _Meta("cmpl-" + uuid.uuid4().hex, int(time.time()), model_id)
        if body.stream:
            return _sse(_completion_stream(meta, choices, deltas, prompts=len(prompts),
                                           include_usage=bool(body.stream_options and body.stream_options.include_usage)))
        done = await _wait_all(http, choices, deltas)
        tokenizer = runtime.engine.tokenizer
        return {
            "id": meta.id, "object": "text_completion", "created": meta.created, "model": meta.model,
            "choices": [
                {
                    "index": i,
                    "text": c.text,
                    "logprobs": _completion_logprobs(tokenizer, c, body.logprobs) if body.logprobs is not None else None,
                    "finish_reason": c.finish_reason,
                }
                for i, c in enumerate(done)
            ],
            "usage": _usage(done, prompts=len(prompts)),
        }

    return app


def _model_card(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "r1-reasoner"}


def _prompts(prompt: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise APIError(400, "prompt must not be empty", param="prompt")
    if all(isinstance(p, int) for p in prompt):
        return [prompt]
    return list(prompt)


def _tool_grammar(engine, body: ChatBody) -> ToolCallGrammar | None:
    """The grammar for the request's `tools` and `tool_choice`, or None when no tool may be called."""
    if not body.tools or body.tool_choice == "none":
        return None
    if body.stream:
        raise APIError(400, "stream is not supported together with tools", param="stream")
    choice = body.tool_choice or "auto"
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if choice.get("type") != "function" or not isinstance(name, str):
            raise APIError(400, "tool_choice must be 'none', 'auto', 'required' or {'type': 'function', 'function': "
                           "{'name': ...}}", param="tool_choice")
        choice = name
    tools = [FunctionTool(t.function.name, t.function.description or "", t.function.parameters or {"type": "object"})
             for t in body.tools]
    try:
        return ToolCallGrammar(engine, tools, choice)
    except ValueError as err:  # an unknown tool_choice name, or a schema the grammar cannot take
        raise APIError(400, str(err), param="tools") from None


def _response_grammar(engine, body: ChatBody) -> str | None:
    """The grammar for a JSON `response_format` (OpenAI's json_schema, or json_object with an optional `schema`
    as llama-cpp-python takes it), or None for text."""
    fmt = body.response_format or {}
    kind = fmt.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise APIError(400, "response_format json_schema needs json_schema.schema (a JSON schema object)",
                           param="response_format")
        schema = spec["schema"]
    elif kind == "json_object":
        schema = fmt["schema"] if isinstance(fmt.get("schema"), dict) else {"type": "object"}
    else:
        raise APIError(400, f"response_format type must be text, json_object or json_schema, got {kind!r}",
                       param="response_format")
    try:
        return engine.json_grammar(schema)
    except ValueError as err:  # GrammarError: a schema llguidance cannot compile
        raise APIError(400, f"response_format: {err}", param="response_format") from None


def _chat_message(completion: Completion, grammar: ToolCallGrammar | None) -> dict[str, Any]:
    """The choice's message and finish reason; a decoded tool call becomes `tool_calls`."""
    if grammar is None:
        return {"message": {"role": "assistant", "content": completion.text}, "finish_reason": completion.finish_reason}
    action = grammar.parse(completion.text)
    if action.name is None:
        return {"message": {"role": "assistant", "content": action.message}, "finish_reason": completion.finish_reason}
    call = {"id": action.call_id, "type": "function", "function": {"name": action.name, "arguments": action.arguments}}
    return {"message": {"role": "assistant", "content": None, "tool_calls": [call]}, "finish_reason": "tool_calls"}


def _choices(
    runtime: Runtime, prompts: Sequence[str | list[int]], body: _SamplingBody, max_tokens: int | None, *, logprobs: int,
    processor=None,
) -> list[_Choice]:
    """n choices per prompt (choice index = prompt * n + j), checked and tokenized, not yet submitted; a seed
    gives choice j the seed + j. Runs in a worker thread: tokenizing a long prompt takes seconds.

    `processor`: a factory of logits processors (a grammar), called once per choice: processors are stateful.
    """
    if len(prompts) * body.n > MAX_CHOICES:
        raise APIError(400, f"{len(prompts)} prompt(s) x n={body.n} asks for {len(prompts) * body.n} choices; "
                       f"at most {MAX_CHOICES} are allowed per request", param="n" if len(prompts) == 1 else "prompt")
    engine = runtime.engine
    stop = body.stop_strings()
    choices: list[_Choice] = []
    for p, prompt in enumerate(prompts):
        ids = engine.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        room = engine.context_length - len(ids)
        if room < 1:
            raise APIError(400, f"the prompt is {len(ids)} tokens; the context window is {engine.context_length}",
                           param="messages" if isinstance(body, ChatBody) else "prompt", code="context_length_exceeded")
        if max_tokens is not None and max_tokens > room:
            raise APIError(400, f"max_tokens is {max_tokens} but the prompt ({len(ids)} tokens) leaves room for {room} "
                           f"in the context window of {engine.context_length}", param="max_tokens", code="context_length_exceeded")
        for j in range(body.n):
            def start(ids: list[int] = ids, j: int = j, room: int = room) -> Request:
                return engine.submit(
                    ids,
                    max_new_tokens=max_tokens or min(runtime.settings.max_new_tokens, room),
                    temperature=body.temperature,
                    top_p=body.top_p,
                    stop=stop,
                    seed=None if body.seed is None else body.seed + j,
                    logprobs=logprobs,
                    logits_processor=processor() if processor is not None else None,
                )

            choices.append(_Choice(p * body.n + j, start))
    return choices


def _cancel(choices: Sequence[_Choice]) -> None:
    for choice in choices:
        if choice.request is not None:
            choice.request.cancel()


def _usage(completions: Sequence[Completion], *, prompts: int) -> dict[str, Any]:
    # Each prompt counts once, as OpenAI counts it, however many choices it was sampled for.
    per_prompt = len(completions) // prompts
    prompt_tokens = sum(c.prompt_tokens for c in completions[::per_prompt])
    generated = sum(c.generated_tokens for c in completions)
    cached = sum(c.cached_tokens for c in completions[::per_prompt])
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": generated,
        "total_tokens": prompt_tokens + generated,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def _chat_logprobs(tokenizer, completion: Completion, top: int) -> dict[str, Any]:
    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        text = tokenizer.decode([token_id])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    content = []
    for token_id, lp in zip(completion.token_ids, completion.logprobs or ()):
        content.append({**entry(token_id, lp.logprob), "top_logprobs": [entry(t, v) for t, v in lp.top[:top]]})
    return {"content": content}


def _completion_logprobs(tokenizer, completion: Completion, top: int) -> dict[str, Any]:
    tokens, token_logprobs, top_logprobs, offsets = [], [], [], []
    offset = 0
    for token_id, lp in zip(completion.token_ids, completion.logprobs or ()):
        text = tokenizer.decode([token_id])
        tokens.append(text)
        token_logprobs.append(lp.logprob)
        top_logprobs.append({tokenizer.decode([t]): v for t, v in lp.top[:top]})
        offsets.append(offset)
        offset += len(text)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top_logprobs, "text_offset": offsets}


# ----- streaming ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Meta:
    id: str
    created: int
    model: str


def _sse(events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        async for event in events:
            yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _stream_error(completion: Completion) -> dict[str, Any] | None:
    try:
        _raise_if_failed(completion)
    except APIError as err:
        return err.body
    return None


async def _chat_stream(
    meta: _Meta, choices: Sequence[_Choice], deltas: AsyncIterator[tuple[int, str]], *, include_usage: bool
) -> AsyncIterator[dict[str, Any]]:
    def chunk(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": meta.id, "object": "chat.completion.chunk", "created": meta.created, "model": meta.model,
            "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }

    for choice in choices:
        yield chunk(choice.index, {"role": "assistant", "content": ""})
    try:
        async for index, delta in deltas:
            yield chunk(index, {"content": delta})
    except APIError as err:
        yield err.body
        return
    completions = [choice.request.result() for choice in choices]
    for choice, completion in zip(choices, completions):
        if (error := _stream_error(completion)) is not None:
            yield error
            return
        yield chunk(choice.index, {}, completion.finish_reason)
    if include_usage:
        yield {"id": meta.id, "object": "chat.completion.chunk", "created": meta.created, "model": meta.model,
               "choices": [], "usage": _usage(completions, prompts=1)}


async def _completion_stream(
    meta: _Meta, choices: Sequence[_Choice], deltas: AsyncIterator[tuple[int, str]], *, prompts: int, include_usage: bool
) -> AsyncIterator[dict[str, Any]]:
    def chunk(index: int, text: str, finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": meta.id, "object": "text_completion", "created": meta.created, "model": meta.model,
            "choices": [{"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}],
        }

    try:
        async for index, delta in deltas:
            yield chunk(index, delta)
    except APIError as err:
        yield err.body
        return
    completions = [choice.request.result() for choice in choices]
    for choice, completion in zip(choices, completions):
        if (error := _stream_error(completion)) is not None:
            yield error
            return
        yield chunk(choice.index, "", completion.finish_reason)
    if include_usage:
        yield {"id": meta.id, "object": "text_completion", "created": meta.created, "model": meta.model,
               "choices": [], "usage": _usage(completions, prompts=prompts)}


def serve(runtime: Runtime, sock: socket.socket, *, api_key: str | None = None) -> None:
    """Serve the API on an already bound, listening socket until interrupted (Ctrl-C)."""
    import uvicorn

    config = uvicorn.Config(create_app(runtime, api_key=api_key), log_level="warning", timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
