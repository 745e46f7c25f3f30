"""The flag table against the options each SGLang release's own parser holds (recorded in data/sglang_options.json)."""

from __future__ import annotations

import pytest
from packaging.version import Version

from automodel_spec.config.rules import managed_extra_args
from automodel_spec.config.schema import AlgorithmConfig, SGLangConfig, SpecConfig
from automodel_spec.config.sglang_options import (
    MANAGED_FLAGS,
    OPTIONS,
    applicable_release,
    known_releases,
    option_problems,
    release_facts,
    release_options,
    spelling,
)
from automodel_spec.serve.command import DraftArgs, build_launch_command

RELEASES = known_releases()


def test_every_release_from_0_5_9_to_0_5_23_is_recorded():
    assert RELEASES == [f"0.5.{i}" for i in range(9, 24)]
    assert all(len(release_options(r)) > 300 for r in RELEASES)


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.key)
def test_each_spelling_exists_exactly_where_the_table_says(option):
    for s in option.spellings:
        covered = [r for r in RELEASES if s.covers(r)]
        assert covered, f"{option.key}: {s} covers no known release"
        if s.flag is None:
            continue
        missing = [r for r in covered if s.flag not in release_options(r)]
        assert not missing, f"{option.key}: {s.flag} is not an option of {missing}"
        before = [r for r in RELEASES if Version(r) < Version(s.since)]
        if before:  # a spelling starts with the first release that has it, not later
            assert s.flag not in release_options(before[-1]), f"{s.flag} exists before {s.since}"
    for alias in option.aliases:
        assert any(alias in release_options(r) for r in RELEASES), f"{alias} is no release's option"


def test_the_cuda_graph_flag_follows_each_release():
    assert [spelling("sglang.cuda_graph_max_bs", r) for r in ("0.5.9", "0.5.13", "0.5.14", "0.5.19", "0.5.23")] == \
        ["--cuda-graph-max-bs"] * 2 + ["--cuda-graph-max-bs-decode"] * 3
    assert "--cuda-graph-max-bs" not in release_options("0.5.20")  # removed: argparse would call it ambiguous


def test_an_option_that_prefixes_two_is_ambiguous_and_an_exact_one_is_not():
    assert option_problems(["--cuda-graph-max-bs", "8"], "0.5.17") == []
    (problem,) = option_problems(["--cuda-graph-max-bs", "8"], "0.5.23")
    assert "ambiguous prefix" in problem and "--cuda-graph-max-bs-decode" in problem and "0.5.23" in problem
    assert "is not an option of SGLang 0.5.23" in option_problems(["--weird=1"], "0.5.23")[0]
    assert option_problems(["--speculative-skip-dp-mlp-sync"], "0.5.22") == []
    assert option_problems(["--speculative-skip-dp-mlp-sync"], "0.5.23")  # removed in 0.5.23
    assert option_problems(["--mem-fraction", "0.5"], "0.5.23") == []  # a unique prefix: argparse takes it


def test_the_extra_args_guard_and_the_builder_read_the_same_table():
    sg = SGLangConfig(tp_size=2, dtype="bfloat16", mem_fraction_static=0.5, attention_backend="triton",
                      cuda_graph_max_bs=8, cuda_graph_bs=[1, 8], max_running_requests=8, context_length=512,
                      log_level="info", api_key="k", nnodes=2, node_rank=0, dist_init_addr="10.0.0.1:5000",
                      disable_cuda_graph=True, disable_prefill_cuda_graph=True, skip_tokenizer_init=True,
                      trust_remote_code=True)
    eagle = AlgorithmConfig(name="EAGLE", architecture="LlamaForCausalLMEagle", uses_token_map=True)
    draft = DraftArgs(path="/d", revision="r", token_map="/d/map.pt")
    for release in RELEASES:
        for spec in (SpecConfig(3, 1, 4), SpecConfig(adaptive=True, adaptive_config="/a.json")):
            if spec.adaptive and Version(release) < Version("0.5.11"):
                continue
            argv = build_launch_command("/m", sg, eagle, spec, draft, release=release, target_revision="main")
            flags = [a for a in argv if a.startswith("--")]
            assert flags and all(f in MANAGED_FLAGS for f in flags), [f for f in flags if f not in MANAGED_FLAGS]
            assert all(f in release_options(release) for f in flags)
    # every spelling of every release is guarded, not only the newest
    assert dict(managed_extra_args(["--cuda-graph-max-bs", "--cuda-graph-max-bs-decode=4", "--model"])) == {
        "--cuda-graph-max-bs": "sglang.cuda_graph_max_bs", "--cuda-graph-max-bs-decode": "sglang.cuda_graph_max_bs",
        "--model": "target.path"}


@pytest.mark.parametrize(("version", "expected"), [
    ("0.5.9", ("0.5.9", False)), ("0.5.17.post1", ("0.5.17", False)), ("0.5.23rc1", ("0.5.23", False)),
    ("0.5.24", ("0.5.23", True)), ("0.6.0", ("0.5.23", True)),
])
def test_a_version_maps_to_the_known_release_whose_options_it_has(version, expected):
    assert applicable_release(version) == expected


@pytest.mark.parametrize("bad", ["0.5.8", "latest", ""])
def test_a_version_this_tool_cannot_build_for_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="oldest release|not a release number"):
        applicable_release(bad)


def test_the_recorded_behaviours_the_benchmark_depends_on():
    facts = {r: release_facts(r) for r in RELEASES}
    assert all("/health_generate" in f["endpoints"] and "/server_info" in f["endpoints"] for f in facts.values())
    assert [r for r in RELEASES if "/ready" in facts[r]["endpoints"]][0] == "0.5.20"
    assert all(f["accept_counters_reset"]["flush_cache"] for f in facts.values())  # the bench's reset between levels
    assert facts["0.5.11"]["meta_info_histograms"] == ["spec_accept_histogram"]
    assert facts["0.5.20"]["meta_info_histograms"] == ["spec_accept_histogram", "spec_correct_drafts_histogram"]
    assert facts["0.5.21"]["meta_info_histograms"] == ["spec_correct_drafts_histogram"]
    assert facts["0.5.21"]["accept_counters_reset"]["set_internal_state"] == "any_key"
    assert facts["0.5.22"]["accept_counters_reset"]["set_internal_state"] == "speculative_accept_threshold_keys"


def test_a_release_key_that_is_no_known_release_is_a_config_error():
    from automodel_spec.config.rules import server_errors

    assert server_errors(SGLangConfig(release="0.5.23")) == []
    (error,) = server_errors(SGLangConfig(release="latest"))
    assert error.startswith("sglang.release=latest: 'latest' is not a release number")
    (error,) = server_errors(SGLangConfig(release="0.4.9"))
    assert "older than 0.5.9, the oldest release this tool builds commands for (0.5.9 .. 0.5.23)" in error
