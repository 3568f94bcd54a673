"""Tokenizer parity with transformers on the default GGUF, chat templates, streaming decode, reasoning split."""

from __future__ import annotations

import pytest

from model.tokenizer import CHATML_FALLBACK_TEMPLATE, Tokenizer, split_reasoning

TEXTS = [
    "Hello, world!",
    "  leading spaces and\ttabs\nnewlines\n\n",
    "Ünïcödé café naïve — “quotes” €100",
    "emoji: 😀🎉👩‍👩‍👧 and flags 🇫🇷",
    "中文测试，日本語のテキスト、한국어",
    "def f(x):\n    return x ** 2  # code",
    "<|im_start|>user\nspecial tokens inline<|im_end|>",
    "",
]

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi 😀"}],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke."},
    ],
]


@pytest.fixture(scope="module")
def tok(default_checkpoint) -> Tokenizer:
    return default_checkpoint.tokenizer


@pytest.mark.parametrize("text", TEXTS)
def test_encode_decode_matches_transformers(tok, reference_hf_tokenizer, text):
    ids = tok.encode(text, add_bos=False)
    assert ids == reference_hf_tokenizer.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == reference_hf_tokenizer.decode(ids)
    assert tok.decode(ids, skip_special_tokens=True) == reference_hf_tokenizer.decode(ids, skip_special_tokens=True)
    if "<|im_start|>" not in text:
        assert tok.decode(ids) == text  # byte-level BPE is lossless


def test_special_ids_and_bos(tok, reference_hf_tokenizer, default_checkpoint):
    assert tok.vocab_size == len(reference_hf_tokenizer) == default_checkpoint.config.vocab_size
    assert tok.bos_token_id == reference_hf_tokenizer.bos_token_id == default_checkpoint.config.bos_token_id
    assert reference_hf_tokenizer.eos_token_id in tok.eos_token_ids
    assert set(default_checkpoint.config.eos_token_ids) <= set(tok.eos_token_ids)
    ids = tok.encode("hi", add_bos=True)
    assert ids[0] == tok.bos_token_id and ids[1:] == tok.encode("hi", add_bos=False)
    bos = tok.special_tokens["bos_token"]
    assert tok.encode(bos + "hi", add_bos=True).count(tok.bos_token_id) == 1  # never doubled


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_template_matches_transformers(tok, reference_hf_tokenizer, messages, add_generation_prompt):
    ours = tok.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
    ref = reference_hf_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    assert ours == ref


def test_chatml_fallback_and_serialisation(tok):
    d = tok.to_dict()
    d["chat_template"] = CHATML_FALLBACK_TEMPLATE
    bare = Tokenizer.from_dict(d)
    out = bare.apply_chat_template([{"role": "user", "content": "hi"}])
    assert out == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    again = Tokenizer.from_dict(tok.to_dict())
    assert again.encode(TEXTS[3]) == tok.encode(TEXTS[3])
    assert again.eos_token_ids == tok.eos_token_ids and again.add_bos_default == tok.add_bos_default


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("skip", [False, True])
def test_stream_decoder_concatenation_equals_decode(tok, text, skip):
    ids = tok.encode(text, add_bos=False)
    dec = tok.stream_decoder(skip_special_tokens=skip)
    pieces = [dec.put(i) for i in ids]
    pieces.append(dec.flush())
    assert "".join(pieces) == tok.decode(ids, skip_special_tokens=skip)
    assert all("\ufffd" not in p for p in pieces)


def test_stream_decoder_holds_partial_characters(tok):
    ids = tok.encode("😀", add_bos=False)
    assert len(ids) > 1, "expected the emoji to span several byte-level tokens"
    dec = tok.stream_decoder()
    pieces = [dec.put(i) for i in ids]
    assert pieces[:-1] == [""] * (len(ids) - 1) and pieces[-1] == "😀"


def test_stream_decoder_truncated_character_on_flush(tok):
    ids = tok.encode("a😀", add_bos=False)
    dec = tok.stream_decoder()
    out = "".join(dec.put(i) for i in ids[:-1])
    assert out == "a"
    tail = dec.flush()
    assert tail and set(tail) == {"\ufffd"}  # the partial emoji surfaces once, as U+FFFD
    assert dec.flush() == ""


@pytest.mark.parametrize(
    "text,expected",
    [
        ("<think>\nLet me add.\n</think>\n\nThe answer is 4.", ("Let me add.", "The answer is 4.")),
        ("Let me add.\n</think>\n\nThe answer is 4.", ("Let me add.", "The answer is 4.")),  # R1 distills
        ("<think>still thinking, cut off", ("still thinking, cut off", "")),
        ("Just an answer.", ("", "Just an answer.")),
        ("<think></think>Direct.", ("", "Direct.")),
        ("<think>a</think>b</think>c", ("a", "b</think>c")),
        ("", ("", "")),
    ],
)
def test_split_reasoning(text, expected, tok):
    assert split_reasoning(text) == expected
    assert tok.split_reasoning(text) == expected
