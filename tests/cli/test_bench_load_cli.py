"""``mode=bench`` under the loads users serve, as a user runs it (subprocesses, the fake server): open-loop
request rates with service-level goals, and one load that changes in phases on one server."""

from __future__ import annotations

import json
import re

from test_bench_cli import SERVE, WORKLOAD, metrics, output, run_cli

SPEC = ["spec.num_steps=3", "spec.topk=1", "bench.baseline=false"]


def records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]


def test_a_request_rate_level_beside_a_concurrency_level_with_goals(tmp_path, cache):
    out = tmp_path / "out"
    res = run_cli(SERVE, "mode=bench", *WORKLOAD, *SPEC, "bench.concurrency=[1]", "bench.request_rate=[50]",
                  "bench.num_prompts=6", "bench.max_concurrency=4", "bench.slo.ttft_s=5", "bench.slo.itl_s=5",
                  f"hydra.run.dir={out}", cwd=tmp_path / "cwd", cache=cache)
    assert res.returncode == 0, output(res)
    assert re.search(r"T=0 rate=50/s c<=4: [0-9.]+ tok/s accept 4\.00 ttft [0-9.]+/[0-9.]+/[0-9.]+ms .* achieved [0-9.]+/s "
                     r"goodput [0-9.]+/s goals met", res.stdout), res.stdout
    m = metrics(out)
    assert list(m["levels"]) == ["T0_c1", "T0_r50_c4"]
    rate = m["levels"]["T0_r50_c4"]
    assert rate["request_rate"] == 50.0 and rate["concurrency"] == 4 and rate["requests"] == 6
    assert rate["streamed"] and rate["ttft_p99_s"] > 0 and rate["saturated"] is False
    assert rate["achieved_rate_rps"] > 0 and rate["throughput_rps"] > 0
    for lv in m["levels"].values():  # goals of 5 s: every request within them
        assert lv["good_requests"] == lv["requests"] and lv["slo_met"] is True and lv["slo_missed"] == []
        assert lv["goodput_rps"] == lv["requests"] / lv["wall_s"]
    sent = [r for r in records(out) if r.get("request_rate") == 50.0]
    assert len(sent) == 6 and all(r["send_s"] >= r["scheduled_s"] for r in sent)


def test_a_phased_load_runs_on_one_server_phase_after_phase(tmp_path, cache):
    out = tmp_path / "out"
    res = run_cli(SERVE, "mode=bench", *WORKLOAD, *SPEC, "bench.num_prompts=4", "bench.phases=[c1,c4,r40,c1]",
                  "bench.slo.tpot_s=5", f"hydra.run.dir={out}", cwd=tmp_path / "cwd", cache=cache)
    assert res.returncode == 0, output(res)
    log = (out / "server.log").read_text()
    assert log.count("fired up") == 1 and log.count("POST /flush_cache") == 1  # no restart, no flush between
    m = metrics(out)
    assert list(m["levels"]) == ["T0_p1_c1", "T0_p2_c4", "T0_p3_r40", "T0_p4_c1", "T0_phased"]
    phases = [m["levels"][k] for k in list(m["levels"])[:4]]
    assert [p["phase"] for p in phases] == [1, 2, 3, 4] and [p["phase_load"] for p in phases] == ["c1", "c4", "r40", "c1"]
    assert [p["requests"] for p in phases] == [4, 8, 4, 4]  # a closed loop at least twice its concurrency
    whole = m["levels"]["T0_phased"]
    assert whole["phase"] == 0 and whole["phase_load"] == "c1 -> c4 -> r40 -> c1" and whole["requests"] == 20
    assert whole["wall_s"] >= sum(p["wall_s"] for p in phases) and whole["streamed"] and whole["slo_met"] is True
    # the server's running accept length spans the phases (no flush between them): the whole run's only
    assert whole["server_accept_length"] == 4.0 and all(p["server_accept_length"] is None for p in phases)
    assert "T=0 phase 3 r40:" in res.stdout and "T=0 phased c1 -> c4 -> r40 -> c1:" in res.stdout
    # the phases are separated: each starts after the previous one's last answer
    recs = records(out)
    for k in (1, 2, 3):
        ended = max(r["run_s"] + r["latency_s"] for r in recs if r["phase"] == k)
        assert ended <= min(r["run_s"] for r in recs if r["phase"] == k + 1)
