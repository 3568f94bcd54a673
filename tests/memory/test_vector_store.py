"""The vector store on real Chroma on disk: sources, isolation, persistence, crashes, bad stores, no default EF."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import chromadb
import pytest

from memory.vector_store import COLLECTIONS, TURNS, MemoryStoreError, VectorStore, format_snippets

ROOT = Path(__file__).resolve().parents[2]


def run_worker(action: str, path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.memory._workers", action, str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def write_doc(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_document_search_returns_the_right_chunk_with_its_source(store, tmp_path):
    paragraphs = [
        "# Travel\n\nThe team offsite is in Lisbon in May.",
        "# Budget\n\nThe marketing budget for next year is 40,000 euros.",
        "# Pets\n\nOur office dog is a beagle named Biscuit.",
    ]
    path = write_doc(tmp_path, "handbook.md", "\n\n".join(paragraphs))
    info = store.add_document("alice", path)
    assert info.chunks == 3 and info.source == str(path.resolve())
    hit = store.search_documents("alice", "what breed is the office dog?", k=1)[0]
    assert "beagle" in hit.text
    assert hit.source == f"{path.resolve()}, chunk 3"
    assert f"[{hit.source}] " in format_snippets([hit])
    assert [d.source for d in store.list_documents("alice")] == [str(path.resolve())]


def test_re_adding_a_changed_document_replaces_its_chunks(store, tmp_path):
    path = write_doc(tmp_path, "plan.txt", "The deadline is Friday.")
    store.add_document("alice", path)
    path.write_text("The deadline moved to Monday.\n\nA second paragraph about lunch.")
    store.add_document("alice", path)
    texts = [h.text for h in store.search_documents("alice", "deadline", k=10)]
    assert any("Monday" in t for t in texts) and not any("Friday" in t for t in texts)
    assert store.list_documents("alice")[0].chunks == 1  # both paragraphs fit one chunk
    assert store.forget_document("alice", str(path)) == 1
    assert store.list_documents("alice") == []


def test_users_and_sessions_are_isolated(store, tmp_path):
    store.add_document("alice", write_doc(tmp_path, "a.md", "Alice's salary is 91,000."))
    store.add_document("bob", write_doc(tmp_path, "b.md", "Bob's salary is 55,000."))
    store.add_turns("alice", "s1", [{"role": "user", "content": "My cat is called Miso."}], 0)
    store.add_turns("alice", "s2", [{"role": "user", "content": "My cat is called Tofu."}], 0)
    store.add_turns("bob", "s1", [{"role": "user", "content": "My cat is called Pixel."}], 0)
    store.add_solved_problem("bob", "What is 6 * 7?", "6 * 7 = 42", "42")

    assert [h.metadata["user"] for h in store.search_documents("alice", "salary", k=10)] == ["alice"]
    assert {h.text for h in store.search_turns("alice", "cat name", k=10)} == {
        "user: My cat is called Miso.",
        "user: My cat is called Tofu.",
    }
    assert [h.text for h in store.search_turns("alice", "cat name", k=10, session="s2")] == [
        "user: My cat is called Tofu."
    ]
    assert [h.text for h in store.search_turns("bob", "cat name", k=10)] == ["user: My cat is called Pixel."]
    assert store.similar_problems("alice", "What is 6 * 7?") == []
    assert store.similar_problems("bob", "What is 6 * 7?")[0].answer == "42"

    assert store.forget_session("alice", "s1") == 1
    assert store.forget_user("alice") == 2  # the document chunk and the s2 turn
    assert store.stats("alice") == dict.fromkeys(COLLECTIONS, 0)
    assert store.stats("bob") == {"r1_documents": 1, "r1_turns": 1, "r1_solved_problems": 1}
    with pytest.raises(ValueError, match="user must be a non-empty string"):
        store.search_documents("", "salary")


def test_similar_problems_are_candidates_within_a_distance(store):
    store.add_solved_problem(
        "alice", "A train travels 60 km in 1.5 hours. What is its speed?", "60 / 1.5 = 40", "40 km/h"
    )
    near = store.similar_problems("alice", "A train goes 60 km in 1.5 hours. What is its average speed?")
    assert [p.answer for p in near] == ["40 km/h"] and 0 < near[0].distance <= 0.15
    assert store.similar_problems("alice", "How many legs does a spider have?") == []


def test_persists_across_processes(tmp_path):
    path = tmp_path / "chroma"
    writer = run_worker("write", path)
    assert writer.wait(timeout=120) == 0, writer.stderr.read()
    reader = run_worker("read", path)
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {"turn": "user: My locker code is 4471.", "answer": "51"}


def test_sigkill_while_writing_loses_nothing_committed(tmp_path, embedding):
    path = tmp_path / "chroma"
    writer = run_worker("write-forever", path)
    committed = -1
    try:
        for line in writer.stdout:
            committed = int(line)
            if committed >= 15:
                break  # kill at once: the worker is in the middle of its next write
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
    assert committed >= 15, writer.stderr.read()

    store = VectorStore(path, embedding=embedding)
    turns = store.client.get_collection(TURNS, embedding_function=embedding).get(include=["metadatas"])
    numbers = {m["turn"] for m in turns["metadatas"]}
    assert set(range(committed + 1)) <= numbers
    hit = store.search_turns("alice", f"fact number {committed}", k=1)[0]
    assert hit.text == f"user: fact number {committed} is {committed * 7}"
    store.add_turns("alice", "s1", [{"role": "user", "content": "written after the crash"}], 1000)
    assert store.search_turns("alice", "written after the crash", k=1)[0].metadata["turn"] == 1000


def test_corrupt_store_is_a_clear_error_and_is_left_untouched(tmp_path):
    path = tmp_path / "chroma"
    path.mkdir()
    garbage = b"this is not an sqlite database" * 100
    (path / "chroma.sqlite3").write_bytes(garbage)
    with pytest.raises(MemoryStoreError, match=f"cannot open the memory store at {path}"):
        VectorStore(path).stats()
    assert (path / "chroma.sqlite3").read_bytes() == garbage
    assert sorted(p.name for p in path.iterdir()) == ["chroma.sqlite3"]


def test_unwritable_store_location_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    with pytest.raises(MemoryStoreError, match="it is a file, not a directory"):
        VectorStore(blocker)
    with pytest.raises(MemoryStoreError, match="cannot create the memory store"):
        VectorStore(blocker / "chroma")
    assert blocker.read_text() == "keep me"


def test_bad_document_leaves_the_store_as_it_was(store, tmp_path):
    store.add_document("alice", write_doc(tmp_path, "good.md", "Keep this fact: the wifi password is hunter2."))
    before = store.stats()
    with pytest.raises(ValueError, match="unsupported file type"):
        store.add_document("alice", write_doc(tmp_path, "bad.exe", "MZ"))
    assert store.stats() == before
    assert "hunter2" in store.search_documents("alice", "wifi password", k=1)[0].text


def test_no_path_reaches_chromas_default_embedding_function(tmp_path, embedding, default_embedding_trap):
    path = tmp_path / "chroma"
    store = VectorStore(path, embedding=embedding)
    doc = write_doc(tmp_path, "doc.md", "# A\n\nalpha\n\n# B\n\nbeta")
    store.add_document("u", doc, progress=lambda done, total: None)
    store.search_documents("u", "alpha")
    store.list_documents("u")
    store.add_turns("u", "s", [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], 0)
    store.search_turns("u", "hi")
    store.search_turns("u", "hi", session="s")
    store.add_solved_problem("u", "1 + 1?", "2", "2")
    store.similar_problems("u", "1 + 1?")
    store.stats()
    store.stats("u")
    store.forget_session("u", "s")
    store.forget_document("u", doc)
    store.forget_user("u")
    # A fresh store on the same files, and a bare Chroma client that names no embedding function:
    # the collection's stored config rebuilds ours (registered by name), never the default.
    reopened = VectorStore(path)
    reopened.add_turns("u", "s", [{"role": "user", "content": "again"}], 5)
    assert reopened.search_turns("u", "again", k=1)[0].text == "user: again"
    bare = chromadb.PersistentClient(path=str(path), settings=reopened.client.get_settings())
    collection = bare.get_collection(TURNS)
    assert collection.query(query_texts=["again"], n_results=1)["documents"][0] == ["user: again"]


@pytest.mark.slow
def test_chroma_url_setting_against_a_real_chroma_server(tmp_path, embedding):
    """`chroma run` on 127.0.0.1, started and stopped here; reached through the setting (Settings.chroma_url,
    as R1_CHROMA_URL and --chroma-url set it) by the app and by `r1 memory`."""
    from app.config import Settings
    from app.memory import open_vector_store
    from tests.ui.test_cli import run_r1

    chroma = shutil.which("chroma", path=str(Path(sys.executable).parent))
    assert chroma, "the chroma CLI ships with the chromadb package and belongs beside this python"
    import socket
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [chroma, "run", "--path", str(tmp_path / "server"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        settings = Settings.from_env({"R1_CHROMA_URL": url, "R1_DATA_DIR": str(tmp_path / "unused")})
        deadline = time.monotonic() + 60
        while True:
            try:
                store = open_vector_store(settings)
                store.client.heartbeat()
                break
            except MemoryStoreError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.5)
        store.embedding = embedding  # the session's MiniLM: same model, loaded once
        store.add_document("alice", write_doc(tmp_path, "a.md", "The server-side secret is OCTOPUS."))
        store.add_turns("bob", "s1", [{"role": "user", "content": "Bob's secret is SQUID."}], 0)
        assert "OCTOPUS" in store.search_documents("alice", "secret", k=1)[0].text
        assert store.search_documents("bob", "secret") == []
        assert store.search_turns("alice", "secret") == []
        assert store.stats() == {"r1_documents": 1, "r1_turns": 1, "r1_solved_problems": 0}
        assert (tmp_path / "server" / "chroma.sqlite3").is_file()  # the data went to the server's store
        assert not (tmp_path / "unused").exists()  # and nothing to the local data directory

        out = run_r1(
            "memory", "stats", "--chroma-url", url, "--user", "alice", env={"R1_DATA_DIR": str(tmp_path / "unused")}
        )
        assert out.returncode == 0, out.stderr
        assert f"store: {url}" in out.stdout and "r1_documents\t1 (alice)\t1 (all users)" in out.stdout
        assert "size on disk" not in out.stdout
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    out = run_r1("memory", "stats", "--chroma-url", url)  # the server is gone: a clear one-line error
    assert out.returncode == 2 and out.stderr.startswith(f"r1: error: cannot reach the Chroma server at {url}")
