"""tools/tool.py: schemas from signatures and models, checked at build; text answers for any input."""

from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import BaseModel, Field

from tools.tool import Tool, call_tool


def area(width: Annotated[float, Field(description="Width in metres.")], height: float = 1.0) -> float:
    """Area of a rectangle."""
    if width < 0:
        raise ValueError("secret internals")
    return width * height


class AreaArgs(BaseModel):
    width: float
    height: float = 1.0


def test_schema_from_typed_signature():
    tool = Tool.from_function(area)
    assert tool.name == "area" and tool.description == "Area of a rectangle."
    assert tool.to_openai() == {
        "type": "function",
        "function": {
            "name": "area",
            "description": "Area of a rectangle.",
            "parameters": {
                "type": "object",
                "required": ["width"],
                "properties": {
                    "width": {"type": "number", "description": "Width in metres."},
                    "height": {"type": "number", "default": 1.0},
                },
            },
        },
    }
    assert tool({"width": 2, "height": 3}) == "6.0"
    assert tool('{"width": 2}') == "2.0"


@pytest.mark.parametrize(
    "arguments, expected",
    [
        ('{"width": ', "Error: arguments for area are not valid JSON: "),
        ("[1]", "Error: arguments for area must be a JSON object, got list"),
        ("[" * 100_000 + "]" * 100_000, "Error: arguments for area are not valid JSON: nested too deeply"),
        ('{"width": ' + "9" * 5000 + "}", "Error: arguments for area are not valid JSON: Exceeds the limit"),
        ({"width": "wide"}, "Error: invalid arguments for area: width: Input should be a valid number"),
        ({}, "Error: invalid arguments for area: width: Field required"),
        ({"width": -1}, "Error: area failed: ValueError"),  # not the exception's text
        ({"type": "tool_call", "args": {"width": 1}}, "Error: invalid arguments for area: width: Field required"),
    ],
)
def test_errors_come_back_as_text(arguments, expected):
    tool = Tool("area", "Area of a rectangle.", AreaArgs, area)
    assert tool(arguments).startswith(expected)


def test_error_types_answer_with_their_message():
    tool = Tool("area", "Area.", AreaArgs, area, error_types=(ValueError,))
    assert tool({"width": -1}) == "Error: secret internals"


@pytest.mark.parametrize(
    "func",
    [
        lambda width: width,  # missing field
        lambda height, width=1.0: 0,  # wrong order
        lambda width, height=2.0: 0,  # different default
        lambda width, height: 0,  # required in one only
        lambda width, height=1.0, *, scale: 0,  # keyword-only without default
    ],
)
def test_signature_checked_when_built(func):
    with pytest.raises(TypeError):
        Tool("area", "Area.", AreaArgs, func)


def test_name_and_description_checked():
    with pytest.raises(ValueError, match="name"):
        Tool("area of rect", "Area.", AreaArgs, area)
    with pytest.raises(ValueError, match="description"):
        Tool("area", " ", AreaArgs, area)


def test_langchain_and_call_tool():
    tool = Tool.from_function(area)
    langchain_tool = tool.to_langchain()
    assert langchain_tool.name == "area" and langchain_tool.invoke({"width": 2.0}) == "2.0"
    assert langchain_tool.invoke({"width": "wide"}).startswith("Error: invalid arguments for area: width")
    assert call_tool([tool], "area", '{"width": 3}') == "3.0"
    assert call_tool([tool], "volume", "{}") == "Error: unknown tool 'volume'; available tools: area"
