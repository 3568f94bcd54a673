"""Grammar-constrained tool calls for chat requests that offer tools (the OpenAI API's `tools`).

The model is told the tools in a system message and decodes one JSON action under a grammar built from
their schemas: `{"tool": NAME, "arguments": {...}}` or, when it may answer in words, `{"message": "..."}`.
The grammar makes every call parse and validate, so even the 135M default model never emits a broken one.

`tool_call_turn` is the one call a server makes: a request's messages, tools and tool_choice in, the prompt, its
grammar and the reading of the finished text as an OpenAI message out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from model.backends.backend import Prompt
from model.backends.openai_protocol import FunctionSpec, assistant_message, new_call_id, tool_call
from model.engine import Engine
from model.serving.grammar import GrammarProcessor, plain_schema, tool_or_message_schema
from model.serving.request import Completion


@dataclass(frozen=True)
class ToolCallOutput:
    """What one constrained completion said: a message, or one call (name, JSON arguments text)."""

    message: str | None = None
    name: str | None = None
    arguments: str | None = None
    call_id: str | None = None


class ToolCallGrammar:
    """The grammar and prompt for one request's tools and `tool_choice` ("auto", "required" or one name)."""

    def __init__(
        self, engine: Engine, tools: Sequence[FunctionSpec], choice: str = "auto", *, message_max_length: int = 2000
    ) -> None:
        if not tools:
            raise ValueError("tools must not be empty")
        names = [t.name for t in tools]
        if choice not in ("auto", "required") and choice not in names:
            raise ValueError(f"tool_choice names {choice!r}, which is not among the tools: {', '.join(names)}")
        offered = tools if choice in ("auto", "required") else [t for t in tools if t.name == choice]
        schema = tool_or_message_schema(
            {t.name: closed(plain_schema(t.parameters or {"type": "object"})) for t in offered},
            message_max_length=message_max_length,
            include_message=choice == "auto",
        )
        self.tools = offered
        self.choice = choice
        self.compiler = engine.grammar_compiler
        self.grammar = engine.json_grammar(schema)  # compiled once per distinct schema, kept by the engine

    def system_message(self) -> str:
        listing = "\n".join(
            json.dumps(
                {"name": t.name, "description": t.description or "", "parameters": t.parameters or {"type": "object"}}
            )
            for t in self.tools
        )
        how = 'Answer with exactly one JSON object: {"tool": NAME, "arguments": {...}} to call a tool' + (
            ', or {"message": "..."} to reply in words.' if self.choice == "auto" else "."
        )
        return f"You can call these tools:\n{listing}\n{how}"

    def with_tools(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        """`messages` with the tools listed in the first system message (one is put first if there is none)."""
        if messages and messages[0]["role"] == "system":
            return [
                {"role": "system", "content": messages[0]["content"] + "\n\n" + self.system_message()},
                *messages[1:],
            ]
        return [{"role": "system", "content": self.system_message()}, *messages]

    def processor(self) -> GrammarProcessor:
        """A fresh, stateful processor: one per request."""
        return self.compiler.processor(self.grammar)

    @staticmethod
    def parse(text: str) -> ToolCallOutput:
        """The action in a completion; a completion cut off by the token limit comes back as its raw text."""
        try:
            action = json.loads(text)
        except json.JSONDecodeError:
            return ToolCallOutput(message=text)
        if "tool" in action:
            return ToolCallOutput(name=action["tool"], arguments=json.dumps(action["arguments"]), call_id=new_call_id())
        return ToolCallOutput(message=action["message"])


@dataclass(frozen=True)
class ToolCallTurn:
    """One chat request with tools, ready for the engine: its prompt (the tools listed in its system message), a
    fresh grammar processor per choice, and how a finished choice reads as an OpenAI assistant message."""

    prompt: Prompt
    grammar: ToolCallGrammar

    def processor(self) -> GrammarProcessor:
        return self.grammar.processor()

    def message(self, completion: Completion) -> tuple[dict[str, Any], str]:
        """The assistant message and finish reason of a finished choice: a decoded call becomes `tool_calls`."""
        action = self.grammar.parse(completion.text)
        if action.name is None:
            return assistant_message(action.message), completion.finish_reason
        return assistant_message(None, [tool_call(action.name, action.arguments, action.call_id)]), "tool_calls"


def tool_call_turn(
    engine: Engine, messages: list[dict[str, str]], tools: Sequence[FunctionSpec], choice: str = "auto"
) -> ToolCallTurn:
    """The turn of a request offering `tools` under `choice` ("auto", "required" or one tool's name). Raises
    ValueError for an unknown name or a schema the grammar cannot take."""
    grammar = ToolCallGrammar(engine, tools, choice)
    return ToolCallTurn(engine.chat_prompt(grammar.with_tools(messages)), grammar)


def closed(schema: Any) -> Any:
    """`schema` with every object that does not say otherwise closed to its declared properties.

    JSON Schema lets an object carry any other key, and a small model under a grammar uses that freedom to
    ramble (copying the schema into its arguments) until it runs out of tokens. A function takes only the
    parameters it declares, so a call's arguments are closed unless the schema explicitly allows more.
    """
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {
        key: (
            {k: closed(v) for k, v in value.items()} if key in ("properties", "$defs", "definitions") else closed(value)
        )
        for key, value in schema.items()
    }
    if (out.get("type") == "object" or "properties" in out) and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out
