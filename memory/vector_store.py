"""Tier 3: a Chroma vector store of evicted conversation turns, solved problems and the user's documents.

Every record carries the `user` it belongs to (and turns their `session`); every read and delete is
filtered by them, built in one place (`_where`), so one user's data never reaches another's prompt.
Every collection is opened with our `MiniLMEmbedding`: Chroma's default embedding function (which
downloads an ONNX model) is never reached. Writes are upserts keyed by content-derived ids, so
repeating one after a crash is harmless, and re-adding a changed document removes the old chunks
only after the new ones are in.

chromadb (and torch, for MiniLM) are imported when a store is opened, not when this module is: the
front ends import it freely, and `r1 generate` never pays for Chroma.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from memory.documents import read_chunks

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection
    from chromadb.config import Settings as ChromaSettings

    from memory.embeddings import MiniLMEmbedding

DOCUMENTS = "r1_documents"
TURNS = "r1_turns"
SOLVED = "r1_solved_problems"
COLLECTIONS = (DOCUMENTS, TURNS, SOLVED)
WRITE_BATCH = 128  # records per upsert: one embedding pass and one Chroma commit each


class MemoryStoreError(RuntimeError):
    """The store cannot be opened or written (corrupt, unwritable, unreachable). Nothing was deleted."""


@dataclass(frozen=True)
class Hit:
    """One retrieved record: its text, where it came from (shown to the model and the user), its distance."""

    text: str
    source: str
    distance: float  # cosine distance: 0 = same direction, 2 = opposite
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DocumentInfo:
    source: str  # the file's resolved path, as stored
    chunks: int
    added_at: float


@dataclass(frozen=True)
class SolvedProblem:
    """A cached solution found by similarity. It is a candidate only: the caller must verify it."""

    problem: str
    solution: str
    answer: str
    distance: float


def _chroma_settings() -> ChromaSettings:
    from chromadb.config import Settings as ChromaSettings

    return ChromaSettings(anonymized_telemetry=False, allow_reset=False)


def _record_id(*parts: str | int) -> str:
    return hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()[:32]


def _check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{kind} must be a non-empty string, got {value!r}")
    return value


def _where(user: str, **equal: str) -> dict[str, Any]:
    """The filter every read and delete goes through: always the user, plus any other equalities."""
    terms = [{"user": _check_name("user", user)}] + [{k: v} for k, v in equal.items()]
    return terms[0] if len(terms) == 1 else {"$and": terms}


def open_client(path: str | Path | None = None, url: str | None = None) -> ClientAPI:
    """A Chroma client: a server at `url` (http[s]://host[:port]) if given, else on-disk at `path`."""
    import chromadb

    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"chroma url must look like http://host:port, got {url!r}")
        try:
            return chromadb.HttpClient(
                host=parts.hostname,
                port=parts.port or (443 if parts.scheme == "https" else 8000),
                ssl=parts.scheme == "https",
                settings=_chroma_settings(),
            )
        except Exception as err:  # chromadb reports a refused connection as a ValueError
            raise MemoryStoreError(f"cannot reach the Chroma server at {url}: {err}") from None
    if path is None:
        raise ValueError("the vector store needs a path or a url")
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise MemoryStoreError(f"cannot open the memory store at {path}: it is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MemoryStoreError(f"cannot create the memory store at {path}: {err.strerror or err}") from None
    try:
        return chromadb.PersistentClient(path=str(path), settings=_chroma_settings())
    except Exception as err:  # chromadb raises bare Exceptions from its Rust core; name the store instead
        raise MemoryStoreError(f"cannot open the memory store at {path}: {err}") from None


class VectorStore:
    """The three collections of tier 3 in one Chroma database; the user (and session) are always arguments."""

    def __init__(
        self, path: str | Path | None = None, *, url: str | None = None, embedding: MiniLMEmbedding | None = None
    ) -> None:
        from memory.embeddings import MiniLMEmbedding  # registers it with Chroma, so stored configs rebuild it

        self.location = url or str(Path(path or "").expanduser())  # for error messages
        self.path = None if url else Path(path or "").expanduser()
        self.client = open_client(path, url)
        self.embedding = embedding or MiniLMEmbedding()
        self._collections: dict[str, Collection] = {}

    def _collection(self, name: str) -> Collection:
        if name not in self._collections:
            try:
                self._collections[name] = self.client.get_or_create_collection(
                    name, embedding_function=self.embedding, metadata={"owner": "r1-reasoner"}
                )
            except Exception as err:
                raise MemoryStoreError(
                    f"cannot open collection {name} in the memory store at {self.location}: {err}"
                ) from None
        return self._collections[name]

    def _upsert(self, name: str, ids: list[str], texts: list[str], metadatas: list[dict[str, Any]]) -> None:
        collection = self._collection(name)
        try:
            collection.upsert(ids=ids, documents=texts, metadatas=metadatas)
        except Exception as err:
            raise MemoryStoreError(f"cannot write to the memory store at {self.location}: {err}") from None

    def _get(self, name: str, **query: Any) -> dict[str, Any]:
        """`Collection.get` with Chroma's errors named by the store they came from."""
        collection = self._collection(name)
        try:
            return collection.get(**query)
        except Exception as err:
            raise MemoryStoreError(f"cannot read the memory store at {self.location}: {err}") from None

    def _delete(self, name: str, ids: list[str]) -> None:
        collection = self._collection(name)
        try:
            collection.delete(ids=ids)
        except Exception as err:
            raise MemoryStoreError(f"cannot write to the memory store at {self.location}: {err}") from None

    def _query(self, name: str, text: str, k: int, where: dict[str, Any]) -> list[Hit]:
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        collection = self._collection(name)
        try:
            result = collection.query(
                query_texts=[text], n_results=k, where=where, include=["documents", "metadatas", "distances"]
            )
        except Exception as err:
            raise MemoryStoreError(f"cannot read the memory store at {self.location}: {err}") from None
        return [
            Hit(doc or "", _source_label(name, meta or {}), float(dist), dict(meta or {}))
            for doc, meta, dist in zip(result["documents"][0], result["metadatas"][0], result["distances"][0])
        ]

    # --- documents -------------------------------------------------------------------------

    def add_document(
        self, user: str, path: str | Path, progress: Callable[[int, int], None] | None = None
    ) -> DocumentInfo:
        """Chunk, embed and store one file for `user`; re-adding a changed file replaces its chunks.

        progress(done, total) is called after each committed batch of chunks.
        """
        _check_name("user", user)
        path = Path(path).expanduser().resolve()
        chunks = read_chunks(path)  # raises before anything is written
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        source, added_at = str(path), time.time()
        written: set[str] = set()
        for start in range(0, len(chunks), WRITE_BATCH):
            batch = chunks[start : start + WRITE_BATCH]
            metadatas = []
            for chunk in batch:
                meta: dict[str, Any] = {
                    "user": user,
                    "source": source,
                    "digest": digest,
                    "chunk": chunk.index,
                    "line": chunk.line,
                    "added_at": added_at,
                }
                if chunk.page is not None:
                    meta["page"] = chunk.page
                metadatas.append(meta)
            ids = [_record_id(user, source, digest, chunk.index) for chunk in batch]
            self._upsert(DOCUMENTS, ids, [chunk.text for chunk in batch], metadatas)
            written.update(ids)
            if progress:
                progress(start + len(batch), len(chunks))
        # Only now drop an older version's chunks (another text, or the same text chunked another way): a
        # crash above leaves the old version searchable.
        old = [
            i for i in self._get(DOCUMENTS, where=_where(user, source=source), include=[])["ids"] if i not in written
        ]
        if old:
            self._delete(DOCUMENTS, old)
        return DocumentInfo(source, len(chunks), added_at)

    def search_documents(self, user: str, query: str, k: int = 5) -> list[Hit]:
        return self._query(DOCUMENTS, query, k, _where(user))

    def has_documents(self, user: str) -> bool:
        """Whether `user` stored any document (cheap: no embedding), so a chat turn can skip searching them."""
        return bool(self._get(DOCUMENTS, where=_where(user), limit=1, include=[])["ids"])

    def list_documents(self, user: str) -> list[DocumentInfo]:
        found = self._get(DOCUMENTS, where=_where(user), include=["metadatas"])
        by_source: dict[str, list[Mapping[str, Any]]] = {}
        for meta in found["metadatas"] or []:
            by_source.setdefault(str(meta["source"]), []).append(meta)
        return [
            DocumentInfo(source, len(metas), max(float(m["added_at"]) for m in metas))
            for source, metas in sorted(by_source.items())
        ]

    def forget_document(self, user: str, source: str | Path) -> int:
        """Delete one document's chunks (by its path as given or resolved); returns how many were deleted."""
        candidates = {str(source), str(Path(source).expanduser().resolve())}
        deleted = 0
        for candidate in candidates:
            ids = self._get(DOCUMENTS, where=_where(user, source=candidate), include=[])["ids"]
            if ids:
                self._delete(DOCUMENTS, ids)
                deleted += len(ids)
        return deleted

    # --- conversation turns (evicted from the window) ---------------------------------------

    def add_turns(self, user: str, session: str, turns: Sequence[Mapping[str, Any]], first_index: int) -> int:
        """Store messages that left `session`'s window; turn i gets number first_index + i.

        A turn already stored with the same text is skipped (no embedding), so replaying a conversation
        after a restart only writes what is missing. Returns how many turns were written.
        """
        _check_name("user", user)
        _check_name("session", session)
        ids, texts, metadatas = [], [], []
        for offset, message in enumerate(turns):
            text = _turn_text(message)
            if not text:
                continue
            number = first_index + offset
            ids.append(_record_id(user, session, number))
            texts.append(text)
            metadatas.append(
                {
                    "user": user,
                    "session": session,
                    "turn": number,
                    "role": str(message.get("role", "")),
                    "added_at": time.time(),
                }
            )
        if ids:
            stored = self._get(TURNS, ids=ids, include=["documents"])
            have = dict(zip(stored["ids"], stored["documents"] or []))
            keep = [i for i, record in enumerate(ids) if have.get(record) != texts[i]]
            ids, texts, metadatas = [ids[i] for i in keep], [texts[i] for i in keep], [metadatas[i] for i in keep]
        for start in range(0, len(ids), WRITE_BATCH):
            end = start + WRITE_BATCH
            self._upsert(TURNS, ids[start:end], texts[start:end], metadatas[start:end])
        return len(ids)

    def search_turns(self, user: str, query: str, k: int = 5, session: str | None = None) -> list[Hit]:
        """Earlier turns of `user` most like `query`: of one session, or of all the user's sessions if None."""
        where = _where(user) if session is None else _where(user, session=_check_name("session", session))
        return self._query(TURNS, query, k, where)

    def forget_session(self, user: str, session: str) -> int:
        ids = self._get(TURNS, where=_where(user, session=_check_name("session", session)), include=[])["ids"]
        if ids:
            self._delete(TURNS, ids)
        return len(ids)

    # --- solved problems (the reasoning-path cache) -----------------------------------------

    def add_solved_problem(self, user: str, problem: str, solution: str, answer: str, kind: str = "") -> None:
        """Store a solved problem; `kind` (e.g. "math/mcts") lets a lookup ask only for its own kind."""
        _check_name("problem", problem)
        meta = {
            "user": _check_name("user", user),
            "kind": kind,
            "solution": solution,
            "answer": answer,
            "added_at": time.time(),
        }
        self._upsert(SOLVED, [_record_id(user, kind, problem.strip())], [problem.strip()], [meta])

    def similar_problems(
        self, user: str, problem: str, k: int = 3, max_distance: float = 0.15, kind: str | None = None
    ) -> list[SolvedProblem]:
        """Stored problems within `max_distance` of `problem` (of `kind`, if given), nearest first.
        Candidates only: verify before reuse."""
        where = _where(user) if kind is None else _where(user, kind=kind)
        return [
            SolvedProblem(hit.text, str(hit.metadata["solution"]), str(hit.metadata["answer"]), hit.distance)
            for hit in self._query(SOLVED, problem, k, where)
            if hit.distance <= max_distance
        ]

    # --- whole store ------------------------------------------------------------------------

    def forget_user(self, user: str) -> int:
        """Delete everything stored for `user` in every collection; returns how many records went."""
        deleted = 0
        for name in COLLECTIONS:
            ids = self._get(name, where=_where(user), include=[])["ids"]
            if ids:
                self._delete(name, ids)
                deleted += len(ids)
        return deleted

    def disk_bytes(self) -> int | None:
        """Bytes the on-disk store takes (None for a server)."""
        if self.path is None:
            return None
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())

    def stats(self, user: str | None = None) -> dict[str, int]:
        """Records per collection: of one user, or of everyone if None."""
        counts = {}
        for name in COLLECTIONS:
            if user is None:
                collection = self._collection(name)
                try:
                    counts[name] = collection.count()
                except Exception as err:
                    raise MemoryStoreError(f"cannot read the memory store at {self.location}: {err}") from None
            else:
                counts[name] = len(self._get(name, where=_where(user), include=[])["ids"])
        return counts


def _turn_text(message: Mapping[str, Any]) -> str:
    content = str(message.get("content") or "").strip()
    calls = message.get("tool_calls")
    if calls:
        content = f"{content} [tool calls: {calls}]".strip()
    return f"{message.get('role', 'unknown')}: {content}" if content else ""


def _source_label(collection: str, meta: Mapping[str, Any]) -> str:
    if collection == DOCUMENTS:
        page = f", page {meta['page']}" if "page" in meta else ""
        return f"{meta.get('source')}{page}, chunk {int(meta.get('chunk', 0)) + 1}"
    if collection == TURNS:
        return f"conversation {meta.get('session')}, turn {meta.get('turn')}"
    return "solved problem"


def format_snippets(hits: Iterable[Hit]) -> str:
    """Retrieved records as prompt text, each with its source, so the model (and the user) can cite them."""
    return "\n".join(f"[{hit.source}] {hit.text}" for hit in hits)
