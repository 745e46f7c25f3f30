"""``mode=check``: the reference and a short served run, non-zero when they disagree.

The server is the fake SGLang (a lifecycle test: it proves the recipe computes the reference, holds
the served accept length against it and exits accordingly, never that SGLang serves the draft). The
reference is real: the demo pair's exported draft through ``automodel_spec.reference`` on the CPU.
The demo draft is built to agree with its target, so its reference accepts every draft token, as the
fake does by default; ``FAKE_SGLANG_ACCEPT`` makes the fake accept fewer, as a mis-served draft would.
"""

from __future__ import annotations

import json

import pytest
from test_bench_cli import SERVE, WORKLOAD, output, run_cli

pytest.importorskip("transformers")

CHECK = [*[w for w in WORKLOAD if not w.startswith(("bench.num_prompts", "bench.max_new_tokens", "bench.concurrency"))],
         "bench.num_prompts=2", "bench.max_new_tokens=12", "spec.num_steps=3", "spec.topk=1"]


def test_check_passes_when_served_matches_the_reference(tmp_path, cache):
    out = tmp_path / "out"
    res = run_cli(SERVE, "mode=check", *CHECK, f"hydra.run.dir={out}", cwd=tmp_path / "cwd", cache=cache, timeout=300)
    assert res.returncode == 0, output(res)
    assert "check passed: served as trained (served 4.00, reference 4.00)" in res.stdout
    assert "identical to the no-speculation baseline's 2/2" in res.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["reference"]["status"] == "ok" and m["reference"]["problems"] == []
    assert m["reference"]["aux_layers"] == [2, 4, 5]  # SGLang's default capture for 8 target layers
    assert set(m["levels"]) == {"T0_c1"}  # greedy, one request at a time, whatever bench.* says
    assert m["levels"]["T0_c1"]["served_as_trained"] is True


def test_check_fails_when_the_server_accepts_less_than_the_reference(tmp_path, cache):
    out = tmp_path / "out"
    res = run_cli(SERVE, "mode=check", *CHECK, f"hydra.run.dir={out}", cwd=tmp_path / "cwd", cache=cache,
                  env={"FAKE_SGLANG_ACCEPT": "0.2"}, timeout=300)
    assert res.returncode == 1, output(res)
    assert "check FAILED" in res.stderr and "below the reference 4.00" in res.stderr
    assert "aux layer ids" in res.stderr and "num_hidden_layers" in res.stderr  # what to check first
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "ok" and m["levels"]["T0_c1"]["served_as_trained"] is False


def test_check_of_an_algorithm_without_a_draft_is_refused(tmp_path, cache):
    res = run_cli(SERVE, "mode=check", "algorithm=none", *CHECK, f"hydra.run.dir={tmp_path / 'out'}",
                  cwd=tmp_path / "cwd", cache=cache)
    assert res.returncode != 0 and "mode=check holds an EAGLE draft against its reference" in output(res)
