"""Grammar-constrained decoding on the default model's real tokenizer: whatever the logits say, the output
parses and validates against the schema (random logits stand in for a model that tries everything)."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import torch

from model.serving.grammar import (
    MAX_ALTERNATIVES,
    MAX_SCHEMA_DEPTH,
    GrammarCompiler,
    GrammarError,
    plain_schema,
    tool_or_message_schema,
)

ORDER_ID = "^#W[0-9]{7}$"

LOOKUP_SCHEMA = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "pattern": ORDER_ID},
        "user_id": {"type": "string", "pattern": "^[a-z]{1,8}_[a-z]{1,8}_[0-9]{4}$"},
        "reason": {"type": "string", "enum": ["no longer needed", "ordered by mistake"]},
        "item_ids": {"type": "array", "items": {"type": "string", "pattern": "^[0-9]{10}$"}, "maxItems": 3},
        "note": {"type": "string", "maxLength": 12},
        "quantity": {"type": "integer", "minimum": 1, "maximum": 9},
        "gift": {"type": "boolean"},
    },
    "required": ["order_id", "user_id", "reason", "item_ids", "note", "quantity", "gift"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def tokenizer():
    from model.loading.checkpoint import ModelNotFoundError, load_checkpoint

    try:
        return load_checkpoint("default").tokenizer
    except ModelNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def compiler(tokenizer) -> GrammarCompiler:
    return GrammarCompiler(tokenizer)


def sample_under(compiler: GrammarCompiler, grammar: str, seed: int, max_tokens: int = 400) -> list[int]:
    """Sample tokens from random logits through a fresh processor until end-of-sequence is drawn."""
    generator = torch.Generator().manual_seed(seed)
    processor = compiler.processor(grammar)
    generated: list[int] = []
    for _ in range(max_tokens):
        logits = processor(generated, torch.randn(compiler.vocab_size, generator=generator) * 4)
        token = int(torch.multinomial(logits.softmax(-1), 1, generator=generator))
        if token in compiler.eos_token_ids:
            assert processor.accepting, "end-of-sequence was allowed before the output was complete"
            return generated
        generated.append(token)
    raise AssertionError(f"no end-of-sequence within {max_tokens} tokens: {generated}")


@pytest.mark.parametrize("seed", range(25))
def test_random_logits_always_give_valid_json(compiler, tokenizer, seed: int) -> None:
    grammar = compiler.json_schema(LOOKUP_SCHEMA)
    text = tokenizer.decode(sample_under(compiler, grammar, seed))
    value = json.loads(text)
    jsonschema.validate(value, LOOKUP_SCHEMA)
    assert re.fullmatch(r"#W\d{7}", value["order_id"])
    assert text == json.dumps(value, ensure_ascii=False)  # compact, json.dumps separators


def test_tool_or_message_choice_produces_both_kinds(compiler, tokenizer) -> None:
    tools = {
        "get_order_details": {
            "type": "object",
            "properties": {"order_id": {"type": "string", "pattern": ORDER_ID}},
            "required": ["order_id"],
            "additionalProperties": False,
        },
        "list_all_product_types": {"type": "object", "properties": {}, "additionalProperties": False},
    }
    schema = tool_or_message_schema(tools, message_max_length=30)
    grammar = compiler.json_schema(schema)
    kinds = set()
    for seed in range(30):
        value = json.loads(tokenizer.decode(sample_under(compiler, grammar, seed)))
        jsonschema.validate(value, schema)
        kinds.add(value.get("tool", "message"))
        if value.get("tool") == "get_order_details":
            assert re.fullmatch(r"#W\d{7}", value["arguments"]["order_id"])
    assert kinds == {"get_order_details", "list_all_product_types", "message"}


def test_mask_allows_exactly_the_grammar_continuations(compiler, tokenizer) -> None:
    grammar = compiler.json_schema(
        {"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"], "additionalProperties": False}
    )
    processor = compiler.processor(grammar)
    ids = tokenizer.encode('{"a": true}', add_bos=False)
    logits = processor(ids, torch.zeros(compiler.vocab_size))
    # Complete: only end-of-sequence may follow.
    assert torch.isfinite(logits).nonzero().flatten().tolist() == list(compiler.eos_token_ids)
    assert processor.accepting


def test_token_outside_the_grammar_is_a_clear_error(compiler, tokenizer) -> None:
    grammar = compiler.json_schema({"type": "string", "pattern": ORDER_ID})
    processor = compiler.processor(grammar)
    with pytest.raises(GrammarError, match="break the grammar"):
        processor(tokenizer.encode('"#X', add_bos=False), torch.zeros(compiler.vocab_size))


@pytest.mark.parametrize(
    "schema, message",
    [
        ({"type": "nonsense"}, "Invalid type"),
        ({"type": "string", "pattern": "(("}, "regex"),
        ({"type": "string", "minLength": 5, "maxLength": 2}, "Unsatisfiable"),
    ],
)
def test_bad_schema_is_a_clear_error(compiler, schema, message: str) -> None:
    with pytest.raises(GrammarError, match=message):
        compiler.json_schema(schema)


def test_padded_logits_never_allow_ids_the_tokenizer_lacks(tokenizer) -> None:
    compiler = GrammarCompiler(tokenizer, vocab_size=tokenizer.vocab_size + 64)
    processor = compiler.processor(compiler.json_schema({"type": "boolean"}))
    logits = processor([], torch.zeros(compiler.vocab_size))
    assert not torch.isfinite(logits[tokenizer.vocab_size :]).any()
    allowed = [tokenizer.decode([t]) for t in torch.isfinite(logits).nonzero().flatten().tolist()]
    assert allowed and all("true".startswith(a) or "false".startswith(a) for a in allowed)


def nested(levels: int) -> dict:
    """An object schema `levels` objects deep (each level is two JSON levels: the object and its properties)."""
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


def widening(levels: int) -> dict:
    """Each definition uses the one below it twice: 2**levels copies once inlined (a 'billion laughs')."""
    defs = {"d0": {"type": "string"}} | {
        f"d{i}": {"type": "array", "prefixItems": [{"$ref": f"#/$defs/d{i - 1}"}] * 2} for i in range(1, levels + 1)
    }
    return {"$defs": defs, "$ref": f"#/$defs/d{levels}"}


@pytest.mark.parametrize(
    "schema, message",
    [
        (nested(350), "nests deeper"),  # was a RecursionError
        (nested(MAX_SCHEMA_DEPTH // 2 + 1), "nests deeper"),
        ({"$ref": "#"}, "refers to itself"),
        ({"type": "object", "properties": {"again": {"$ref": "#"}}}, "refers to itself"),
        ({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, "refers to itself"),
        (
            {
                "$defs": {
                    "a": {"type": "array", "items": {"$ref": "#/$defs/b"}},
                    "b": {"anyOf": [{"$ref": "#/$defs/a"}]},
                },
                "$ref": "#/$defs/a",
            },
            "refers to itself",
        ),
        ({"anyOf": [{"const": f"v{i}"} for i in range(3000)]}, "3000 alternatives"),
        ({"oneOf": [{"const": i} for i in range(MAX_ALTERNATIVES + 1)]}, "alternatives"),
        ({"enum": list(range(30_000))}, "too large"),
        (widening(20), "too large"),
        ({"$ref": "https://example.com/schema.json"}, "only references inside"),
        ({"$ref": "#/$defs/missing"}, "points to nothing"),
        ([{"type": "string"}], "must be an object"),
    ],
    ids=[
        "350-deep",
        "just-too-deep",
        "ref-root",
        "ref-root-nested",
        "self-def",
        "mutual-defs",
        "anyOf-3000",
        "oneOf-over-limit",
        "enum-30000",
        "billion-laughs",
        "remote-ref",
        "missing-ref",
        "not-an-object",
    ],
)
def test_schemas_without_a_bounded_grammar_are_refused_when_built(compiler, schema, message: str) -> None:
    """Each of these compiled and then failed mid-generation, or overflowed the stack; now the grammar is refused."""
    with pytest.raises(GrammarError, match=message):
        compiler.json_schema(schema)
    if isinstance(schema, dict):  # as a tool's parameters, too
        with pytest.raises(GrammarError, match=message):
            plain_schema(schema)


def test_local_refs_are_inlined_so_a_nested_schema_keeps_its_defs(compiler, tokenizer) -> None:
    """A tool's parameters are nested in the action schema, where '#/$defs/...' would point at the wrong root."""
    item = {
        "type": "object",
        "properties": {"sku": {"type": "string", "pattern": "^[0-9]{4}$"}},
        "required": ["sku"],
        "additionalProperties": False,
    }
    parameters = {
        "$defs": {"item": item},
        "type": "object",
        "additionalProperties": False,
        "required": ["items", "$ref"],
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/$defs/item"}, "minItems": 1, "maxItems": 2},
            "$ref": {"type": "boolean"},
        },
    }  # a property named "$ref" is not a reference
    plain = plain_schema(parameters)
    assert plain["properties"]["items"]["items"] == item and "$defs" not in plain
    grammar = compiler.json_schema(tool_or_message_schema({"order": plain}, include_message=False))
    for seed in range(5):
        value = json.loads(tokenizer.decode(sample_under(compiler, grammar, seed)))
        jsonschema.validate(value["arguments"], parameters)
        assert value["arguments"]["items"]
