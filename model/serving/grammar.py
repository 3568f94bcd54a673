"""Grammar-constrained decoding with llguidance: a per-request logits processor that masks every token the
grammar does not allow next.

    compiler = GrammarCompiler(engine.tokenizer)              # once per tokenizer (~0.4 s)
    grammar = compiler.json_schema(schema)                    # compiled and checked once per schema
    processor = compiler.processor(grammar)                   # one per request: it is stateful
    logits = processor(generated_ids, logits)                 # called once per decode step

We unpack llguidance's bitmask with numpy ourselves: `llguidance.torch` would call `torch.compile`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import llguidance
import numpy as np
import torch

from model.serving.sampler import NoTokenAllowed
from model.tokenizer import Tokenizer

# Compact JSON with the separators of Python's json.dumps, so that examples shown to a model in a prompt
# (written with json.dumps) look exactly like what the grammar lets it write.
JSON_OPTIONS: dict[str, Any] = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


# Bounds on a JSON schema, checked before llguidance sees it: deeper schemas overflow recursion (Python's or
# llguidance's), and larger ones compile but then fail mid-generation (llguidance allows 2,000 items per parser row).
MAX_SCHEMA_DEPTH = 64  # JSON nesting of a schema, its $refs inlined
MAX_SCHEMA_NODES = 20_000  # JSON values in a schema, its $refs inlined
MAX_ALTERNATIVES = 1_000  # subschemas of one anyOf / oneOf
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
_SCHEMA_DATA = frozenset({"const", "enum", "default", "examples"})


class GrammarError(ValueError):
    """A grammar or schema that llguidance cannot compile, or tokens that break a grammar."""


def plain_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """`schema` self-contained and bounded: each local `$ref` replaced by what it points to (so the schema can be
    nested in another, as a tool's parameters are), within the bounds above.

    Raises GrammarError for a schema that is not an object, nests deeper than MAX_SCHEMA_DEPTH, holds more than
    MAX_SCHEMA_NODES values or an anyOf / oneOf of more than MAX_ALTERNATIVES, refers to itself (`{"$ref": "#"}`,
    a recursive `$defs` entry: a recursive schema has no bounded grammar), or refers outside itself.
    """
    if not isinstance(schema, Mapping):
        raise GrammarError(f"a JSON schema must be an object, not {type(schema).__name__}")
    count = 0

    def copy(node: Any, depth: int, expanding: tuple[str, ...], data: bool) -> Any:
        nonlocal count
        count += 1
        if depth > MAX_SCHEMA_DEPTH:
            raise GrammarError(f"the schema nests deeper than {MAX_SCHEMA_DEPTH} levels")
        if count > MAX_SCHEMA_NODES:
            raise GrammarError(f"the schema is too large: more than {MAX_SCHEMA_NODES} values (with its $refs inlined)")
        if isinstance(node, list):
            return [copy(item, depth + 1, expanding, data) for item in node]
        if not isinstance(node, Mapping):
            return node
        if data:
            return {key: copy(value, depth + 1, expanding, True) for key, value in node.items()}
        if "$ref" in node:
            ref = node["$ref"]
            if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
                raise GrammarError(f"$ref {ref!r}: only references inside the schema ('#/...') are supported")
            if ref in expanding:
                raise GrammarError(f"$ref {ref!r} refers to itself: recursive schemas are not supported")
            target = copy(_pointer(schema, ref), depth, (*expanding, ref), False)
            rest = copy({k: v for k, v in node.items() if k != "$ref"}, depth, expanding, False)
            return {**rest, "allOf": [target, *rest.get("allOf", [])]} if rest else target
        out = {}
        for key, value in node.items():
            if key in ("$defs", "definitions"):
                continue  # inlined where they are used
            if key in ("anyOf", "oneOf") and isinstance(value, list) and len(value) > MAX_ALTERNATIVES:
                raise GrammarError(f"{key} has {len(value)} alternatives; at most {MAX_ALTERNATIVES} are allowed")
            if key in _SCHEMA_MAPS and isinstance(value, Mapping):
                count += 1
                out[key] = {name: copy(sub, depth + 2, expanding, False) for name, sub in value.items()}
            else:
                out[key] = copy(value, depth + 1, expanding, key in _SCHEMA_DATA)
        return out

    return copy(schema, 0, (), False)


def _pointer(schema: Mapping[str, Any], ref: str) -> Any:
    """What the local JSON pointer `ref` ('#', '#/$defs/item', ...) points to in `schema`."""
    node: Any = schema
    for part in ref[2:].split("/") if ref != "#" else ():
        part = part.replace("~1", "/").replace("~0", "~")
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise GrammarError(f"$ref {ref!r} points to nothing in the schema") from None
    return node


class GrammarCompiler:
    """llguidance's view of one tokenizer, and the grammars compiled against it.

    `vocab_size` is the width of the model's logits when it differs from the tokenizer's (padded
    embeddings); ids the tokenizer does not have are always masked.
    """

    def __init__(self, tokenizer: Tokenizer, vocab_size: int | None = None) -> None:
        self.vocab_size = vocab_size or tokenizer.vocab_size
        self.eos_token_ids = tuple(tokenizer.eos_token_ids)
        self.ll_tokenizer = llguidance.LLTokenizer(
            tokenizer.backend.to_str(), n_vocab=tokenizer.vocab_size, eos_token=list(self.eos_token_ids)
        )

    def json_schema(self, schema: Mapping[str, Any]) -> str:
        """The llguidance grammar for JSON documents valid under `schema` (compact, json.dumps separators).
        Raises GrammarError for a schema llguidance cannot compile or `plain_schema` refuses."""
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(
                json.dumps(plain_schema(schema)), overrides=JSON_OPTIONS
            )
        except ValueError as e:
            raise GrammarError(f"bad JSON schema: {e}") from None
        return self._checked(grammar)

    def lark(self, source: str) -> str:
        """The llguidance grammar for a Lark grammar (llguidance's dialect: `%json {...}` embeds a schema)."""
        return self._checked(llguidance.LLMatcher.grammar_from_lark(source))

    def processor(self, grammar: str) -> GrammarProcessor:
        """A fresh processor for one request under `grammar` (from `json_schema` or `lark`)."""
        matcher = llguidance.LLMatcher(self.ll_tokenizer, grammar, log_level=0)
        return GrammarProcessor(matcher, self.ll_tokenizer.vocab_size, self.vocab_size)

    def _checked(self, grammar: str) -> str:
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, self.ll_tokenizer)
        if is_error:
            raise GrammarError(f"grammar does not compile: {messages[0]}")
        return grammar


class GrammarProcessor:
    """Stateful logits processor for one request: `(generated_ids, logits [V]) -> logits [V]`.

    Each call first feeds the grammar the ids generated since the last call (the engine passes the
    whole list), then sets every token the grammar forbids to -inf. End-of-sequence is allowed only
    once the output is complete. Raises NoTokenAllowed if nothing may follow, GrammarError if the
    generated ids are not ones this processor allowed.
    """

    def __init__(self, matcher: llguidance.LLMatcher, tokenizer_vocab_size: int, vocab_size: int) -> None:
        self.matcher = matcher
        self.tokenizer_vocab_size = tokenizer_vocab_size
        self.vocab_size = vocab_size  # logits width, >= tokenizer_vocab_size
        self.consumed = 0  # how many generated ids the matcher has seen
        self._bitmask = np.zeros(((tokenizer_vocab_size + 31) // 32,), dtype=np.int32)
        if matcher.is_error():
            raise GrammarError(f"grammar does not compile: {_first_line(matcher.get_error())}")

    def __call__(self, generated_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
        self.advance(generated_ids)
        allowed = self.allowed_mask()
        if not allowed.any():
            raise NoTokenAllowed(f"the grammar allows no token after {self.consumed} generated tokens")
        return logits.masked_fill_(~allowed[: logits.shape[-1]], float("-inf"))

    def advance(self, generated_ids: list[int]) -> None:
        """Feed the ids after the ones already consumed."""
        new = [int(t) for t in generated_ids[self.consumed :]]
        if new and not self.matcher.consume_tokens(new):
            raise GrammarError(f"generated tokens {new} break the grammar: {_first_line(self.matcher.get_error())}")
        self.consumed += len(new)

    def forced_tokens(self, generated_ids: list[int], limit: int) -> list[int]:
        """Up to `limit` tokens the grammar forces after `generated_ids` (llguidance's fast-forward tokens: the
        canonical tokens of the only bytes it allows next), for jump-forward drafts (model/serving/drafts.py).

        The model may still split those bytes otherwise, so they are verified, never emitted unchecked.
        """
        self.advance(generated_ids)
        return [int(t) for t in self.matcher.compute_ff_tokens()[:limit]]

    def allowed_mask(self) -> torch.Tensor:
        """Bool [vocab_size]: which tokens may come next."""
        self.matcher.unsafe_compute_mask_ptr(self._bitmask.ctypes.data, self._bitmask.nbytes)
        if self.matcher.is_error():
            raise NoTokenAllowed(f"grammar error: {_first_line(self.matcher.get_error())}")
        # Token t is bit (t % 32) of word t // 32; little-endian bytes unpacked LSB first keep that order.
        allowed = np.zeros(self.vocab_size, dtype=np.bool_)
        allowed[: self.tokenizer_vocab_size] = np.unpackbits(self._bitmask.view(np.uint8), bitorder="little")[
            : self.tokenizer_vocab_size
        ]
        return torch.from_numpy(allowed)

    @property
    def accepting(self) -> bool:
        """Whether the output so far is a complete sentence of the grammar."""
        return self.matcher.is_accepting()


def tool_or_message_schema(
    tools: Mapping[str, Mapping[str, Any]], *, message_max_length: int = 600, include_message: bool = True
) -> dict[str, Any]:
    """JSON schema of one agent action: a call of one of `tools` (name -> argument schema) or a message.

    A call is `{"tool": NAME, "arguments": {...}}`, a message `{"message": "..."}` (1 to
    `message_max_length` characters, so that a model cannot ramble past its token budget).
    `include_message=False` leaves only the calls (a tool must be called).
    """
    calls = [
        {
            "type": "object",
            "properties": {"tool": {"const": name}, "arguments": dict(arguments)},
            "required": ["tool", "arguments"],
            "additionalProperties": False,
        }
        for name, arguments in tools.items()
    ]
    message = {
        "type": "object",
        "properties": {"message": {"type": "string", "minLength": 1, "maxLength": message_max_length}},
        "required": ["message"],
        "additionalProperties": False,
    }
    return {"anyOf": [*calls, message] if include_message else calls}


def _first_line(message: str) -> str:
    """llguidance's errors carry a multi-kilobyte parser dump after the first line."""
    return message.strip().splitlines()[0] if message.strip() else "no error message"
