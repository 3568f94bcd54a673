"""MiniLMEmbedding gives sentence-transformers' vectors for all-MiniLM-L6-v2, offline, and is a proper Chroma EF."""

from __future__ import annotations

import numpy as np
from chromadb.utils.embedding_functions import known_embedding_functions

from memory.embeddings import MiniLMEmbedding, bundled_model_dir

TEXTS = [
    "The cat sat on the mat.",
    "Quarterly revenue rose 12% on strong cloud demand.",
    "x",
    "A much longer passage that goes on and on " * 60,  # > 256 tokens: truncated exactly like the reference
]


def test_vectors_equal_sentence_transformers(embedding):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(bundled_model_dir()), device="cpu", local_files_only=True)
    assert reference.max_seq_length == 256
    expected = reference.encode(TEXTS, batch_size=4, convert_to_numpy=True)
    ours = np.stack(embedding(TEXTS))  # one padded, length-sorted batch: order kept, padding kept out of the mean
    assert ours.shape == (4, 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    one_by_one = np.stack([embedding([text])[0] for text in TEXTS])
    np.testing.assert_allclose(one_by_one, ours, atol=2e-5)


def test_similar_sentences_are_nearer_than_unrelated(embedding):
    cat, kitten, tax = embedding(["A cat is sleeping.", "A kitten is napping.", "File your tax return by April."])
    assert float(cat @ kitten) > float(cat @ tax) + 0.3


def test_chroma_config_round_trip_and_registration():
    ef = MiniLMEmbedding(max_length=128, batch_size=8)
    rebuilt = MiniLMEmbedding.build_from_config(ef.get_config())
    assert (rebuilt.max_length, rebuilt.batch_size) == (128, 8)
    assert not ef.is_legacy()
    assert known_embedding_functions[MiniLMEmbedding.name()] is MiniLMEmbedding
    assert ef.default_space() == "cosine"
