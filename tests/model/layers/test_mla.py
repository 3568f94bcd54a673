"""MLA's choice between its two ways of attending (their equality with transformers is in test_engine_parity.py),
and block-sparse attention on a latent-attention model."""

from __future__ import annotations

import pytest
import torch

import model
from model.layers.kv_cache import KVCache
from model.layers.mla import MultiHeadLatentAttention
from model.layers.sparse_attention import AttentionConfig
from model.loading.hf_config import config_from_hf
from model.serving.scheduler import forward_step
from tests.model.loading.test_hf_config import R1_CONFIG
from tests.model.test_engine_parity import assert_logits_close
from tests.model.tiny import VOCAB, save_word_tokenizer, tiny_model


def test_auto_expands_for_prefill_and_absorbs_for_decode_at_r1s_shape():
    config = config_from_hf(R1_CONFIG)
    with torch.device("meta"):
        attention = MultiHeadLatentAttention(config, layer=0)
    cache = KVCache(1, (576,), max_seq_len=4096, initial_blocks=0)
    seqs = [cache.new_sequence() for _ in range(4)]
    prefill = cache.append(seqs, [512, 300, 512, 17])
    assert not attention._absorbing_is_cheaper(prefill)
    cache.commit(prefill)
    decode = cache.append(seqs, [1, 1, 1, 1])
    assert attention._absorbing_is_cheaper(decode)
    cache.commit(decode)
    assert attention._absorbing_is_cheaper(cache.append(seqs, [4, 1, 1, 2]))  # speculative-style short steps too


# ----- block-sparse attention on a tiny DeepSeek-V3 (YaRN mscale in the softmax scale) -------------------------


@pytest.fixture(scope="module")
def deepseek(tmp_path_factory):
    directory = tmp_path_factory.mktemp("deepseek")
    tiny_model("deepseek_v3").save_pretrained(directory)
    save_word_tokenizer(directory)
    with model.load(directory, quant=None, threads=1, cache_dir=tmp_path_factory.mktemp("cache")) as engine:
        yield engine.model


def ragged_run(transformer, attention: AttentionConfig) -> torch.Tensor:
    """Every logit of two sequences fed as a chunked prefill, a ragged step and decode steps: [tokens, V]."""
    cache = transformer.new_cache(max_seq_len=256, capacity_bytes=1 << 22, key_summaries=attention.uses_key_summaries)
    g = torch.Generator().manual_seed(0)
    seqs = [cache.new_sequence(), cache.new_sequence()]
    logits = []
    for lengths in [(70, 33), (50, 1), (1, 40), (1, 1), (2, 1), (1, 1)]:  # prefill in chunks, then decode
        chunks = [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in lengths]
        logits.append(forward_step(transformer, cache, seqs, chunks, all_logits=True, attention=attention))
    return torch.cat(logits)


@pytest.mark.parametrize(
    "attention",
    [
        AttentionConfig(mode="topk", block_size=16, local_blocks=0, topk=1000),  # every block picked by top-k
        AttentionConfig(mode="local", block_size=16, local_blocks=100),  # a window over the whole sequence
    ],
    ids=["topk-every-block", "local-covering"],
)
def test_sparse_attention_over_every_block_equals_dense(deepseek, attention):
    dense = ragged_run(deepseek, AttentionConfig())
    assert_logits_close(ragged_run(deepseek, attention), dense)


def test_sparse_attention_with_few_blocks_leaves_keys_out(deepseek):
    """The same steps over 16-token blocks, a 1-block window (+ sink) and top-1: not dense any more."""
    dense = ragged_run(deepseek, AttentionConfig())
    for attention in (
        AttentionConfig(mode="local", block_size=16, local_blocks=1),
        AttentionConfig(mode="topk", block_size=16, local_blocks=1, topk=1),
    ):
        assert (ragged_run(deepseek, attention) - dense).abs().max() > 1e-2 * dense.abs().max()


def test_sparse_steps_gather_only_the_chosen_rows(deepseek, monkeypatch):
    """A sparse step reads its rows through `attend_latent`'s gather, never the dense read of every row."""

    def read_every_row(*args):
        raise AssertionError("a sparse step read every cached row")

    monkeypatch.setattr(KVCache, "read", read_every_row)
    ragged_run(deepseek, AttentionConfig(mode="topk", block_size=16, local_blocks=1, topk=2))
    with pytest.raises(AssertionError, match="every cached row"):  # the dense path does read them all
        ragged_run(deepseek, AttentionConfig())


def test_the_native_decode_step_declines_a_latent_attention_model(deepseek):
    from model.serving.compiled_step import unsupported_reason

    for key_summaries in (False, True):
        cache = deepseek.new_cache(max_seq_len=256, capacity_bytes=1 << 22, key_summaries=key_summaries)
        reason = unsupported_reason(deepseek, cache)
        assert reason is not None and ("mla" in reason or "MultiHeadLatentAttention" in reason), reason
