"""`Tool`: the one way a tool is declared, for the search, the bot, the OpenAI server and LangChain.

A tool is a name, a description, a pydantic argument model (its JSON schema is what the model
sees) and the function that runs. The model must match the function's signature, checked when
the tool is built. Calling a tool never raises: bad JSON, schema violations and anything the
function raises come back as "Error: ..." text the model can read and act on.

    tool = Tool.from_function(area)                       # schema from the typed signature
    tool = Tool("math_simplify", "Simplify ...", ExpressionArgs, simplify)
    tool('{"expression": "x + x"}')  -> "2*x"
    tool.to_openai()                 -> {"type": "function", "function": {...}}
    tool.to_langchain()              -> a langchain-core StructuredTool
"""

from __future__ import annotations

import inspect
import json
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError, create_model

if TYPE_CHECKING:
    from langchain_core.tools import BaseTool

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")  # what the OpenAI API accepts as a function name


@dataclass(frozen=True)
class Tool:
    """One tool. `func` takes the model's fields as its leading parameters (same names, order,
    required-ness and defaults); any further parameters must be keyword-only with defaults.

    `render` turns the function's result into text (default `str`); an exception of one of
    `error_types` is answered with "Error: <its message>" (messages written for the model, such
    as `MathToolError`), any other with "Error: <name> failed: <exception type>".
    """

    name: str
    description: str
    args: type[BaseModel]
    func: Callable[..., Any]
    render: Callable[[Any], str] = str
    error_types: tuple[type[Exception], ...] = ()

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"tool name {self.name!r} must be 1-64 letters, digits, '_' or '-'")
        if not self.description.strip():
            raise ValueError(f"tool {self.name!r} has no description")
        _check_signature(self.name, self.func, self.args)

    @classmethod
    def from_function(
        cls, func: Callable[..., Any], *, name: str | None = None, description: str | None = None, **options: Any
    ) -> Tool:
        """A tool whose argument model is derived from `func`'s typed signature (annotations,
        `Annotated[..., Field(description=...)]`, defaults); name and description default to
        the function's name and docstring."""
        hints = typing.get_type_hints(func, include_extras=True)
        fields: dict[str, Any] = {}
        for param in inspect.signature(func).parameters.values():
            if param.kind is inspect.Parameter.KEYWORD_ONLY:
                continue
            if param.name not in hints:
                raise TypeError(f"{func.__name__}(): parameter {param.name!r} has no type annotation")
            default = ... if param.default is inspect.Parameter.empty else param.default
            fields[param.name] = (hints[param.name], default)
        model = create_model(f"{func.__name__.title().replace('_', '')}Args", **fields)
        return cls(name or func.__name__, description or inspect.getdoc(func) or "", model, func, **options)

    @property
    def schema(self) -> dict[str, Any]:
        """The JSON schema of the arguments, as the model is shown it (no pydantic titles)."""
        return _without_titles(self.args.model_json_schema())

    def __call__(self, arguments: Mapping[str, Any] | str | None = None) -> str:
        """Run the tool on `arguments` (a JSON object as text, a mapping, or None for none) and
        return its answer or "Error: ..." text; never raises."""
        try:
            parsed = _decode(self.name, arguments)
            if isinstance(parsed, str):
                return parsed
            try:
                validated = self.args.model_validate(parsed)
            except ValidationError as e:
                return self.invalid(e)
            result = self.func(**{field: getattr(validated, field) for field in self.args.model_fields})
            return self.render(result)
        except self.error_types as e:
            return f"Error: {e}"
        except Exception as e:  # the contract is text for any input
            return f"Error: {self.name} failed: {type(e).__name__}"

    def invalid(self, error: ValidationError) -> str:
        """The text answer to arguments that do not fit the schema, naming each bad field."""
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in error.errors(include_url=False)
        )
        return f"Error: invalid arguments for {self.name}: {problems}"

    def to_openai(self) -> dict[str, Any]:
        """The entry for the OpenAI chat API's `tools` list."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.schema},
        }

    def to_langchain(self) -> BaseTool:
        """A langchain-core StructuredTool that runs this tool (errors come back as text there too)."""
        from langchain_core.tools import StructuredTool

        return StructuredTool.from_function(
            func=lambda **kwargs: self(kwargs),
            name=self.name,
            description=self.description,
            args_schema=self.args,
            infer_schema=False,
            handle_validation_error=self.invalid,
        )


def call_tool(
    tools: list[Tool] | tuple[Tool, ...] | Mapping[str, Tool], name: str, arguments: Mapping[str, Any] | str | None
) -> str:
    """Run a model's tool call (a tool name plus its arguments); an unknown name is error text too."""
    by_name = tools if isinstance(tools, Mapping) else {t.name: t for t in tools}
    tool = by_name.get(name)
    if tool is None:
        return f"Error: unknown tool {name!r}; available tools: {', '.join(sorted(by_name))}"
    return tool(arguments)


def _decode(name: str, arguments: Mapping[str, Any] | str | None) -> dict[str, Any] | str:
    """The arguments as a dict, or the error text for ones that are not a JSON object."""
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except RecursionError:
            return f"Error: arguments for {name} are not valid JSON: nested too deeply"
        except ValueError as e:  # JSONDecodeError, or an integer too long to convert
            return f"Error: arguments for {name} are not valid JSON: {e}"
    if not isinstance(arguments, Mapping):
        return f"Error: arguments for {name} must be a JSON object, got {type(arguments).__name__}"
    # A plain dict even if it looks like a LangChain ToolCall ({"type": "tool_call", "args": ...}):
    # here it is arguments, and wrong ones.
    return dict(arguments)


def _check_signature(name: str, func: Callable[..., Any], args: type[BaseModel]) -> None:
    """`func`'s leading parameters are `args`' fields: same names and order, required in both or
    with equal defaults; the rest are keyword-only with defaults."""
    params = list(inspect.signature(func).parameters.values())
    leading = [p for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    fields = args.model_fields
    if [p.name for p in leading] != list(fields):
        raise TypeError(
            f"tool {name!r}: parameters {[p.name for p in leading]} do not match {args.__name__} fields {list(fields)}"
        )
    for param in leading:
        field = fields[param.name]
        required = param.default is inspect.Parameter.empty
        if field.is_required() != required:
            raise TypeError(f"tool {name!r}: argument {param.name!r} is required in only one of model and function")
        if not required and field.default != param.default:
            raise TypeError(
                f"tool {name!r}: argument {param.name!r} defaults differ ({field.default!r} vs {param.default!r})"
            )
    for param in params:
        if param.kind is inspect.Parameter.KEYWORD_ONLY and param.default is inspect.Parameter.empty:
            raise TypeError(f"tool {name!r}: keyword-only parameter {param.name!r} has no default")


def _without_titles(schema: Any) -> Any:
    """Drop pydantic's generated "title" keys (not properties that happen to be called title)."""
    if isinstance(schema, list):
        return [_without_titles(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    return {
        key: (
            {k: _without_titles(v) for k, v in value.items()}
            if key in ("properties", "$defs")
            else _without_titles(value)
        )
        for key, value in schema.items()
        if key != "title"
    }
