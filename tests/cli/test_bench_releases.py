"""The benchmark reads every SGLang release's responses right (the fake server answering as each release does)."""

from __future__ import annotations

import logging
import uuid

import pytest
from helpers import run_recipe
from packaging.version import Version
from test_bench_cli import SERVE, TAG_VAR, WORKLOAD, assert_nothing_left, metrics, output, run_cli

from automodel_spec.config.sglang_options import known_releases

# the quick run: the oldest shape (the old histogram name only, the old flags) and the newest; -m slow: all of them
QUICK = {"0.5.11", "0.5.23"}


@pytest.mark.parametrize("release", [pytest.param(r, marks=() if r in QUICK else pytest.mark.slow)
                                     for r in known_releases()])
def test_a_bench_point_reads_the_release_it_runs_on(tmp_path, cache, release, monkeypatch, caplog):
    """In this process (the recipe's job on the composed config): what is tested is how the job reads each
    release's answers, not the command line, so the interpreter is not started again for each release."""
    out = tmp_path / "out"
    tag = uuid.uuid4().hex  # the fake server and its children inherit it: none may be left afterwards
    for name, value in {"AUTOMODEL_SPEC_CACHE": str(cache), "FAKE_SGLANG_RELEASE": release, TAG_VAR: tag}.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.INFO, logger="automodel_spec")
    # sglang=throughput passes cuda_graph_max_bs: the flag 0.5.20+ would refuse as an ambiguous prefix
    try:
        code = run_recipe("serve", "mode=bench", "sglang=throughput", *WORKLOAD, "spec.num_steps=3", "spec.topk=1",
                          "bench.baseline=false", output_dir=out)
    finally:
        assert_nothing_left(tag)
    assert code == 0, caplog.text
    assert f"SGLang release: {release} (installed; {release} installed)" in caplog.text
    log = (out / "server.log").read_text()
    flag = "--cuda-graph-max-bs-decode" if Version(release) >= Version("0.5.14") else "--cuda-graph-max-bs"
    assert f" {flag} 64 " in log and "error:" not in log
    m = metrics(out)
    assert m["status"] == "ok" and m["effective"]["num_steps"] == 3
    assert m["server_settings"][flag.removeprefix("--").replace("-", "_")] == 64  # /server_info's name for it
    for lv in m["levels"].values():
        assert lv["accept_length"] == pytest.approx(4.0) and lv["failed_requests"] == 0
        # the server's own average, reset by /flush_cache before each level
        assert lv["server_accept_length"] == pytest.approx(4.0)
        # read under the release's own histogram name
        assert lv["accept_histogram"] == [0, 0, 0, 16] and lv["histogram_requests"] == 4
        # streamed (docs/sglang-releases.md, "Streaming /generate"): a verify round's 4 tokens a chunk
        assert lv["streamed"] and lv["ttft_p50_s"] > 0 and lv["itl_token_p50_s"] < lv["itl_p50_s"]


def test_an_extra_arg_the_release_removed_is_warned_about_and_the_server_exits(tmp_path, cache):
    out = tmp_path / "out"
    res = run_cli(SERVE, *WORKLOAD[:4], "algorithm=none", "sglang.extra_args=[--speculative-skip-dp-mlp-sync]",
                  f"hydra.run.dir={out}", cwd=tmp_path / "cwd", cache=cache, env={"FAKE_SGLANG_RELEASE": "0.5.23"})
    assert res.returncode != 0
    assert "WARNING: sglang.extra_args: --speculative-skip-dp-mlp-sync is not an option of SGLang 0.5.23" in output(res)
    assert "error: --speculative-skip-dp-mlp-sync is not an option" in (out / "server.log").read_text()
