"""Which sentences of a retrieved record answer the query: what `r1 memory search` and the chat's "Recalled
from memory" show, so a short fact inside a longer chunk is seen, with where it stands in its source."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from memory.documents import all_sentence_spans
from memory.vector_store import Hit

MAX_SENTENCES = 2  # per hit: the best one, and the next best if it scores nearly as well
MARGIN = 0.05  # cosine similarity within which a second sentence also counts as a best match


@dataclass(frozen=True)
class Sentence:
    text: str
    line: int | None  # 1-based line in the document (of its PDF page); None for a conversation turn
    score: float  # cosine similarity to the query


@dataclass(frozen=True)
class Match:
    """A hit and its sentences that best match the query, in the order they stand in the hit."""

    hit: Hit
    sentences: list[Sentence]

    @property
    def position(self) -> str:
        """Where the best matching sentence stands: "FILE, page P, line L" or "conversation S, turn T"."""
        meta = self.hit.metadata
        best = max(self.sentences, key=lambda s: s.score)
        if "source" not in meta or best.line is None:  # a turn, or a chunk stored without lines
            return self.hit.source
        page = f", page {meta['page']}" if "page" in meta else ""
        return f"{meta['source']}{page}, line {best.line}"

    @property
    def text(self) -> str:
        return " … ".join(s.text for s in self.sentences)


def best_sentences(
    embed: Callable[[list[str]], Sequence[Sequence[float]]], query: str, hits: Sequence[Hit]
) -> list[Match]:
    """Each hit with its sentences nearest `query` (one embedding pass over all of them, `embed` returning
    unit vectors as MiniLMEmbedding does): the best, and up to MAX_SENTENCES within MARGIN of it."""
    spans = [all_sentence_spans(hit.text) or [(0, len(hit.text))] for hit in hits]
    sentences = [" ".join(hit.text[s:e].split()) for hit, found in zip(hits, spans) for s, e in found]
    starts = [s for found in spans for s, _ in found]  # where each sentence starts in its hit's text
    if not sentences:
        return []
    vectors = embed([query, *sentences])
    query_vector = vectors[0]
    scores = [sum(a * b for a, b in zip(query_vector, vector)) for vector in vectors[1:]]
    matches, at = [], 0
    for hit, found in zip(hits, spans):
        own = list(range(at, at + len(found)))
        at += len(found)
        own = [i for i in own if not sentences[i].startswith("#")] or own  # a heading only when nothing else is
        best = max(scores[i] for i in own)
        chosen = sorted(sorted(own, key=lambda i: -scores[i])[:MAX_SENTENCES])
        chosen = [i for i in chosen if scores[i] >= best - MARGIN]
        first_line = hit.metadata.get("line")
        matches.append(
            Match(
                hit,
                [
                    Sentence(
                        sentences[i],
                        None if first_line is None else int(first_line) + hit.text.count("\n", 0, starts[i]),
                        float(scores[i]),
                    )
                    for i in chosen
                ],
            )
        )
    return matches


def format_matches(matches: Sequence[Match]) -> str:
    """ "[position] matching sentences" lines: what the chat shows as "Recalled from memory"."""
    return "\n".join(f"[{match.position}] {match.text}" for match in matches)
