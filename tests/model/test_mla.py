"""MLA's choice between its two ways of attending (their equality with transformers is in test_engine_parity.py)."""

from __future__ import annotations

import torch

from model.config import ModelConfig
from model.kv_cache import KVCache
from model.mla import MultiHeadLatentAttention
from tests.model.test_config import R1_CONFIG


def test_auto_expands_for_prefill_and_absorbs_for_decode_at_r1s_shape():
    config = ModelConfig.from_hf_config(R1_CONFIG)
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
