"""Tokenizer: a `tokenizers.Tokenizer` plus the checkpoint's chat template and special tokens.

Built once from a GGUF file or an HF directory through transformers (the reference conversion),
then serialisable to a plain dict (`to_dict` / `from_dict`) so a cached load needs neither
transformers nor the GGUF reader.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as _FastTokenizer

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

# Used only when the checkpoint ships no chat template at all.
CHATML_FALLBACK_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")


def split_reasoning(text: str) -> tuple[str, str]:
    """Split R1-style output into (reasoning, answer), both stripped.

    - `<think>R</think>A` -> (R, A); R1 distills often omit the opening tag because the chat
      template already emitted it, so `R</think>A` -> (R, A) too.
    - `<think>R` with no close (generation cut off while thinking) -> (R, "").
    - no tags -> ("", text).
    """
    if THINK_CLOSE in text:
        reasoning, answer = text.split(THINK_CLOSE, 1)
        head, sep, tail = reasoning.partition(THINK_OPEN)
        if sep:
            reasoning = tail if not head.strip() else head + tail
        return reasoning.strip(), answer.strip()
    if THINK_OPEN in text:
        head, _, tail = text.partition(THINK_OPEN)
        return (head + tail).strip(), ""
    return "", text.strip()


@dataclass
class Tokenizer:
    """Encode/decode plus chat templating for one checkpoint.

    `add_bos_default` follows the source: GGUF `tokenizer.ggml.add_bos_token`, or for an HF
    directory whether its tokenizer adds BOS itself. Text rendered by `apply_chat_template`
    normally starts with the BOS string already; encode it with `add_bos=False`.
    """

    backend: _FastTokenizer
    chat_template: str
    special_tokens: dict[str, str | None]  # bos_token, eos_token, unk_token, pad_token
    bos_token_id: int | None
    eos_token_ids: tuple[int, ...]
    add_bos_default: bool = False
    _template_cache: Any = field(default=None, repr=False, compare=False)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_transformers(
        cls, hf_tok: Any, *, extra_eos_ids: Iterable[int] = (), add_bos: bool | None = None
    ) -> Tokenizer:
        """Wrap a transformers fast tokenizer (its backend, template and special tokens)."""
        backend = _FastTokenizer.from_str(hf_tok.backend_tokenizer.to_str())
        # The backend may carry a post-processor that adds BOS/EOS; we add BOS ourselves.
        specials = {name: _token_str(getattr(hf_tok, name, None)) for name in _SPECIAL_TOKEN_NAMES}
        template = hf_tok.chat_template
        if isinstance(template, dict):  # several named templates: use the default one
            template = template.get("default") or next(iter(template.values()))
        bos_id = hf_tok.bos_token_id
        eos = [hf_tok.eos_token_id] if hf_tok.eos_token_id is not None else []
        eos += list(extra_eos_ids)
        if add_bos is None:
            probe = hf_tok("a")["input_ids"]
            add_bos = bos_id is not None and len(probe) > 0 and probe[0] == bos_id
        return cls(
            backend=backend,
            chat_template=template or CHATML_FALLBACK_TEMPLATE,
            special_tokens=specials,
            bos_token_id=bos_id,
            eos_token_ids=tuple(dict.fromkeys(int(i) for i in eos)),
            add_bos_default=bool(add_bos),
        )

    @classmethod
    def from_gguf(cls, path: str | Path, metadata: dict[str, Any]) -> Tokenizer:
        """Convert the vocabulary stored in a GGUF file (via transformers' GGUF tokenizer converter)."""
        from transformers import AutoTokenizer

        path = Path(path)
        hf_tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)
        extra = [metadata[k] for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id") if k in metadata]
        add_bos = bool(metadata.get("tokenizer.ggml.add_bos_token", False))
        return cls.from_transformers(hf_tok, extra_eos_ids=extra, add_bos=add_bos)

    @classmethod
    def from_hf_dir(cls, path: str | Path, *, extra_eos_ids: Iterable[int] = ()) -> Tokenizer:
        from transformers import AutoTokenizer

        hf_tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        return cls.from_transformers(hf_tok, extra_eos_ids=extra_eos_ids)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tokenizer_json": self.backend.to_str(),
            "chat_template": self.chat_template,
            "special_tokens": self.special_tokens,
            "bos_token_id": self.bos_token_id,
            "eos_token_ids": list(self.eos_token_ids),
            "add_bos_default": self.add_bos_default,
        }

    def save_pretrained(self, directory: str | Path) -> None:
        """Write this tokenizer as transformers saves a fast one (tokenizer.json, tokenizer_config.json, ...), so
        `from_hf_dir` and other tools read it back: how a GGUF's vocabulary travels into an exported HF directory."""
        from transformers import PreTrainedTokenizerFast

        specials = {name: token for name, token in self.special_tokens.items() if token is not None}
        hf_tok = PreTrainedTokenizerFast(
            tokenizer_object=_FastTokenizer.from_str(self.backend.to_str()),
            chat_template=self.chat_template,
            **specials,
        )
        hf_tok.save_pretrained(str(directory))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tokenizer:
        return cls(
            backend=_FastTokenizer.from_str(d["tokenizer_json"]),
            chat_template=d["chat_template"],
            special_tokens=d["special_tokens"],
            bos_token_id=d["bos_token_id"],
            eos_token_ids=tuple(d["eos_token_ids"]),
            add_bos_default=d["add_bos_default"],
        )

    # ---- encode / decode ----------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can produce (base vocabulary plus added tokens)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Token ids of `text`; special-token strings in `text` map to their ids.

        add_bos None -> the checkpoint's default. BOS is never doubled if `text` already starts with it.
        """
        ids = self.backend.encode(text, add_special_tokens=False).ids
        if add_bos is None:
            add_bos = self.add_bos_default
        if add_bos and self.bos_token_id is not None and (not ids or ids[0] != self.bos_token_id):
            ids = [self.bos_token_id, *ids]
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def stream_decoder(self, skip_special_tokens: bool = False) -> StreamDecoder:
        return StreamDecoder(self, skip_special_tokens=skip_special_tokens)

    # ---- chat -----------------------------------------------------------------------------
    def apply_chat_template(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, **kwargs: Any
    ) -> str:
        """Render `messages` with the checkpoint's template exactly as transformers would (same jinja setup)."""
        if self._template_cache is None:
            self._template_cache = _compile_template(self.chat_template)
        variables = {k: v for k, v in self.special_tokens.items() if v is not None}
        variables.update(kwargs)
        return self._template_cache.render(messages=messages, add_generation_prompt=add_generation_prompt, **variables)

    @staticmethod
    def split_reasoning(text: str) -> tuple[str, str]:
        return split_reasoning(text)


class StreamDecoder:
    """Turns ids arriving one at a time into text deltas whose concatenation equals `decode(all ids)`.

    Byte-level BPE splits a multi-byte character across tokens, and some decoders change a
    piece's text depending on what precedes it (leading-space rules), so each step decodes a
    short window of recent ids and emits only the new suffix, holding back while the text ends
    in an incomplete character (U+FFFD).
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = False) -> None:
        self.tok = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self.prefix_offset = 0  # window start: context for decoding the new ids
        self.read_offset = 0  # ids before this are already emitted

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def put(self, token_id: int) -> str:
        """Add one id; return the text it completes ("" while a character is still partial)."""
        self.ids.append(int(token_id))
        prefix_text = self._decode(self.ids[self.prefix_offset : self.read_offset])
        new_text = self._decode(self.ids[self.prefix_offset :])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)
            return new_text[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (e.g. a truncated multi-byte character, as U+FFFD)."""
        prefix_text = self._decode(self.ids[self.prefix_offset : self.read_offset])
        new_text = self._decode(self.ids[self.prefix_offset :])
        self.prefix_offset = self.read_offset = len(self.ids)
        return new_text[len(prefix_text) :]


def _token_str(tok: Any) -> str | None:
    if tok is None:
        return None
    return tok if isinstance(tok, str) else str(getattr(tok, "content", tok))


def _compile_template(source: str) -> Any:
    """Same environment as transformers' chat_template_utils (sandboxed, trim/lstrip blocks, loopcontrols)."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
    ) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt: str) -> str:
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(source)
