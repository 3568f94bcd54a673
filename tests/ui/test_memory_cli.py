"""`r1 memory ...` as a user runs it: add with progress, search with sources, list, forget, stats, clear errors;
and `r1 chat` recalling what left its window."""

from __future__ import annotations

import json

import pytest

from tests.ui.test_cli import run_r1


@pytest.mark.slow  # ten r1 processes, most of which load MiniLM
def test_memory_commands_end_to_end(tmp_path):
    env = {"R1_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1"}
    notes = tmp_path / "notes.md"
    notes.write_text(
        "# Garden\n\nThe tomatoes are planted along the south fence.\n\n# Car\n\nThe car is due for service in March."
    )
    out = run_r1("memory", "add", str(notes), str(tmp_path / "missing.txt"), env=env)
    assert out.returncode == 2  # one file failed; the other was still added
    assert f"added {notes} (2 chunks)" in out.stdout
    assert "r1: error:" in out.stderr and "missing.txt: no such file" in out.stderr and "Traceback" not in out.stderr

    out = run_r1("memory", "search", "when does the car need servicing", "-k", "1", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"[{notes}, line 7] (") and out.stdout.endswith(
        ") The car is due for service in March.\n"
    )

    # A short fact right after a long unrelated paragraph: found, and it is the sentence shown.
    cabin = tmp_path / "cabin.md"
    prose = (
        "Grace bought 3 bags of apples at the market, each holding 12 apples. She gave a third of them to her "
        "neighbour. Then she baked two pies that each used 7 apples. She sold the rest at 50 cents each. "
    ) * 3
    cabin.write_text(f"# Cabin\n\n{prose}\n\nThe wifi password at the cabin is heron-1182.\n\n{prose}")
    assert run_r1("memory", "add", str(cabin), env=env).returncode == 0
    out = run_r1(
        "memory", "search", "What do I type to get the cabin's internet working?", "-k", "2", "--json", env=env
    )
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert len(found) == 2 and found[0]["source"] == str(cabin) and found[0]["kind"] == "document"
    assert set(found[0]) == {
        "source",
        "position",
        "kind",
        "page",
        "chunk",
        "session",
        "turn",
        "distance",
        "matches",
        "text",
    }
    assert found[0]["matches"][0] == {
        "sentence": "The wifi password at the cabin is heron-1182.",
        "line": 5,
        "score": found[0]["matches"][0]["score"],
    }
    assert found[0]["position"] == f"{cabin}, line 5" and found[0]["distance"] <= found[1]["distance"]
    assert 0 < found[0]["matches"][0]["score"] <= 1 and found[0]["page"] is None and found[0]["turn"] is None
    assert run_r1("memory", "forget", str(cabin), env=env).returncode == 0

    assert run_r1("memory", "list", env=env).stdout == f"{notes}\t2 chunks\n"
    out = run_r1("memory", "search", "car", "--user", "someone-else", env=env)
    assert out.returncode == 0 and out.stdout == ""  # another user's memory is empty

    stats = run_r1("memory", "stats", env=env).stdout
    assert f"store: {tmp_path / 'data' / 'chroma'}" in stats and "r1_documents\t2 (local)\t2 (all users)" in stats
    assert "documents: 1 (local)" in stats and "size on disk: " in stats

    out = run_r1("memory", "forget", str(notes), env=env)
    assert out.returncode == 0 and "forgot" in out.stdout and "(2 chunks)" in out.stdout
    assert run_r1("memory", "list", env=env).stdout == ""


def test_memory_store_errors_are_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = run_r1("memory", "stats", "--chroma-path", str(blocker))
    assert out.returncode == 2
    assert out.stderr.strip() == f"r1: error: cannot open the memory store at {blocker}: it is a file, not a directory"
    out = run_r1("memory", "stats", "--chroma-url", "ftp://nowhere")
    assert out.returncode == 2 and "chroma url must look like http://host:port" in out.stderr
    out = run_r1("memory", "search", "car", "-k", "0", "--chroma-path", str(tmp_path / "chroma"))
    assert out.returncode == 2 and out.stderr.strip() == "r1: error: -k must be positive, got 0"


def test_memory_help():
    out = run_r1("memory", "--help")
    assert out.returncode == 0
    for action in ("add", "search", "list", "forget", "stats"):
        assert action in out.stdout


@pytest.mark.slow  # the default model, three r1 processes
def test_terminal_chat_recalls_what_left_its_window_also_after_a_restart(tmp_path):
    env = {"R1_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1"}
    chat = ("chat", "--max-new-tokens", "6", "--memory-window-tokens", "120")
    questions = [
        "Please remember: my locker code is 4471.",
        "Why is the sky blue?",
        "How do I fix a squeaky door?",
        "What causes thunder?",
        "What is my locker code?",
    ]
    out = run_r1(*chat, stdin="\n".join(questions) + "\n", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("r1> ") == 5 and "Conversation 1." in out.stderr
    recalled = [line for line in out.stderr.splitlines() if line.startswith("(recalled: ")]
    assert len(recalled) == 1 and recalled[0].startswith("(recalled: conversation chat-1-") and "turn 0" in recalled[0]

    found = run_r1("memory", "search", "locker code", "--in", "conversations", "-k", "1", env=env)
    assert "turn 0] (" in found.stdout and "my locker code is 4471" in found.stdout

    again = run_r1(*chat, "--conversation", "1", stdin="Tell me my locker code again.\n", env=env)
    assert again.returncode == 0, again.stderr  # the window was rebuilt from the stored conversation
    assert "(recalled: conversation chat-1-" in again.stderr and "turn 0" in again.stderr
    missing = run_r1(*chat, "--conversation", "99", env=env)
    assert missing.returncode == 2 and "no conversation with id 99" in missing.stderr
