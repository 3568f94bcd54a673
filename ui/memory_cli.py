"""`r1 memory ...`: the user's documents and remembered conversations in the vector store (tier 3)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from app import Settings

if TYPE_CHECKING:
    from app.memory import Match


def add_store_flags(parser: argparse.ArgumentParser, *, window: bool = False) -> argparse._ArgumentGroup:
    """--data-dir, --chroma-path, --chroma-url (and with `window`, --memory-window-tokens) in their own group."""
    group = parser.add_argument_group("memory and data (defaults from R1_* environment variables)")
    group.add_argument("--data-dir", help="all persistent state (default: $R1_DATA_DIR or ~/.local/share/r1-reasoner)")
    group.add_argument("--chroma-path", help="the on-disk vector store (default: <data dir>/chroma)")
    group.add_argument("--chroma-url", help="use the Chroma server at http://host:port instead")
    if window:
        group.add_argument(
            "--memory-window-tokens",
            type=int,
            help="the conversation window in tokens (default: the model's context less the answer "
            "and the recalled snippets); older turns move to the vector store",
        )
    return group


def add_memory_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    memory = sub.add_parser("memory", parents=[common], help="add, search, list and forget what r1 remembers")
    store = argparse.ArgumentParser(add_help=False)
    add_store_flags(store).add_argument("--user", default=None, help="whose memory (default: the local user)")
    actions = memory.add_subparsers(dest="memory_command", required=True)

    add = actions.add_parser("add", parents=[common, store], help="add text, Markdown or PDF files")
    add.add_argument("files", nargs="+", metavar="FILE")
    search = actions.add_parser("search", parents=[common, store], help="documents and past turns most like TEXT")
    search.add_argument("text", metavar="TEXT")
    search.add_argument("-k", type=int, default=5, help="how many results (default 5)")
    search.add_argument("--in", dest="where", choices=["documents", "conversations", "all"], default="all")
    search.add_argument(
        "--json",
        action="store_true",
        help="one JSON array: per hit its source, position, distance, matching sentences and text",
    )
    actions.add_parser("list", parents=[common, store], help="the documents stored, with their chunk counts")
    forget = actions.add_parser(
        "forget", parents=[common, store], help="delete documents, a conversation, or everything"
    )
    what = forget.add_mutually_exclusive_group(required=True)
    what.add_argument("files", nargs="*", default=[], metavar="FILE")
    what.add_argument("--session", help="forget one conversation's turns")
    what.add_argument("--everything", action="store_true", help="forget all of this user's memory")
    actions.add_parser("stats", parents=[common, store], help="where the store is, its size, records per collection")


def cmd_memory(args: argparse.Namespace) -> int:
    from app.memory import LOCAL_USER, MemoryStoreError, open_vector_store  # chromadb only for this command

    settings = Settings.from_env().override(
        data_dir=args.data_dir, chroma_path=args.chroma_path, chroma_url=args.chroma_url
    )
    user = args.user or LOCAL_USER
    try:
        store = open_vector_store(settings)
        return _ACTIONS[args.memory_command](store, user, args)
    except MemoryStoreError as err:
        print(f"r1: error: {err}", file=sys.stderr)
        return 2


def _add(store, user: str, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    failed = 0
    for name in args.files:
        with tqdm(desc=name, unit="chunk", file=sys.stderr, leave=False, disable=None) as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            try:
                info = store.add_document(user, name, progress)
            except (ValueError, FileNotFoundError) as err:
                bar.close()
                print(f"r1: error: {err}", file=sys.stderr)
                failed += 1
                continue
        print(f"added {info.source} ({info.chunks} chunks)")
    return 2 if failed else 0


def _search(store, user: str, args: argparse.Namespace) -> int:
    """Each hit's sentences that best match TEXT, with where they stand; the whole record only in --json."""
    import json

    from app.memory import best_sentences

    if args.k <= 0:
        print(f"r1: error: -k must be positive, got {args.k}", file=sys.stderr)
        return 2
    hits = []
    if args.where in ("documents", "all"):
        hits += store.search_documents(user, args.text, args.k)
    if args.where in ("conversations", "all"):
        hits += store.search_turns(user, args.text, args.k)
    matches = best_sentences(store.embedding, args.text, sorted(hits, key=lambda hit: hit.distance)[: args.k])
    if args.json:
        print(json.dumps([_as_json(match) for match in matches], ensure_ascii=False, indent=1))
        return 0
    if not matches:
        print("(nothing found)", file=sys.stderr)
    for match in matches:
        print(f"[{match.position}] ({match.hit.distance:.3f}) {match.text}")
    return 0


def _as_json(match: Match) -> dict[str, Any]:
    meta = match.hit.metadata
    return {
        "source": meta.get("source") or match.hit.source,
        "position": match.position,
        "kind": "document" if "chunk" in meta else "conversation",
        "page": meta.get("page"),
        "chunk": int(meta["chunk"]) + 1 if "chunk" in meta else None,
        "session": meta.get("session"),
        "turn": meta.get("turn"),
        "distance": round(match.hit.distance, 4),
        "matches": [{"sentence": s.text, "line": s.line, "score": round(s.score, 4)} for s in match.sentences],
        "text": match.hit.text,
    }


def _list(store, user: str, args: argparse.Namespace) -> int:
    documents = store.list_documents(user)
    if not documents:
        print("(no documents)", file=sys.stderr)
    for document in documents:
        print(f"{document.source}\t{document.chunks} chunks")
    return 0


def _forget(store, user: str, args: argparse.Namespace) -> int:
    if args.everything:
        print(f"forgot {store.forget_user(user)} records")
        return 0
    if args.session:
        print(f"forgot {store.forget_session(user, args.session)} turns of conversation {args.session}")
        return 0
    missing = 0
    for name in args.files:
        deleted = store.forget_document(user, name)
        if deleted:
            print(f"forgot {name} ({deleted} chunks)")
        else:
            print(f"r1: error: {name} is not in memory (see r1 memory list)", file=sys.stderr)
            missing += 1
    return 2 if missing else 0


def _stats(store, user: str, args: argparse.Namespace) -> int:
    from app.memory import memory_stats

    stats = memory_stats(store, user)
    print(f"store: {stats.location}")
    if stats.disk_bytes is not None:
        print(f"size on disk: {stats.disk_bytes / (1 << 20):.1f} MiB")
    print(f"documents: {stats.documents} ({user})")
    for name, count in stats.all_records.items():
        print(f"{name}\t{stats.records[name]} ({user})\t{count} (all users)")
    return 0


_ACTIONS = {"add": _add, "search": _search, "list": _list, "forget": _forget, "stats": _stats}
