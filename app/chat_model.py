"""`ChatR1`: our engine as a LangChain chat model (langchain-core's `BaseChatModel`).

    from app import ChatR1
    llm = ChatR1()                                    # the default model and settings (R1_* variables apply)
    llm.invoke("Hi").content                          # R1's reasoning: .additional_kwargs["reasoning_content"]
    llm.bind_tools([tool]).invoke("...").tool_calls   # our Tool, LangChain tools or OpenAI tool dicts
    llm.with_structured_output(Answer).invoke("...")  # JSON-schema-constrained output, parsed

Every call is one `engine.submit`, so concurrent calls and `batch` run in the engine's batch together.
Tool calls and structured output are constrained by grammar exactly as `r1 serve` constrains them
(app/tool_calls.py): a call always parses and fits its tool's schema. ChatR1 runs the local engine; for an
OpenAI-compatible server, LangChain's own ChatOpenAI talks to it directly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import ConfigDict, Field, PrivateAttr

from app.config import Settings
from app.engine import shared_backends
from app.tool_calls import closed, tool_call_turn
from model.backends.openai_protocol import FunctionSpec, named_function
from model.engine import Engine
from model.serving.request import Completion, GenerationError, RequestHandle
from model.tokenizer import THINK_CLOSE, THINK_OPEN, split_reasoning
from tools.tool import Tool

ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}


class ChatR1(BaseChatModel):
    """A chat model on our engine. Unset fields take the `Settings` (defaults, then R1_* variables)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    model_name: str | None = Field(default=None, alias="model")  # None = settings.model ("default")
    max_tokens: int | None = None  # None = settings.max_new_tokens
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    timeout: float | None = None  # seconds to wait for a reply before cancelling it; None = no limit
    settings: Settings | None = None  # None = Settings.from_env()
    engine: Engine | None = Field(default=None, exclude=True)  # a loaded engine to share; None = load one
    _engine: Engine | None = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "r1-reasoner"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model": self._settings().model,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="r1-reasoner", ls_model_type="chat", ls_model_name=kwargs.get("model") or self._settings().model
        )
        sampling = self._sampling(stop, kwargs)
        params.update(ls_temperature=sampling["temperature"], ls_max_tokens=sampling["max_new_tokens"])
        if sampling["stop"]:
            params["ls_stop"] = list(sampling["stop"])
        return params

    # ----- the engine and its parameters ---------------------------------------------------------

    def _settings(self) -> Settings:
        settings = self.settings or Settings.from_env()
        return settings.override(model=self.model_name)

    def loaded_engine(self, model: str | None = None) -> Engine:
        """The engine this model runs on, loaded (once per process and model) on first use; `model` = another
        model for one call (it is loaded and kept too)."""
        settings = self._settings()
        if model is not None and model != settings.model:
            return self._shared(settings.override(model=model))
        if self._engine is None:
            self._engine = self.engine if self.engine is not None else self._shared(settings)
        return self._engine

    @staticmethod
    def _shared(settings: Settings) -> Engine:
        if settings.backend != "local":
            raise ValueError(
                f"ChatR1 runs the local engine (R1_BACKEND is {settings.backend!r}); for a remote "
                "OpenAI-compatible server use langchain-openai's ChatOpenAI(base_url=...)"
            )
        return shared_backends.get(settings)

    def _result_of(self, request: RequestHandle) -> Completion:
        """Wait for a request (at most `timeout` seconds); stop it if we are interrupted or give up."""
        try:
            return request.result(timeout=self.timeout)
        finally:
            request.cancel()  # no-op when finished

    def _sampling(self, stop: list[str] | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
        settings = self._settings()
        pick = lambda name, field, default: next(  # noqa: E731 (call argument, then field, then setting)
            (v for v in (overrides.get(name), getattr(self, field)) if v is not None), default
        )
        return {
            "max_new_tokens": pick("max_tokens", "max_tokens", settings.max_new_tokens),
            "temperature": pick("temperature", "temperature", settings.temperature),
            "top_p": pick("top_p", "top_p", settings.top_p),
            "seed": pick("seed", "seed", settings.seed),
            "stop": tuple(stop if stop is not None else self.stop or ()),
        }

    # ----- generation ----------------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        engine = self.loaded_engine(kwargs.get("model"))
        chat = to_chat_messages(messages)
        sampling = self._sampling(stop, kwargs)
        if kwargs.get("tools") and kwargs.get("tool_choice") != "none":
            choice = kwargs.get("tool_choice") or "auto"
            return self._generate_tool_call(engine, chat, kwargs["tools"], choice, sampling)
        if kwargs.get("response_format") is not None:
            completion = engine.chat_json(chat, kwargs["response_format"], max_new_tokens=sampling["max_new_tokens"])
            _raise_if_failed(completion)
            return _result(
                AIMessage(
                    content=completion.text,
                    usage_metadata=usage(completion),
                    response_metadata=self._metadata(completion, engine),
                )
            )
        completion = self._result_of(engine.submit(engine.chat_prompt(chat), **sampling))
        _raise_if_failed(completion)
        return _result(self.message(completion, engine))

    def message(self, completion: Completion, engine: Engine | None = None) -> AIMessage:
        """A completion as an AIMessage: R1's <think> block in additional_kwargs["reasoning_content"], usage."""
        reasoning, answer = split_reasoning(completion.text)
        return AIMessage(
            content=answer,
            additional_kwargs={"reasoning_content": reasoning} if reasoning else {},
            usage_metadata=usage(completion),
            response_metadata=self._metadata(completion, engine),
        )

    def _generate_tool_call(
        self,
        engine: Engine,
        chat: list[dict[str, str]],
        tools: list[dict[str, Any]],
        choice: str,
        sampling: dict[str, Any],
    ) -> ChatResult:
        turn = tool_call_turn(engine, chat, [FunctionSpec.model_validate(t["function"]) for t in tools], choice)
        completion = self._result_of(engine.submit(turn.prompt, **{**sampling, "logits_processor": turn.processor()}))
        _raise_if_failed(completion)
        action = turn.grammar.parse(completion.text)
        if action.name is None and completion.text.startswith('{"tool"'):  # a call cut off by max_tokens
            invalid = {
                "name": None,
                "args": completion.text,
                "id": None,
                "type": "invalid_tool_call",
                "error": f"the call was cut off after {completion.generated_tokens} tokens (max_tokens)",
            }
            message = AIMessage(
                content="",
                invalid_tool_calls=[invalid],
                usage_metadata=usage(completion),
                response_metadata=self._metadata(completion, engine),
            )
        elif action.name is None:
            message = AIMessage(
                content=action.message or "",
                usage_metadata=usage(completion),
                response_metadata=self._metadata(completion, engine),
            )
        else:
            call = {
                "name": action.name,
                "args": json.loads(action.arguments),
                "id": action.call_id,
                "type": "tool_call",
            }
            message = AIMessage(
                content="",
                tool_calls=[call],
                usage_metadata=usage(completion),
                response_metadata={**self._metadata(completion, engine), "finish_reason": "tool_calls"},
            )
        return _result(message)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        if kwargs.get("tools") and kwargs.get("tool_choice") != "none" or kwargs.get("response_format") is not None:
            # A tool call or a JSON document is useful only whole: one chunk, with parseable tool-call chunks.
            message = self._generate(messages, stop, run_manager, **kwargs).generations[0].message
            chunks = [
                {"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "index": i, "type": "tool_call_chunk"}
                for i, c in enumerate(message.tool_calls)
            ]
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    content=message.content,
                    tool_call_chunks=chunks,
                    usage_metadata=message.usage_metadata,
                    response_metadata=message.response_metadata,
                    chunk_position="last",
                )
            )
            return
        engine = self.loaded_engine(kwargs.get("model"))
        chat = to_chat_messages(messages)
        rendered = engine.tokenizer.apply_chat_template(chat, add_generation_prompt=True)
        splitter = ReasoningSplitter(thinking=rendered.rstrip().endswith(THINK_OPEN))  # R1 templates open the tag
        request = engine.submit(engine.chat_prompt(chat), **self._sampling(stop, kwargs))
        try:
            for delta in request.stream():
                yield from self._chunks(*splitter.push(delta), run_manager)
        finally:
            request.cancel()
        yield from self._chunks(*splitter.finish(), run_manager)
        completion = request.result()
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=usage(completion),
                response_metadata=self._metadata(completion, engine),
                chunk_position="last",
            )
        )

    @staticmethod
    def _chunks(
        reasoning: str, answer: str, run_manager: CallbackManagerForLLMRun | None
    ) -> Iterator[ChatGenerationChunk]:
        if reasoning:
            yield ChatGenerationChunk(
                message=AIMessageChunk(content="", additional_kwargs={"reasoning_content": reasoning})
            )
        if answer:
            if run_manager is not None:
                run_manager.on_llm_new_token(answer)
            yield ChatGenerationChunk(message=AIMessageChunk(content=answer))

    def _metadata(self, completion: Completion, engine: Engine | None = None) -> dict[str, Any]:
        return {
            "model_name": (engine or self.loaded_engine()).name,
            "model_provider": "r1-reasoner",
            "finish_reason": completion.finish_reason,
        }

    # ----- tools and structured output -----------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[Tool | BaseTool | Mapping[str, Any] | type | Callable[..., Any]],
        *,
        tool_choice: str | Mapping[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """The model with `tools` offered on every call. tool_choice: "auto" (default: a call or an answer in words),
        "any"/"required"/True (some call), a tool's name or {"type": "function", "function": {"name": ...}}, "none"."""
        formatted = [t.to_openai() if isinstance(t, Tool) else convert_to_openai_tool(t) for t in tools]
        return self.bind(tools=formatted, tool_choice=_tool_choice(tool_choice), **kwargs)

    def with_structured_output(
        self, schema: Mapping[str, Any] | type, *, include_raw: bool = False, method: str = "json_schema", **kwargs: Any
    ) -> Runnable[LanguageModelInput, Any]:
        """The model answering with JSON valid under `schema` (a pydantic class, TypedDict, JSON schema or OpenAI
        function), parsed. method: "json_schema" (default: the reply is constrained to the schema), "json_mode"
        (any JSON object), or "function_calling" (a forced, constrained tool call)."""
        if method == "function_calling":
            return super().with_structured_output(schema, include_raw=include_raw, **kwargs)
        kwargs.pop("strict", None)
        if kwargs:
            raise ValueError(f"unsupported arguments {sorted(kwargs)}")
        pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        if method == "json_schema":
            json_schema = closed(_json_schema(schema))  # as OpenAI's strict mode: only the declared keys
        elif method == "json_mode":
            json_schema = {"type": "object"}
        else:
            raise ValueError(f"unknown method {method!r}; choose json_schema, json_mode or function_calling")
        llm = self.bind(
            response_format=json_schema, ls_structured_output_format={"kwargs": {"method": method}, "schema": schema}
        )
        parser = PydanticOutputParser(pydantic_object=schema) if pydantic else JsonOutputParser()
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        failed = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parsed.with_fallbacks([failed], exception_key="parsing_error")


class ReasoningSplitter:
    """Streamed R1 output split into (reasoning delta, answer delta) as it arrives.

    Reasoning is what comes between <think> and </think> (from the start, when the chat template already
    opened the tag). A tag's first characters at the end of a delta are held back until it is clear.
    """

    def __init__(self, *, thinking: bool = False) -> None:
        self.thinking = thinking
        self.started = thinking  # past the point where an opening tag could appear
        self.pending = ""

    def push(self, delta: str) -> tuple[str, str]:
        text, self.pending = self.pending + delta, ""
        reasoning, answer = "", ""
        while text:
            if not self.started:
                stripped = text.lstrip()
                if THINK_OPEN.startswith(stripped) and len(stripped) < len(THINK_OPEN):
                    self.pending = text  # maybe the opening tag, still arriving
                    return reasoning, answer
                self.started = True
                if stripped.startswith(THINK_OPEN):
                    self.thinking, text = True, stripped[len(THINK_OPEN) :]
                continue
            if not self.thinking:
                return reasoning, answer + text
            end = text.find(THINK_CLOSE)
            if end >= 0:
                reasoning += text[:end]
                self.thinking, text = False, text[end + len(THINK_CLOSE) :].lstrip()
                continue
            keep = next(
                (k for k in range(min(len(THINK_CLOSE) - 1, len(text)), 0, -1) if text.endswith(THINK_CLOSE[:k])), 0
            )
            self.pending = text[len(text) - keep :] if keep else ""
            return reasoning + text[: len(text) - keep], answer
        return reasoning, answer

    def finish(self) -> tuple[str, str]:
        """What was held back, once the stream has ended."""
        text, self.pending = self.pending, ""
        return (text, "") if self.thinking else ("", text)


# ----- conversions ---------------------------------------------------------------------------------


def to_chat_messages(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages as our chat messages; a tool call reads as the JSON action it was decoded as."""
    chat = []
    for message in messages:
        role = ROLES.get(message.type)
        if role is None:
            raise ValueError(f"unsupported message type {message.type!r}")
        if isinstance(message, AIMessage) and message.tool_calls:
            content = "\n".join(json.dumps({"tool": c["name"], "arguments": c["args"]}) for c in message.tool_calls)
        elif isinstance(message, ToolMessage):
            content = message.text if message.status != "error" else f"Error: {message.text}"
        else:
            content = message.text
        chat.append({"role": role, "content": content})
    return chat


def usage(completion: Completion) -> UsageMetadata:
    return UsageMetadata(
        input_tokens=completion.prompt_tokens,
        output_tokens=completion.generated_tokens,
        total_tokens=completion.prompt_tokens + completion.generated_tokens,
        input_token_details={"cache_read": completion.cached_tokens},
    )


def _result(message: AIMessage) -> ChatResult:
    return ChatResult(generations=[ChatGeneration(message=message)])


def _raise_if_failed(completion: Completion) -> None:
    if completion.finish_reason == "error":
        raise GenerationError(completion.error)


def _tool_choice(choice: str | Mapping[str, Any] | bool | None) -> str | None:
    """LangChain's and OpenAI's spellings of tool_choice as ToolCallGrammar's: "auto", "required", a name, "none"."""
    if choice is None or choice == "auto":
        return "auto"
    if choice is True or choice in ("any", "required"):
        return "required"
    if choice is False or choice == "none":
        return "none"
    if isinstance(choice, str):
        return choice
    name = named_function(choice) if isinstance(choice, Mapping) else None
    if name is None:
        raise ValueError(
            f"tool_choice must be 'auto', 'any', 'none', a tool name or an OpenAI tool choice, got {choice!r}"
        )
    return name


def _json_schema(schema: Mapping[str, Any] | type) -> dict[str, Any]:
    """A JSON schema as it is, or the parameters of a TypedDict / OpenAI function / tool."""
    if isinstance(schema, Mapping) and "type" in schema and "function" not in schema and "parameters" not in schema:
        return dict(schema)
    return convert_to_openai_tool(schema)["function"]["parameters"]
