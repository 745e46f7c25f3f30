"""Every ``sglang`` preset x algorithm x spec form x release builds a command that release's parser accepts."""

from __future__ import annotations

import pytest
from packaging.version import Version
from test_compose import options, to_serve_config

from automodel_spec.config.schema import SpecConfig
from automodel_spec.config.sglang_options import known_releases, option_problems, release_options
from automodel_spec.config.spec_rules import resolve_spec
from automodel_spec.errors import ConfigError
from automodel_spec.serve.command import DraftArgs, build_launch_command, release_errors

SPEC_FORMS = {"given": SpecConfig(3, 1), "tree": SpecConfig(5, 4), "left to SGLang": SpecConfig(),
              "adaptive": SpecConfig(adaptive=True), "adaptive from steps 3": SpecConfig(3, adaptive=True)}
DRAFT = DraftArgs(path="/exports/d", token_map="/exports/d/token_map.pt")


@pytest.mark.parametrize("preset", options("sglang"))
def test_each_presets_command_parses_under_every_release(preset):
    checked, refused = 0, []
    for algorithm in options("algorithm"):
        cfg = to_serve_config(f"sglang={preset}", f"algorithm={algorithm}")
        for form, given in SPEC_FORMS.items():
            if algorithm == "none" and form != "left to SGLang":
                continue
            spec = resolve_spec(given)  # as prepare_run carries it
            for release in known_releases():
                if release_errors(cfg.sglang, cfg.algorithm, spec, release):
                    with pytest.raises(ConfigError, match=rf"spec.adaptive needs SGLang >= 0.5.11.*SGLang {release}"):
                        build_launch_command("/m", cfg.sglang, cfg.algorithm, spec, DRAFT, release=release)
                    refused.append((algorithm, form, release))
                    continue
                argv = build_launch_command("/m", cfg.sglang, cfg.algorithm, spec, DRAFT, release=release)
                ours = [a for a in argv[: len(argv) - len(cfg.sglang.extra_args)] if a.startswith("--")]
                unknown = [a for a in ours if a not in release_options(release)]
                assert not unknown, f"sglang={preset} algorithm={algorithm} {form} on {release}: {unknown}"
                assert option_problems(argv, release) == [], (preset, algorithm, form, release)
                checked += 1
    assert checked > 200
    # only adaptive mode has releases it cannot run, and exactly those before 0.5.11
    assert {(f, r) for _, f, r in refused} == {(f, r) for f in SPEC_FORMS if f.startswith("adaptive")
                                               for r in known_releases() if Version(r) < Version("0.5.11")}


def test_throughput_on_0_5_23_builds_a_command_0_5_23_accepts():
    cfg = to_serve_config("sglang=throughput")
    argv = build_launch_command("/m", cfg.sglang, cfg.algorithm, SpecConfig(), DRAFT, release="0.5.23")
    assert "--cuda-graph-max-bs" not in argv  # gone in 0.5.20: an ambiguous prefix there, the server exits
    assert argv[argv.index("--cuda-graph-max-bs-decode") + 1] == "64"
    assert option_problems(argv, "0.5.23") == []


def test_the_gpu_machines_presets_spell_the_prefill_graph_switch_per_release():
    cfg = to_serve_config("sglang=triton")
    def built(release):
        return build_launch_command("/m", cfg.sglang, cfg.algorithm, SpecConfig(), DRAFT, release=release)
    assert "--disable-prefill-cuda-graph" in built("0.5.17")
    assert "--disable-piecewise-cuda-graph" in built("0.5.12")
    assert not any("piecewise" in a or "prefill-cuda" in a for a in built("0.5.9"))  # off by default there
