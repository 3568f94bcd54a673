"""Which sentences of a hit are shown: the ones nearest the query, with the file and line they stand on
(real Chroma, the real MiniLM embedder)."""

from __future__ import annotations

from functools import partial

from memory import vector_store
from memory.documents import read_chunks
from memory.matching import best_sentences, format_matches
from memory.vector_store import Hit

OPENING = "Grace bought 3 bags of apples at the market, each holding 12 apples."
REST = "She gave a third of them to her neighbour. Then she baked two pies that each used 7 apples."
PLANTED = [  # (a fact inside a paragraph of other sentences, a question in other words)
    (
        "The boiler was last serviced on 12 March by Lindqvist Heating.",
        "Which company looked after the heater last time?",
    ),
    ("Mila's shoe size is 31.", "What size footwear does Mila take?"),
    ("Recycling is collected on Tuesday mornings.", "Which day do they pick up the bottles and paper?"),
]


def test_the_matching_sentence_of_a_planted_fact_is_shown_with_its_line(store, tmp_path):
    lines = ["# House notes", ""]
    for fact, _ in PLANTED:  # each fact in the middle of a paragraph of unrelated sentences
        lines += [f"{OPENING} {fact}", REST, ""]
    path = tmp_path / "house.md"
    path.write_text("\n".join(lines))
    store.add_document("local", path)
    for fact, question in PLANTED:
        hits = store.search_documents("local", question, k=3)
        match = next(m for m in best_sentences(store.embedding, question, hits) if fact in m.hit.text)
        assert match.sentences[0].text == fact and OPENING not in match.text
        line = next(i for i, text in enumerate(lines, 1) if fact in text)
        assert match.position == f"{path.resolve()}, line {line}"
        assert f"[{path.resolve()}, line {line}] {fact}" in format_matches([match])


def test_turns_and_chunks_stored_without_lines_keep_their_source(embedding):
    turn = Hit(
        "user: Please remember: my locker code is 4471. Thanks!",
        "conversation c1, turn 0",
        0.3,
        {"session": "c1", "turn": 0},
    )
    old_chunk = Hit(
        "Intro text here. The locker code is 4471.", "/notes.md, chunk 2", 0.4, {"source": "/notes.md", "chunk": 1}
    )  # added before chunks recorded their line
    matches = best_sentences(embedding, "What is my locker code?", [turn, old_chunk])
    assert [(m.position, m.sentences[0].text, m.sentences[0].line) for m in matches] == [
        ("conversation c1, turn 0", "user: Please remember: my locker code is 4471.", None),
        ("/notes.md, chunk 2", "The locker code is 4471.", None),
    ]
    assert best_sentences(embedding, "anything", []) == []


def test_re_adding_a_file_chunked_another_way_leaves_no_old_chunk(store, tmp_path, monkeypatch):
    path = tmp_path / "long.md"
    path.write_text(" ".join(f"Sentence number {i} is here." for i in range(60)))
    monkeypatch.setattr(vector_store, "read_chunks", partial(read_chunks, max_chars=100))  # an older, finer chunking
    many = store.add_document("local", path).chunks
    monkeypatch.undo()
    now = store.add_document("local", path).chunks
    assert many > now and store.stats("local")[vector_store.DOCUMENTS] == now
