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

What a request and an answer look like (bodies, their checks, choices, chunks, usage, errors) is
`model.backends.openai_protocol`, which the remote backend speaks too; this module is the HTTP and the scheduling.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import itertools
import socket
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.engine import Completion, GenerationError, Request
from app.runtime import Runtime
from app.tool_calls import ToolCallTurn, tool_call_turn
from model.backends.openai_protocol import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    MODELS_PATH,
    STREAM_END,
    APIError,
    ChatBody,
    CompletionBody,
    Reply,
    assistant_message,
    chat_logprobs,
    completion_logprobs,
    failure,
    model_card,
    model_list,
    sse_event,
    usage,
    validation_error,
)
from ui.fair_share import FairShare
from ui.http_guard import HostGuard

RUNNING_CHOICES = 64  # engine requests the server keeps running at once: the scheduler's batch (max_running)


# ----- the app -----------------------------------------------------------------------------------


def create_app(runtime: Runtime, *, api_key: str | None = None, slots: int = RUNNING_CHOICES) -> FastAPI:
    """The API app over `runtime`'s engine; `api_key` set = every call needs `Authorization: Bearer <key>`.

    The runtime's settings give the Host names served (`host`, `allowed_hosts`) and the largest request body
    (`max_request_mb`); `slots` is how many engine requests run at once, shared fairly between clients.
    """
    if api_key is not None and not api_key.strip():
        raise ValueError("the API key is empty: give a key, or None to serve without one")
    settings = runtime.settings
    app = FastAPI(
        title="r1-reasoner",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        middleware=[
            Middleware(HostGuard, bound_host=settings.host, allowed_hosts=settings.allowed_hosts),
            Middleware(_Gate, api_key=api_key, max_body=int(settings.max_request_mb * (1 << 20))),
        ],
        exception_handlers=ERROR_HANDLERS,
    )
    app.state.runtime = runtime
    app.state.model_id = settings.model
    app.state.fair_share = FairShare(slots)
    app.include_router(router)
    return app


# ----- errors: every one in OpenAI's shape -------------------------------------------------------


def _answer(err: APIError) -> JSONResponse:
    return JSONResponse(err.body, status_code=err.status)


async def _api_error(_: HTTPRequest, err: APIError) -> JSONResponse:
    return _answer(err)


async def _invalid_body(_: HTTPRequest, err: RequestValidationError) -> JSONResponse:
    return _answer(validation_error(err.errors()))


async def _http_error(_: HTTPRequest, err: StarletteHTTPException) -> JSONResponse:
    return _answer(APIError(err.status_code, str(err.detail), code="not_found" if err.status_code == 404 else None))


async def _unexpected(_: HTTPRequest, err: Exception) -> JSONResponse:
    return _answer(APIError(500, f"internal error: {err}", type="server_error"))


ERROR_HANDLERS = {
    APIError: _api_error,
    RequestValidationError: _invalid_body,
    StarletteHTTPException: _http_error,
    Exception: _unexpected,
}


# ----- before any route: the API key and the body's size ----------------------------------------


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
                await _answer(
                    APIError(
                        401, "missing or wrong API key (send 'Authorization: Bearer <key>')", code="invalid_api_key"
                    )
                )(scope, receive, send)
                return
        too_large = APIError(
            413,
            f"the request body is larger than the server's limit of {self.max_body} bytes (r1 serve --max-request-mb)",
            code="request_too_large",
        )
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            await _answer(too_large)(scope, receive, send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body:
                await _answer(too_large)(scope, receive, send)
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


# ----- the routes --------------------------------------------------------------------------------

router = APIRouter(prefix="/v1")


def _check_model(http: HTTPRequest, name: str) -> str:
    """The served model's id, if `name` is it."""
    model_id = http.app.state.model_id
    if name != model_id:
        raise APIError(
            404,
            f"the model {name!r} does not exist; this server serves {model_id!r}",
            param="model",
            code="model_not_found",
        )
    return model_id


@router.get(MODELS_PATH)
async def list_models(http: HTTPRequest) -> dict[str, Any]:
    return model_list(http.app.state.model_id)


@router.get(MODELS_PATH + "/{name:path}")
async def get_model(name: str, http: HTTPRequest) -> dict[str, Any]:
    return model_card(_check_model(http, name))


@router.post(CHAT_PATH)
async def chat_completions(body: ChatBody, http: HTTPRequest):
    reply = Reply.new(_check_model(http, body.model), chat=True)
    body.check()
    runtime: Runtime = http.app.state.runtime
    engine = runtime.engine
    turn, choices = await run_in_threadpool(_chat_choices, runtime, body)  # grammars and tokens: CPU work, off the loop
    deltas = _deltas(choices, http.app.state.fair_share, _client(http))
    if body.stream:
        return _sse(_stream(reply, choices, deltas, prompts=1, include_usage=body.include_usage))
    completions = await _wait_all(http, choices, deltas)
    top = body.top_logprobs or 0
    return reply.response(
        [
            reply.choice(i, *_chat_message(c, turn), chat_logprobs(engine.tokenizer, c, top) if body.logprobs else None)
            for i, c in enumerate(completions)
        ],
        usage(completions, prompts=1),
    )


@router.post(COMPLETIONS_PATH)
async def completions(body: CompletionBody, http: HTTPRequest):
    reply = Reply.new(_check_model(http, body.model), chat=False)
    body.check()
    runtime: Runtime = http.app.state.runtime
    prompts = body.prompts()
    choices = await run_in_threadpool(
        _choices,
        runtime,
        prompts,
        body,
        body.max_tokens,
        logprobs=max(1, body.logprobs) if body.logprobs is not None else 0,
    )
    deltas = _deltas(choices, http.app.state.fair_share, _client(http))
    if body.stream:
        return _sse(_stream(reply, choices, deltas, prompts=len(prompts), include_usage=body.include_usage))
    done = await _wait_all(http, choices, deltas)
    tokenizer = runtime.engine.tokenizer
    return reply.response(
        [
            reply.choice(
                i,
                c.text,
                c.finish_reason,
                completion_logprobs(tokenizer, c, body.logprobs) if body.logprobs is not None else None,
            )
            for i, c in enumerate(done)
        ],
        usage(done, prompts=len(prompts)),
    )


def _client(http: HTTPRequest) -> str:
    return http.client.host if http.client else "unknown"


def _chat_choices(runtime: Runtime, body: ChatBody) -> tuple[ToolCallTurn | None, list[_Choice]]:
    """The request's choices, constrained by its tools (one `tool_call_turn`) or its JSON response_format. Runs in a
    worker thread: compiling a grammar and tokenizing take long."""
    engine = runtime.engine
    choice, schema = body.tool_choice_name(), body.response_schema()
    if choice is not None and schema is not None:
        raise APIError(400, "tools and a JSON response_format cannot be combined", param="response_format")
    messages = body.chat_messages()
    turn, processor = None, None
    if choice is not None:
        try:
            turn = tool_call_turn(engine, messages, body.functions(), choice)
        except ValueError as err:  # an unknown tool_choice name, or a schema the grammar cannot take
            raise APIError(400, str(err), param="tools") from None
        processor = turn.processor
    elif schema is not None:
        try:
            grammar = engine.json_grammar(schema)
        except ValueError as err:  # GrammarError: a schema llguidance cannot compile
            raise APIError(400, f"response_format: {err}", param="response_format") from None
        processor = functools.partial(engine.grammar_compiler.processor, grammar)
    prompt = turn.prompt if turn is not None else engine.chat_prompt(messages)
    top = body.top_logprobs or 0
    return turn, _choices(
        runtime, [prompt], body, body.new_tokens, logprobs=max(1, top) if body.logprobs else 0, processor=processor
    )


def _chat_message(completion: Completion, turn: ToolCallTurn | None) -> tuple[dict[str, Any], str]:
    """A choice's assistant message and finish reason."""
    if turn is None:
        return assistant_message(completion.text), completion.finish_reason
    return turn.message(completion)


def _choices(
    runtime: Runtime,
    prompts: Sequence[str | list[int]],
    body: ChatBody | CompletionBody,
    max_tokens: int | None,
    *,
    logprobs: int,
    processor: Callable[[], Any] | None = None,
) -> list[_Choice]:
    """n choices per prompt (choice index = prompt * n + j), checked and tokenized, not yet submitted; a seed
    gives choice j the seed + j. Runs in a worker thread: tokenizing a long prompt takes seconds.

    `processor`: a factory of logits processors (a grammar), called once per choice: processors are stateful.
    """
    body.check_choices(len(prompts))
    engine = runtime.engine
    stop = body.stop_strings()
    choices: list[_Choice] = []
    for p, prompt in enumerate(prompts):
        ids = engine.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        room = body.room(len(ids), engine.context_length, max_tokens)
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
        threading.Thread(
            target=_drain, args=(choice, loop, queue, ended), daemon=True, name=f"r1-api-{choice.request.id}"
        ).start()

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
        if (err := failure(completion)) is not None:
            raise err
    return completions


def _cancel(choices: Sequence[_Choice]) -> None:
    for choice in choices:
        if choice.request is not None:
            choice.request.cancel()


# ----- streaming ---------------------------------------------------------------------------------


def _sse(events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        async for event in events:
            yield sse_event(event)
        yield sse_event(STREAM_END)

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _stream(
    reply: Reply,
    choices: Sequence[_Choice],
    deltas: AsyncIterator[tuple[int, str]],
    *,
    prompts: int,
    include_usage: bool,
) -> AsyncIterator[dict[str, Any]]:
    """The chunks of a streamed reply: each choice's opening, its pieces as they come, its ending; an error ends
    the stream as an error event."""
    for choice in choices:
        if (opening := reply.opening(choice.index)) is not None:
            yield opening
    try:
        async for index, delta in deltas:
            yield reply.piece(index, delta)
    except APIError as err:
        yield err.body
        return
    completions = [choice.request.result() for choice in choices]
    for choice, completion in zip(choices, completions):
        if (err := failure(completion)) is not None:
            yield err.body
            return
        yield reply.ending(choice.index, completion.finish_reason)
    if include_usage:
        yield reply.usage_chunk(usage(completions, prompts=prompts))


def serve(runtime: Runtime, sock: socket.socket, *, api_key: str | None = None) -> None:
    """Serve the API on an already bound, listening socket until interrupted (Ctrl-C)."""
    import uvicorn

    config = uvicorn.Config(create_app(runtime, api_key=api_key), log_level="warning", timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
