"""The OpenAI API's wire format, written once: what `r1 serve` (ui/server.py) reads and answers, and what
`OpenAIBackend` (remote.py) sends and reads back.

- limits (`MAX_N`, `MAX_CHOICES`, `MAX_STOP`, `MAX_TOP_LOGPROBS`) and paths under the API root;
- errors: OpenAI's JSON shape (`error_body`), `APIError` (one with its HTTP status), a pydantic validation error or a
  failed completion as one, and the words of any server's error body (`error_message`);
- request bodies as pydantic models (`ChatBody`, `CompletionBody`) with OpenAI's checks;
- answers: choices, stream chunks, usage, logprobs, tool calls and model cards (`Reply` and the functions below it);
- reading answers back: a choice's or chunk's text with its reasoning, usage as a `Completion`, tool calls, the
  context length a model list states.

It sits below both of its users: model/ may not import ui/, and the server and the client must agree byte for byte.
It knows no transport (HTTP libraries, ASGI) and no engine.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from model.serving.request import FINISH_REASONS, Completion
from model.tokenizer import THINK_CLOSE, THINK_OPEN

MAX_N = 16  # choices per prompt (the client splits larger groups of siblings)
MAX_CHOICES = 64  # prompts x n per request: each choice is an engine request and a thread
MAX_STOP = 4  # stop strings per request, as OpenAI allows
MAX_TOP_LOGPROBS = 20

CHAT_PATH = "/chat/completions"  # under the API root (…/v1)
COMPLETIONS_PATH = "/completions"
MODELS_PATH = "/models"
OWNED_BY = "r1-reasoner"  # the `owned_by` of r1 serve's model cards: how a client knows our server

CONTEXT_FIELDS = ("max_model_len", "context_length", "context_window", "n_ctx")  # vLLM/SGLang, others, llama.cpp


# ----- errors --------------------------------------------------------------------------------------------


def error_body(
    message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """An error in OpenAI's JSON shape (what `r1 serve` answers; the web UI's refusals use it too)."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class APIError(Exception):
    """An error answered in OpenAI's JSON shape with its HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = error_body(message, type=type, param=param, code=code)


def validation_error(errors: Sequence[Mapping[str, Any]]) -> APIError:
    """The first of pydantic's errors about a request body, as a 400 naming the field."""
    first = errors[0]
    if first.get("type") == "json_invalid":
        reason = first.get("ctx", {}).get("error", "")
        return APIError(400, f"the request body is not valid JSON: {reason}".rstrip(": "))
    where = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(where) or None
    return APIError(400, f"{param}: {first.get('msg')}" if param else str(first.get("msg")), param=param)


def failure(completion: Completion) -> APIError | None:
    """The error a finished completion answers with, if it did not finish well."""
    if completion.finish_reason == "error":
        return APIError(500, f"generation failed: {completion.error}", type="server_error")
    if completion.finish_reason == "cancelled":
        return APIError(
            503, "the request was cancelled (the server is shutting down or reloading its model)", type="server_error"
        )
    return None


def error_message(body: Any) -> str:
    """A server's own words from its error body: OpenAI's {"error": {"message": ...}}, FastAPI's {"detail": ...}, or
    the JSON itself."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if error:
            return str(error)
        if body.get("detail"):
            return json.dumps(body["detail"])[:300] if not isinstance(body["detail"], str) else body["detail"]
    return json.dumps(body)[:300]


# ----- request bodies ------------------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send fields we do not use (user, metadata, ...)


class StreamOptions(_Body):
    include_usage: bool = False


class _SamplingBody(_Body):
    PROMPT_PARAM: ClassVar[str]  # the field an error about the prompt names

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

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

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

    def check_choices(self, prompts: int) -> None:
        """Refuses more than MAX_CHOICES choices (`prompts` x n) in one request."""
        if prompts * self.n > MAX_CHOICES:
            raise APIError(
                400,
                f"{prompts} prompt(s) x n={self.n} asks for {prompts * self.n} choices; "
                f"at most {MAX_CHOICES} are allowed per request",
                param="n" if prompts == 1 else "prompt",
            )

    def room(self, prompt_tokens: int, context_length: int, max_tokens: int | None) -> int:
        """Tokens the context window leaves after a prompt of `prompt_tokens`; refuses a prompt that fills it, or a
        `max_tokens` beyond it."""
        room = context_length - prompt_tokens
        if room < 1:
            raise APIError(
                400,
                f"the prompt is {prompt_tokens} tokens; the context window is {context_length}",
                param=self.PROMPT_PARAM,
                code="context_length_exceeded",
            )
        if max_tokens is not None and max_tokens > room:
            raise APIError(
                400,
                f"max_tokens is {max_tokens} but the prompt ({prompt_tokens} tokens) leaves room for "
                f"{room} in the context window of {context_length}",
                param="max_tokens",
                code="context_length_exceeded",
            )
        return room


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
                json.dumps({"tool": c.function.name, "arguments": _json_object(c.function.arguments)})
                for c in self.tool_calls
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
    """A function a chat request offers the model (the `function` of a `tools` entry)."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolSpec(_Body):
    type: Literal["function"]
    function: FunctionSpec


class ChatBody(_SamplingBody):
    PROMPT_PARAM: ClassVar[str] = "messages"

    messages: list[ChatMessageIn] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: list[ToolSpec] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None

    def check(self) -> None:
        """What is refused before any work: fields we do not support, logprobs asked for in ways we cannot give."""
        self.check_unsupported()
        if self.top_logprobs and not self.logprobs:
            raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        if self.stream and self.logprobs:
            raise APIError(400, "logprobs are not supported with stream: true", param="logprobs")

    @property
    def new_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def chat_messages(self) -> list[dict[str, str]]:
        """The conversation as the chat template takes it ("developer" is the system role by another name)."""
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]

    def functions(self) -> list[FunctionSpec]:
        return [t.function for t in self.tools or ()]

    def tool_choice_name(self) -> str | None:
        """ "auto", "required" or the one function's name the model must call; None when it may call none."""
        if not self.tools or self.tool_choice == "none":
            return None
        if self.stream:
            raise APIError(400, "stream is not supported together with tools", param="stream")
        choice = self.tool_choice or "auto"
        if not isinstance(choice, dict):
            return choice
        name = named_function(choice)
        if name is None:
            raise APIError(
                400,
                "tool_choice must be 'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}",
                param="tool_choice",
            )
        return name

    def response_schema(self) -> dict[str, Any] | None:
        """The JSON schema a `response_format` asks for (OpenAI's json_schema, or json_object with an optional
        `schema` as llama-cpp-python takes it), or None for text."""
        fmt = self.response_format or {}
        kind = fmt.get("type", "text")
        if kind == "text":
            return None
        if kind == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
                raise APIError(
                    400,
                    "response_format json_schema needs json_schema.schema (a JSON schema object)",
                    param="response_format",
                )
            return spec["schema"]
        if kind == "json_object":
            return fmt["schema"] if isinstance(fmt.get("schema"), dict) else {"type": "object"}
        raise APIError(
            400, f"response_format type must be text, json_object or json_schema, got {kind!r}", param="response_format"
        )


class CompletionBody(_SamplingBody):
    PROMPT_PARAM: ClassVar[str] = "prompt"

    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    def check(self) -> None:
        """What is refused before any work: fields we do not support."""
        self.check_unsupported()
        if self.echo:
            raise APIError(400, "echo is not supported", param="echo")
        if self.suffix:
            raise APIError(400, "suffix is not supported", param="suffix")
        if self.best_of is not None and self.best_of != self.n:
            raise APIError(400, "best_of other than n is not supported", param="best_of")
        if self.stream and self.logprobs is not None:
            raise APIError(400, "logprobs are not supported with stream: true", param="logprobs")

    def prompts(self) -> list[str | list[int]]:
        """The prompts, each text or token ids (one list of ids is one prompt)."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if not self.prompt:
            raise APIError(400, "prompt must not be empty", param="prompt")
        if all(isinstance(p, int) for p in self.prompt):
            return [self.prompt]
        return list(self.prompt)


# ----- tools and response formats, both ways --------------------------------------------------------------


def named_function(choice: Mapping[str, Any]) -> str | None:
    """The function a tool choice object names ({"type": "function", "function": {"name": ...}}), or None when it is
    not one."""
    name = (choice.get("function") or {}).get("name")
    return name if choice.get("type") == "function" and isinstance(name, str) else None


def function_tool(name: str, parameters: Mapping[str, Any], description: str | None = None) -> dict[str, Any]:
    """A `tools` entry offering one function."""
    function: dict[str, Any] = {"name": name}
    if description is not None:
        function["description"] = description
    return {"type": "function", "function": {**function, "parameters": dict(parameters)}}


def force_function(name: str) -> dict[str, Any]:
    """The `tool_choice` that makes the model call `name`."""
    return {"type": "function", "function": {"name": name}}


def json_schema_format(schema: Mapping[str, Any], name: str = "response") -> dict[str, Any]:
    """The `response_format` that constrains a reply to `schema` (OpenAI's strict json_schema)."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": dict(schema), "strict": True}}


def json_object_format(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The `response_format` of servers that take a schema with json_object (llama.cpp, llama-cpp-python)."""
    return {"type": "json_object", "schema": dict(schema)}


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def tool_call(name: str, arguments: str, call_id: str) -> dict[str, Any]:
    """One `tool_calls` entry: a call of `name` with `arguments` (JSON text)."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def assistant_message(content: str | None, tool_calls: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """An assistant message: its text, or (content None) the tool calls it made."""
    if tool_calls:
        return {"role": "assistant", "content": content, "tool_calls": [dict(c) for c in tool_calls]}
    return {"role": "assistant", "content": content}


def first_tool_call(message: Mapping[str, Any]) -> tuple[str | None, str] | None:
    """(name, arguments as JSON text) of a message's first tool call, or None when it made none."""
    calls = message.get("tool_calls") or []
    if not calls:
        return None
    function = calls[0].get("function") or {}
    return function.get("name"), function.get("arguments") or "{}"


# ----- answers ---------------------------------------------------------------------------------------------


class TokenDecoder(Protocol):
    def decode(self, ids: list[int]) -> str: ...


def model_card(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": OWNED_BY}


def model_list(model_id: str) -> dict[str, Any]:
    return {"object": "list", "data": [model_card(model_id)]}


def usage(completions: Sequence[Completion], *, prompts: int) -> dict[str, Any]:
    """Usage of a request: each prompt counts once, as OpenAI counts it, however many choices it was sampled for
    (choice index = prompt * n + j)."""
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


def chat_logprobs(tokenizer: TokenDecoder, completion: Completion, top: int) -> dict[str, Any]:
    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        text = tokenizer.decode([token_id])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    content = []
    for token_id, lp in zip(completion.token_ids, completion.logprobs or ()):
        content.append({**entry(token_id, lp.logprob), "top_logprobs": [entry(t, v) for t, v in lp.top[:top]]})
    return {"content": content}


def completion_logprobs(tokenizer: TokenDecoder, completion: Completion, top: int) -> dict[str, Any]:
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


@dataclass(frozen=True)
class Reply:
    """One response's id, creation time and model, and the shapes of its parts: a chat completion (`chat`) or a
    text completion, whole or as stream chunks."""

    chat: bool
    id: str
    created: int
    model: str

    @classmethod
    def new(cls, model: str, *, chat: bool) -> Reply:
        return cls(chat, ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex, int(time.time()), model)

    def _head(self, chunk: bool) -> dict[str, Any]:
        kind = ("chat.completion.chunk" if chunk else "chat.completion") if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def choice(
        self,
        index: int,
        content: str | dict[str, Any],
        finish_reason: str | None,
        logprobs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A whole choice: a chat choice's assistant message (see `assistant_message`), or a completion's text."""
        body = {"message": content} if self.chat else {"text": content}
        return {"index": index, **body, "logprobs": logprobs, "finish_reason": finish_reason}

    def response(self, choices: list[dict[str, Any]], usage: dict[str, Any]) -> dict[str, Any]:
        return {**self._head(False), "choices": choices, "usage": usage}

    def opening(self, index: int) -> dict[str, Any] | None:
        """The chunk a streamed choice starts with (a chat choice's role), or None."""
        return self._chunk(index, {"role": "assistant", "content": ""}) if self.chat else None

    def piece(self, index: int, text: str) -> dict[str, Any]:
        """A chunk carrying the next piece of a choice's text."""
        return self._chunk(index, {"content": text} if self.chat else text)

    def ending(self, index: int, finish_reason: str) -> dict[str, Any]:
        """The chunk that ends a choice, with its finish reason."""
        return self._chunk(index, {} if self.chat else "", finish_reason)

    def usage_chunk(self, usage: dict[str, Any]) -> dict[str, Any]:
        return {**self._head(True), "choices": [], "usage": usage}

    def _chunk(self, index: int, delta: dict[str, Any] | str, finish_reason: str | None = None) -> dict[str, Any]:
        body = {"delta": delta} if self.chat else {"text": delta}
        return {
            **self._head(True),
            "choices": [{"index": index, **body, "logprobs": None, "finish_reason": finish_reason}],
        }


def sse_event(event: Mapping[str, Any] | str) -> str:
    """One server-sent event of a stream: a chunk (JSON), or `STREAM_END`."""
    data = event if isinstance(event, str) else json.dumps(event, ensure_ascii=False)
    return f"data: {data}\n\n"


STREAM_END = "[DONE]"  # the data of a stream's last event


# ----- reading answers back --------------------------------------------------------------------------------


def reasoning_of(message: Mapping[str, Any]) -> str:
    """Reasoning a server returns apart: `reasoning_content` (vLLM, SGLang, DeepSeek's API) or `reasoning`."""
    return message.get("reasoning_content") or message.get("reasoning") or ""


def with_reasoning(message: Mapping[str, Any]) -> str:
    """A chat message's text with separately returned reasoning put back in front as <think>...</think>."""
    reasoning, content = reasoning_of(message), message.get("content") or ""
    return f"{THINK_OPEN}{reasoning}{THINK_CLOSE}{content}" if reasoning else content


def choice_text(choice: Mapping[str, Any], *, chat: bool) -> str:
    """A whole choice's text: a chat message with its reasoning in front, or a completion's `text`."""
    return with_reasoning(choice.get("message") or {}) if chat else choice.get("text") or ""


def chunk_parts(choice: Mapping[str, Any], *, chat: bool) -> tuple[str, str]:
    """(reasoning, text) a stream chunk's choice carries."""
    delta = choice.get("delta") or {}
    return reasoning_of(delta), (delta.get("content") if chat else choice.get("text")) or ""


def first_choice(data: Mapping[str, Any]) -> dict[str, Any] | None:
    choices = data.get("choices") or []
    return choices[0] if choices else None


def read_completion(
    text: str, finish_reason: str | None, usage: Mapping[str, Any] | None, seconds: float, *, error: str | None = None
) -> Completion:
    """A choice read back as a Completion: its usage counted, a finish reason we do not know (tool_calls,
    content_filter, none) read as "stop"."""
    usage = usage or {}
    details = usage.get("prompt_tokens_details") or {}
    return Completion(
        text=text,
        token_ids=[],
        finish_reason=finish_reason if finish_reason in FINISH_REASONS else "stop",
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0),
        generated_tokens=int(usage.get("completion_tokens") or 0),
        seconds=seconds,
        error=error,
    )


def context_length(listed: Sequence[Mapping[str, Any]], model: str) -> int | None:
    """The model's context as a server's model list gives it, if it does."""
    for entry in listed:
        if entry.get("id") != model:
            continue
        for source in (entry, entry.get("meta") or {}):
            for key in CONTEXT_FIELDS:
                value = source.get(key)
                if isinstance(value, int) and value > 0:
                    return value
    return None
