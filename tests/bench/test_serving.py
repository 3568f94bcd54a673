"""bench/serving.py's arithmetic on stream timings (no server, no model)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bench.serving import LoadResult, StreamTiming, single_stream_table


def timing(ttft: float, gaps: list[float], tokens: int, prompt_tokens: int) -> StreamTiming:
    return StreamTiming(0.0, ttft_s=ttft, gaps_s=gaps, tokens=tokens, prompt_tokens=prompt_tokens)


def test_runs_pool_into_one_result():
    result = LoadResult("r1 serve, 2 clients")
    result.add(2.0, [timing(0.5, [0.1] * 3, 4, 128), timing(0.5, [0.1] * 3, 4, 128)])
    result.add(2.0, [timing(1.5, [0.3] * 3, 4, 128), timing(1.5, [0.3] * 3, 4, 128)])
    assert result.tok_s == pytest.approx(16 / 4.0)  # all tokens over the summed walls
    assert result.decode_tok_s == pytest.approx(12 / 2.4)  # tokens after the first over the time after it
    assert result.prefill_tok_s == pytest.approx(512 / 4.0)
    cells = [cell.strip() for cell in result.row().split("|")[1:-1]]
    assert cells == [
        "r1 serve, 2 clients",
        "4.0",
        "1500",
        "1500",
        "300.0",
        "300.0",
    ]  # p50 of an even count: the upper one


def test_single_stream_table_puts_ours_beside_llama_bench():
    servers = [SimpleNamespace(name="r1 serve"), SimpleNamespace(name="llama-server")]
    results = {}
    for name, gap in (("r1 serve", 0.02), ("llama-server", 0.01)):
        results[name, 1] = LoadResult(name)
        results[name, 1].add(1.0, [timing(0.25, [gap] * 10, 11, 128)])
    args = SimpleNamespace(bench_tokens=128)
    lines = single_stream_table(servers, results, {"pp128": 1024.0, "tg128": 100.0}, args)
    assert (
        lines[0]
        == "| single stream | llama-bench | r1 serve, 1 client | llama-server, 1 client | r1 serve / llama-bench |"
    )
    assert lines[2].endswith("| 100.0 | 50.0 | 100.0 | 0.50x |") and lines[3].endswith(
        "| 1024.0 | 512.0 | 512.0 | 0.50x |"
    )
    failed = single_stream_table(servers, results, "exit 1: cannot load model", args)
    assert "llama-bench" not in failed[0] and any("llama-bench not measured: exit 1" in line for line in failed)
