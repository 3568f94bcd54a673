"""`OpenAIBackend`: the Backend interface over any OpenAI-compatible server (vLLM, SGLang, llama.cpp, `r1 serve`).

Where the local engine runs the model, this sends HTTP: raw text prompts to `/v1/completions` (the reasoning
search, `r1 generate`), conversations to `/v1/chat/completions` (chat, the support bot, structured output).

    backend = OpenAIBackend(RemoteConfig("http://127.0.0.1:8000/v1"))
    backend.capabilities            # probed once at connect: streaming, n, logprobs, tools, structured, reasoning
    backend.chat([{"role": "user", "content": "Hi"}])

What a server lacks is worked around, with one warning line at connect: no streaming -> replies arrive whole;
no `n` -> K samples of one prompt go as K concurrent requests; no structured output -> JSON is asked for in
the prompt and parsed. Reasoning a server returns apart (`reasoning_content`) is put back as
`<think>...</think>` before the answer, so callers split it the same way for both backends.

Failures: connection errors, 429 and 5xx are retried with exponential backoff (honouring Retry-After);
4xx answers raise ValueError (the request was bad), everything else RemoteError; every message names the
server. Cancelling a streamed request closes its connection, which servers take as "stop generating".

The bodies sent and the answers read back are shaped by openai_protocol.py, the module `r1 serve` answers with: this
module is the transport (HTTP, retries, threads) and the fallbacks.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from model.backends import openai_protocol as wire
from model.backends.backend import Backend, ChatMessages, Prompt, per_prompt, with_sampling
from model.backends.openai_protocol import CHAT_PATH, COMPLETIONS_PATH, MAX_N, MAX_STOP, MODELS_PATH
from model.serving.request import Completion, GenerationError, RequestHandle
from model.serving.sampler import SamplingParams
from model.tokenizer import THINK_CLOSE, THINK_OPEN, split_reasoning

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
TOOL_CALL_MODES = ("auto", "tools", "json_schema", "prompt")


class RemoteError(GenerationError):
    """The server could not be reached or failed; the message names it."""


@dataclass(frozen=True)
class RemoteConfig:
    base_url: str  # the API root, e.g. http://127.0.0.1:8000/v1 (a missing /v1 is tried too)
    api_key: str | None = None  # sent as `Authorization: Bearer <key>`
    model: str | None = None  # None = the first model the server lists
    timeout: float = 600.0  # seconds the server may stay silent (a non-streamed reply must finish within it)
    connect_timeout: float = 10.0
    retries: int = 3  # for connection errors, 408/429/5xx; waits 0.5 s, 1 s, 2 s, ... (or Retry-After)
    concurrency: int = 8  # requests one generate_batch keeps in flight
    tool_calls: str = "auto"  # how the bot's actions are asked for: auto, tools, json_schema, prompt (see action_mode)
    context_length: int | None = None  # None = what the server's model list says (vLLM, llama.cpp), else 8192


@dataclass(frozen=True)
class Capabilities:
    """What the server offers, found by a few tiny requests at connect."""

    ours: bool  # the server is r1-reasoner's `r1 serve`
    completions: bool  # /v1/completions: raw text prompts
    streaming: bool  # server-sent events
    n: bool  # several choices per request
    logprobs: bool
    tools: bool  # a named tool_choice comes back as tool_calls
    structured: str | None  # response_format it constrains to a schema: "json_schema", "json_object" (+ schema), None
    reasoning_content: bool  # reasoning returned apart from the answer

    def summary(self) -> str:
        def yes(flag: Any) -> str:
            return "yes" if flag else "no"

        return (
            f"completions {yes(self.completions)}, streaming {yes(self.streaming)}, n {yes(self.n)}, "
            f"logprobs {yes(self.logprobs)}, tools {yes(self.tools)}, structured output {self.structured or 'no'}, "
            f"reasoning_content {yes(self.reasoning_content)}"
        )


DEFAULT_CONTEXT_LENGTH = 8192


class ApproximateTokenizer:
    """Token counts for memory budgets when the server's tokenizer is not here: one token per 3 UTF-8 bytes,
    an over-estimate for BPE vocabularies on English (about 4), so a window sized by it still fits."""

    BYTES_PER_TOKEN = 3

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        return [0] * (-(-len(text.encode()) // self.BYTES_PER_TOKEN) + int(add_bos))

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False) -> str:
        turns = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages)
        return turns + ("<|assistant|>\n" if add_generation_prompt else "")


class RemoteRequest(RequestHandle):
    """A streamed (or whole) reply being read from the server by a thread of its own."""

    def cancel(self) -> None:
        """Stop reading: the connection closes at the next event the server sends, which ends its generation."""
        if not self.done:
            self.cancel_requested = True


class OpenAIBackend(Backend):
    """A model served over HTTP by an OpenAI-compatible server. Thread-safe; one connection pool.

    `tokenizer` and `context_length` are what the memory tiers size windows by: the context as the server
    lists it, token counts estimated (`ApproximateTokenizer`)."""

    def __init__(self, config: RemoteConfig) -> None:
        if config.tool_calls not in TOOL_CALL_MODES:
            raise ValueError(
                f"unknown tool-call mode {config.tool_calls!r}; choose one of {', '.join(TOOL_CALL_MODES)}"
            )
        self.config = config
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(config.timeout, connect=config.connect_timeout),
            limits=httpx.Limits(max_connections=4 * config.concurrency, max_keepalive_connections=config.concurrency),
        )
        self._pool = ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="r1-remote")
        self._lock = threading.Lock()
        self._counts = {"requests": 0, "retries": 0, "failures": 0}
        try:
            self._setup(config)
        except BaseException:
            self.close()
            raise

    def _setup(self, config: RemoteConfig) -> None:
        """Find the API, pick the model, probe the features (the requests of connecting)."""
        self.base_url, listed = self._connect(config.base_url.rstrip("/"))
        ids = [m.get("id") for m in listed]
        if config.model is None and not ids:
            raise ValueError(f"the server at {self.base_url} lists no models; name one with --remote-model")
        self.model = config.model or ids[0]
        if ids and self.model not in ids:
            log.warning(
                "%s does not list model %r (it lists %s); asking for it anyway",
                self.base_url,
                self.model,
                ", ".join(map(str, ids)),
            )
        self.name = f"{self.model} at {self.base_url}"
        self.tokenizer = ApproximateTokenizer()
        self.context_length = config.context_length or wire.context_length(listed, self.model) or DEFAULT_CONTEXT_LENGTH
        ours = any(m.get("owned_by") == wire.OWNED_BY for m in listed if m.get("id") == self.model)
        self.capabilities = self._probe(ours)
        self.action_mode = self._action_mode()
        log.info("%s: %s; support-bot actions via %s", self.name, self.capabilities.summary(), self.action_mode)

    # ----- the Backend interface -----------------------------------------------------------------

    def text_prompt(self, text: str, *, continuation: bool = False) -> str:
        """The text itself: the server tokenizes (so prompts grow by string concatenation)."""
        return text

    def chat_prompt(self, messages: Sequence[Mapping[str, str]]) -> ChatMessages:
        return ChatMessages(tuple(dict(m) for m in messages))

    def submit(
        self, prompt: Prompt, params: SamplingParams | None = None, *, task_type: str | None = None, **sampling: Any
    ) -> RemoteRequest:
        """Send one request and return its handle once the server has accepted it (status line received).
        `task_type` is not sent: a server routes by its own means.

        Raises ValueError for a prompt this backend cannot send or the server rejects (4xx), RemoteError
        when the server cannot be reached. The reply is streamed when the server streams.
        """
        params = with_sampling(params, sampling)
        path, body = self._body(prompt, params)
        handle = RemoteRequest()
        if params.max_new_tokens == 0:
            handle.complete(Completion(text="", token_ids=[], finish_reason="length", prompt_tokens=0))
            return handle
        if not self.capabilities.streaming:
            self._pool.submit(self._fill_whole, handle, path, body)
            return handle
        body.update(stream=True, stream_options={"include_usage": True})
        response = self._send(path, body, stream=True)
        threading.Thread(
            target=self._fill_streamed, args=(handle, path, response), daemon=True, name=f"r1-remote-{handle.id}"
        ).start()
        return handle

    def generate_batch(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        task_type: str | None = None,
    ) -> list[Completion]:
        """Complete every prompt, `concurrency` requests at a time; results in prompt order (`task_type`: see submit).

        Sampled prompts that differ only in their seed (MCTS siblings) go as one request with `n` choices
        when the server offers `n` (the first one's seed seeds them all); otherwise as separate requests.
        Raises RemoteError if any request fails.
        """
        each = [with_sampling(p, {}) for p in per_prompt(prompts, params)]
        groups: list[tuple[Prompt, SamplingParams, list[int]]] = []
        open_groups: dict[tuple, int] = {}
        for i, (prompt, p) in enumerate(zip(prompts, each)):
            if self.capabilities.n and p.temperature > 0:
                key = (_prompt_key(prompt), dataclasses.replace(p, seed=None))
                g = open_groups.get(key)
                if g is not None and len(groups[g][2]) < MAX_N:
                    groups[g][2].append(i)
                    continue
                open_groups[key] = len(groups)
            groups.append((prompt, p, [i]))
        futures = [self._pool.submit(self._complete, prompt, p, len(members)) for prompt, p, members in groups]
        results: list[Completion | None] = [None] * len(prompts)
        for (_, _, members), future in zip(groups, futures):
            for i, completion in zip(members, future.result()):
                results[i] = completion
        return results

    def chat_json(
        self, messages: Sequence[Mapping[str, str]], schema: Mapping[str, Any], *, max_new_tokens: int
    ) -> Completion:
        """Structured output: the server's response_format when it constrains to a schema; else the schema is
        put in the prompt and the first JSON object of the reply is taken (not enforced)."""
        messages = [dict(m) for m in messages]
        mode = self.capabilities.structured
        body: dict[str, Any] = {"model": self.model, "max_tokens": max_new_tokens, "temperature": 0.0}
        if mode == "json_schema":
            body["response_format"] = wire.json_schema_format(schema)
        elif mode == "json_object":
            body["response_format"] = wire.json_object_format(schema)
        else:
            messages.append(
                {
                    "role": "system",
                    "content": f"Answer with one JSON object only, valid under this JSON schema: {json.dumps(schema)}",
                }
            )
        body["messages"] = messages
        started = time.perf_counter()
        data = self._call(CHAT_PATH, body)
        choice = self._first_choice(data)
        _, text = split_reasoning(wire.choice_text(choice, chat=True))
        if mode is None:
            text = _first_json_object(text) or text
        try:  # written out again with the separators our own grammar uses (other servers space it differently)
            text = json.dumps(json.loads(text), ensure_ascii=False)
        except json.JSONDecodeError:
            pass  # cut off by max_new_tokens: as it came
        return _completion(text, choice.get("finish_reason"), data.get("usage"), started)

    def chat_action(
        self,
        messages: Sequence[Mapping[str, str]],
        tools: Mapping[str, Mapping[str, Any]],
        *,
        message_max_length: int,
        max_new_tokens: int,
        include_message: bool = True,
    ) -> Completion:
        """The agent's next action (see Backend.chat_action): through the server's `tools` when `action_mode` is
        "tools" (`tool_choice` "required" when a message is not allowed), else as structured output of the
        action schema."""
        if not tools or self.action_mode != "tools":
            return super().chat_action(
                messages,
                tools,
                message_max_length=message_max_length,
                max_new_tokens=max_new_tokens,
                include_message=include_message,
            )
        body = {
            "model": self.model,
            "messages": [dict(m) for m in messages],
            "max_tokens": max_new_tokens,
            "temperature": 0.0,
            "tool_choice": "auto" if include_message else "required",
            "tools": [wire.function_tool(name, schema) for name, schema in tools.items()],
        }
        started = time.perf_counter()
        data = self._call(CHAT_PATH, body)
        choice = self._first_choice(data)
        message = choice.get("message") or {}
        call = wire.first_tool_call(message)
        if call is not None:
            try:
                action = {"tool": call[0], "arguments": json.loads(call[1])}
            except json.JSONDecodeError:
                return _completion("", "stop", data.get("usage"), started)  # an unusable call: no action
            return _completion(json.dumps(action), "stop", data.get("usage"), started)
        _, content = split_reasoning(wire.with_reasoning(message))
        written = _first_json_object(content)
        if written is not None and ("tool" in (parsed := json.loads(written)) or "message" in parsed):
            return _completion(written, choice.get("finish_reason"), data.get("usage"), started)
        text = json.dumps({"message": content.strip()[:message_max_length]}) if content.strip() else ""
        return _completion(text, choice.get("finish_reason"), data.get("usage"), started)

    def status(self) -> list[tuple[str, str]]:
        with self._lock:
            counts = dict(self._counts)
        return [
            ("server", self.base_url),
            ("model", self.model),
            ("features", self.capabilities.summary()),
            ("support-bot actions via", self.action_mode),
            ("requests / retries / failures", f"{counts['requests']} / {counts['retries']} / {counts['failures']}"),
        ]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    # ----- connecting and probing ----------------------------------------------------------------

    def _connect(self, url: str) -> tuple[str, list[dict[str, Any]]]:
        """The API root that answers GET /models, and the models it lists. Raises ValueError naming the URL."""
        candidates = [url] if url.endswith("/v1") else [url, url + "/v1"]
        for candidate in candidates:
            try:
                response = self._client.get(candidate + MODELS_PATH)
            except httpx.HTTPError as err:
                raise ValueError(f"cannot reach an OpenAI-compatible server at {url}: {_describe(err)}") from None
            if response.status_code in (401, 403):
                raise ValueError(
                    f"the server at {candidate} refused the API key ({response.status_code}: "
                    f"{_error_message(response)}); pass the right one with --api-key"
                )
            if response.status_code == 404:
                continue
            if response.status_code >= 400:
                raise ValueError(
                    f"the server at {candidate} answered GET /models with {response.status_code}: "
                    f"{_error_message(response)}"
                )
            try:
                return candidate, list(response.json().get("data") or [])
            except (ValueError, AttributeError):
                raise ValueError(f"{candidate}/models did not answer with an OpenAI model list") from None
        raise ValueError(f"no OpenAI-compatible API at {url} (GET /models: 404); the base URL usually ends in /v1")

    def _probe(self, ours: bool) -> Capabilities:
        """A handful of requests of a few tokens each; 4xx answers mean "not offered". Chat is required: a server
        that refuses it (e.g. an unknown model) raises ValueError with its own words."""
        hello = {"model": self.model, "messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 4}
        answer = self._first_choice(self._call(CHAT_PATH, hello))
        reasoning = bool(wire.reasoning_of(answer.get("message") or {}))
        text = {"model": self.model, "prompt": "1, 2, 3,", "max_tokens": 1, "temperature": 1.0, "seed": 0}
        completions = n = logprobs = False
        for extra in ({"n": 2, "logprobs": 1}, {"n": 2}, {}):
            data = self._try(COMPLETIONS_PATH, {**text, **extra})
            if data is not None:
                completions = True
                choices = data.get("choices") or []
                n = "n" in extra and len(choices) == 2
                logprobs = "logprobs" in extra and bool(choices and choices[0].get("logprobs"))
                break
        streaming, streamed_reasoning = self._probe_stream(hello)
        reasoning = reasoning or streamed_reasoning
        ping = wire.function_tool(
            "ping", {"type": "object", "properties": {}, "additionalProperties": False}, "Check the line."
        )
        data = self._try(
            CHAT_PATH, {**hello, "max_tokens": 24, "tools": [ping], "tool_choice": wire.force_function("ping")}
        )
        call = wire.first_tool_call((wire.first_choice(data or {}) or {}).get("message") or {})
        tools = call is not None and call[0] == "ping"
        schema = {
            "type": "object",
            "properties": {"r1_probe": {"type": "integer", "enum": [7]}},
            "required": ["r1_probe"],
            "additionalProperties": False,
        }
        structured = None
        for mode, response_format in (
            ("json_schema", wire.json_schema_format(schema, "probe")),
            ("json_object", wire.json_object_format(schema)),
        ):
            data = self._try(
                CHAT_PATH, {**hello, "max_tokens": 16, "temperature": 0.0, "response_format": response_format}
            )
            content = ((wire.first_choice(data or {}) or {}).get("message") or {}).get("content") or ""
            if _first_json_object(content) and json.loads(_first_json_object(content)) == {"r1_probe": 7}:
                structured = mode
                break
        found = Capabilities(ours, completions, streaming, n, logprobs, tools, structured, reasoning)
        for missing, consequence in (
            (not completions, "raw text prompts (solve's step search, r1 generate) cannot be sent"),
            (not streaming, "replies arrive whole instead of streamed"),
            (completions and not n, "K samples of one prompt are sent as K requests"),
            (
                structured is None and not tools,
                "JSON replies and bot actions are asked for in the prompt, not enforced",
            ),
        ):
            if missing:
                log.warning("%s: %s", self.name, consequence)
        return found

    def _probe_stream(self, body: dict[str, Any]) -> tuple[bool, bool]:
        """(whether the server streams, whether its deltas carry reasoning apart)."""
        try:
            response = self._send(CHAT_PATH, {**body, "stream": True}, stream=True)
        except ValueError:
            return False, False
        reasoning = chunks = False
        try:
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                return False, False
            for event in _sse_events(response, self.name):
                for choice in event.get("choices") or ():
                    chunks = True
                    reasoning = reasoning or bool(wire.reasoning_of(choice.get("delta") or {}))
        except RemoteError:
            return False, False
        finally:
            response.close()
        return chunks, reasoning

    def _action_mode(self) -> str:
        """How the bot's actions are asked for: "tools" (the server's tool calls), "json_schema" (structured output
        of the action schema) or "prompt". "auto": our own server's tools (its grammar), else structured output,
        else the server's tools, else the prompt."""
        caps, wanted = self.capabilities, self.config.tool_calls
        if wanted == "auto":
            if caps.ours and caps.tools:
                return "tools"
            return "json_schema" if caps.structured else "tools" if caps.tools else "prompt"
        if wanted == "tools" and not caps.tools:
            log.warning(
                "%s: tool calls asked for, but the server did not return one when probed; trying anyway", self.name
            )
        if wanted == "json_schema" and not caps.structured:
            log.warning("%s: structured output asked for, but the server does not constrain JSON; prompting", self.name)
        return wanted

    # ----- requests ------------------------------------------------------------------------------

    def _body(self, prompt: Prompt, params: SamplingParams) -> tuple[str, dict[str, Any]]:
        if params.logits_processor is not None:
            raise ValueError("a logits processor runs only in the local engine; use chat_json for constrained output")
        if params.logprobs:
            raise ValueError("token logprobs are reported only by the local engine")
        if params.stop_token_ids is not None:
            raise ValueError(
                "stop token ids need the local engine (the server's tokenizer may differ); use stop strings"
            )
        if len(params.stop) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings can be sent to a server, got {len(params.stop)}")
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.top_k:
            body["top_k"] = params.top_k  # an extension (vLLM, SGLang, llama.cpp); others ignore it
        if params.repetition_penalty != 1.0:
            body["repetition_penalty"] = params.repetition_penalty  # vLLM's and SGLang's name
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        if isinstance(prompt, ChatMessages):
            if not prompt.messages:
                raise ValueError("empty conversation: at least one message is needed")
            return CHAT_PATH, {**body, "messages": [dict(m) for m in prompt.messages]}
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("empty prompt: at least one character is needed")
            if not self.capabilities.completions:
                raise ValueError(f"{self.name} has no /v1/completions endpoint, which raw text prompts need")
            return COMPLETIONS_PATH, {**body, "prompt": prompt}
        raise ValueError("token-id prompts need the local engine: a server tokenizes text itself")

    def _complete(self, prompt: Prompt, params: SamplingParams, n: int) -> list[Completion]:
        """One non-streamed request for `n` choices. With n > 1 the server reports generated tokens only in
        total: each choice is credited a share proportional to its length."""
        path, body = self._body(prompt, params)
        if n > 1:
            body["n"] = n
        started = time.perf_counter()
        data = self._call(path, body)
        choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
        if len(choices) != n:
            raise RemoteError(f"{self.name} returned {len(choices)} choices for n={n}")
        texts = [wire.choice_text(c, chat=path == CHAT_PATH) for c in choices]
        usage = data.get("usage") or {}
        total = int(usage.get("completion_tokens") or 0)
        length = sum(len(t) for t in texts) or 1
        shares = [total * len(t) // length for t in texts]
        shares[-1] += total - sum(shares)  # the shares add up to what the server counted
        return [
            _completion(text, choice.get("finish_reason"), {**usage, "completion_tokens": share}, started)
            for choice, text, share in zip(choices, texts, shares)
        ]

    def _fill_whole(self, handle: RemoteRequest, path: str, body: dict[str, Any]) -> None:
        """Pool task for a server that does not stream: the reply arrives as one delta."""
        started = time.perf_counter()
        try:
            data = self._call(path, body)
            choice = self._first_choice(data)
            text = wire.choice_text(choice, chat=path == CHAT_PATH)
            handle.emit(text)
            finish = "cancelled" if handle.cancel_requested else choice.get("finish_reason")
            handle.complete(_completion(text, finish, data.get("usage"), started))
        except Exception as err:
            handle.complete(_completion("", "error", None, started, error=str(err)))

    def _fill_streamed(self, handle: RemoteRequest, path: str, response: httpx.Response) -> None:
        """Reader thread: server-sent events into the handle's deltas; reasoning re-wrapped in <think> tags."""
        started, first_at = handle.submitted_at, None
        pieces: list[str] = []
        thinking = False
        usage, finish, error = None, None, None
        try:
            for event in _sse_events(response, self.name):
                if handle.cancel_requested:
                    finish = "cancelled"
                    break
                usage = event.get("usage") or usage
                for choice in event.get("choices") or ():
                    thought, text = wire.chunk_parts(choice, chat=path == CHAT_PATH)
                    out = ""
                    if thought:
                        out += ("" if thinking else THINK_OPEN) + thought
                        thinking = True
                    if text:
                        out += (THINK_CLOSE if thinking else "") + text
                        thinking = False
                    if out:
                        first_at = first_at or time.perf_counter()
                        pieces.append(out)
                        handle.emit(out)
                    finish = choice.get("finish_reason") or finish
            else:
                if finish is None and not handle.cancel_requested:
                    error = f"{self.name} ended the stream without a finish reason"
            if handle.cancel_requested:
                finish = "cancelled"
        except (RemoteError, httpx.HTTPError) as err:
            error = str(err) if isinstance(err, RemoteError) else f"{self.name}: the stream broke: {_describe(err)}"
            self._count("failures")
        finally:
            response.close()
        completion = _completion("".join(pieces), "error" if error else finish, usage, started, error=error)
        completion.ttft_s = None if first_at is None else first_at - started
        handle.complete(completion)

    # ----- HTTP ----------------------------------------------------------------------------------

    def _call(self, path: str, body: dict[str, Any], *, retries: int | None = None) -> dict[str, Any]:
        response = self._send(path, body, stream=False, retries=retries)
        try:
            return response.json()
        except ValueError:
            raise RemoteError(f"{self.name}: {path} answered with something that is not JSON") from None

    def _try(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """A probe: `_call` without retries, any failure meaning "not offered (like this)" (some servers answer an
        unknown field with 500)."""
        try:
            return self._call(path, body, retries=0)
        except (ValueError, RemoteError):
            return None

    def _send(self, path: str, body: dict[str, Any], *, stream: bool, retries: int | None = None) -> httpx.Response:
        """POST with retries (default: the config's); returns a 2xx response (open, when streaming). Raises
        ValueError for 4xx, RemoteError for what retrying did not fix."""
        url = self.base_url + path
        retries = self.config.retries if retries is None else retries
        for attempt in range(retries + 1):
            self._count("requests")
            last = attempt == retries
            try:
                response = self._client.send(self._client.build_request("POST", url, json=body), stream=stream)
            except httpx.TimeoutException as err:
                if isinstance(err, httpx.ConnectTimeout) and not last:
                    self._backoff(attempt, None, f"connect timeout on {path}")
                    continue
                self._count("failures")
                raise RemoteError(
                    f"{self.name}: no answer to {path} within {self.config.timeout:g} s ({type(err).__name__})"
                ) from None
            except httpx.TransportError as err:
                if not last:
                    self._backoff(attempt, None, f"{_describe(err)} on {path}")
                    continue
                self._count("failures")
                raise RemoteError(f"cannot reach {self.name}: {_describe(err)}") from None
            if response.status_code < 400:
                return response
            if stream:
                response.read()
            message = _error_message(response)
            response.close()
            if response.status_code in RETRY_STATUSES and not last:
                self._backoff(attempt, response.headers.get("retry-after"), f"{response.status_code} on {path}")
                continue
            self._count("failures")
            if response.status_code in (401, 403):
                raise RemoteError(f"{self.name} refused the API key ({response.status_code}): {message}")
            if 400 <= response.status_code < 500 and response.status_code not in RETRY_STATUSES:
                raise ValueError(f"{self.name} rejected {path} ({response.status_code}): {message}")
            raise RemoteError(f"{self.name}: {path} failed ({response.status_code}): {message}")
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _backoff(self, attempt: int, retry_after: str | None, why: str) -> None:
        delay = min(8.0, 0.5 * 2**attempt) * random.uniform(0.8, 1.2)
        if retry_after:
            try:
                delay = min(30.0, max(0.0, float(retry_after)))
            except ValueError:
                pass
        self._count("retries")
        log.warning("%s: %s; retrying in %.1f s (retry %d)", self.name, why, delay, attempt + 1)
        time.sleep(delay)

    def _count(self, what: str) -> None:
        with self._lock:
            self._counts[what] += 1

    def _first_choice(self, data: Mapping[str, Any]) -> dict[str, Any]:
        choice = wire.first_choice(data)
        if choice is None:
            raise RemoteError(f"{self.name} answered without choices")
        return choice


# ----- helpers ---------------------------------------------------------------------------------------


def _sse_events(response: httpx.Response, server: str) -> Iterator[dict[str, Any]]:
    """The JSON events of a server-sent event stream, up to `data: [DONE]`. An error event raises RemoteError."""
    for line in response.iter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == wire.STREAM_END:
            return
        try:
            event = json.loads(data)
        except json.JSONDecodeError:
            raise RemoteError(f"{server} sent a stream event that is not JSON: {data[:80]!r}") from None
        if isinstance(event, dict) and event.get("error"):
            error = event["error"]
            raise RemoteError(f"{server}: {error.get('message') if isinstance(error, dict) else error}")
        yield event


def _completion(
    text: str, finish: str | None, usage: Mapping[str, Any] | None, started: float, *, error: str | None = None
) -> Completion:
    return wire.read_completion(text, finish, usage, time.perf_counter() - started, error=error)


def _prompt_key(prompt: Prompt) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(getattr(prompt, "messages", prompt), sort_keys=True)


def _first_json_object(text: str) -> str | None:
    """The first complete JSON object in `text` (a model's reply may wrap it in prose or a code fence)."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start >= 0:
        try:
            value, end = decoder.raw_decode(text, start)
            if isinstance(value, dict):
                return text[start:end]
        except json.JSONDecodeError:
            pass
        start = text.find("{", start + 1)
    return None


def _error_message(response: httpx.Response) -> str:
    """The server's own words: OpenAI's {"error": {"message": ...}}, FastAPI's {"detail": ...}, or the text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    return wire.error_message(body)


def _describe(err: httpx.HTTPError) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
