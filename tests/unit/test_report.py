"""What the user is told about a prepared run: ``format_notes``, ``describe_spec`` and ``format_plan``.

The inputs are the real dataclasses (``PreparedRun``, ``DraftArgs``, ``ExportResult``, ``SpecConfig``,
``SGLangRelease``) and the command ``launch_command`` builds, as ``recipes/serve.py`` passes them. Checked:
each fact appears on its own line in its order (target, draft, export, token map, notes, pending items),
the speculative setting is described as asked (given, left to SGLang, adaptive), and the print_only plan
shows the release above a command that pastes back into a shell with the API key masked.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from automodel_spec.config.schema import AlgorithmConfig, SGLangConfig, SpecConfig
from automodel_spec.export.exporter import ExportResult
from automodel_spec.launch import SGLangRelease, launch_command
from automodel_spec.prepare import PreparedRun
from automodel_spec.report import describe_spec, format_notes, format_plan
from automodel_spec.serve.command import DraftArgs

RELEASE = SGLangRelease(release="0.5.23", installed="0.5.23", source="installed")


def exported_run(**changes) -> PreparedRun:
    """A local draft exported for a local target, as ``prepare_run`` returns it."""
    fields = dict(
        target="/models/llama-8b",
        draft=DraftArgs(path="/cache/exports/abc123", revision=None, token_map="/cache/exports/abc123/token_map.pt"),
        export=ExportResult(path=Path("/cache/exports/abc123"), reused=False, min_sglang="0.5.12",
                            notes=["lm_head renamed from draft_lm_head"]),
        notes=["draft: Automodel EAGLE-3 checkpoint epoch_0_step_100"],
        pending=[],
        spec=SpecConfig(num_steps=3, topk=1, num_draft_tokens=4),
    )
    fields.update(changes)
    return PreparedRun(**fields)


def test_notes_list_each_fact_in_order():
    run = exported_run(pending=["the demo pair is built on the first serve"])
    assert format_notes(run).splitlines() == [
        "target: /models/llama-8b",
        "draft:  /cache/exports/abc123",
        "export: new; loads on SGLang >= 0.5.12",
        "token map: /cache/exports/abc123/token_map.pt",
        "  - draft: Automodel EAGLE-3 checkpoint epoch_0_step_100",  # the run's notes first,
        "  - lm_head renamed from draft_lm_head",  # then the export's
        "  ! the demo pair is built on the first serve",  # what print_only could not know
    ]


def test_a_reused_export_and_a_hub_draft_revision_are_said():
    run = exported_run(draft=DraftArgs(path="org/draft", revision="v2"),
                       export=ExportResult(path=Path("/cache/exports/abc123"), reused=True))
    lines = format_notes(run).splitlines()
    assert "draft:  org/draft (revision v2)" in lines
    assert "export: reused from an earlier run; loads on SGLang >= 0.5.9" in lines
    assert not any(line.startswith("token map") for line in lines)  # none: not shown as None


def test_without_a_target_or_a_draft_only_what_there_is_is_listed():
    # an export without a target (recipes/export.py), then a serve without speculation
    run = exported_run(target=None)
    assert format_notes(run).splitlines()[0] == "target: none (target.path unset)"
    bare = PreparedRun(target="org/target")
    assert format_notes(bare) == "target: org/target"


def test_a_given_setting_is_described_as_given():
    assert describe_spec(SpecConfig(3, 1, 4)) == "3 steps / topk 1 / 4 draft tokens (as given)"


def test_a_setting_left_to_sglang_says_so_and_that_it_is_read_back():
    text = describe_spec(SpecConfig())
    assert text.startswith("left to SGLang") and "read back from the server" in text


def test_adaptive_mode_names_its_candidates_and_its_start():
    text = describe_spec(SpecConfig(adaptive=True))
    assert text.startswith("SGLang's adaptive mode: a chain (topk 1)")
    assert "SGLang's default candidates" in text and text.endswith("starting at the middle candidate")
    text = describe_spec(SpecConfig(num_steps=3, topk=1, adaptive=True, adaptive_config="/cfg/adaptive.json"))
    assert "the candidates of /cfg/adaptive.json" in text and text.endswith("starting at 3 steps")


def test_print_only_shows_the_release_above_a_command_that_pastes_back():
    sglang = SGLangConfig(port=0, api_key="sk-secret-123", extra_args=["--log-requests-level", "it's 2"])
    run = exported_run()
    argv = launch_command(sglang, AlgorithmConfig(), run, release=RELEASE)
    text = format_plan(AlgorithmConfig(), sglang, run, argv, Path("/out"), wrote=False, release=RELEASE)
    lines = text.splitlines()
    assert lines[0] == "[automodel-spec] print_only: nothing was written"
    notes = format_notes(run).splitlines()
    assert lines[1:1 + len(notes)] == notes  # the notes, as the export recipe prints them
    assert "speculative setting: 3 steps / topk 1 / 4 draft tokens (as given)" in lines
    assert "  - sglang.port=0: a free port is picked at launch (shown here as 0)" in lines
    at = lines.index("command:")
    assert lines[at - 1] == "SGLang release: 0.5.23 (installed; 0.5.23 installed)"
    # one shell line: split back, it is the argv with the key masked (a quote in an argument survives)
    pasted = shlex.split(lines[at + 1])
    assert pasted == [("***" if a == "sk-secret-123" else a) for a in argv]
    assert "sk-secret-123" not in text
    assert lines[-1].startswith("logs would go to: the Hydra output directory")


def test_a_prepared_serve_names_its_log_directory_and_no_command():
    sglang = SGLangConfig()
    text = format_plan(AlgorithmConfig(), sglang, exported_run(), None, Path("/out/2026-12-07/14-00-00"), wrote=True)
    lines = text.splitlines()
    assert lines[0] == "[automodel-spec] prepared"
    assert lines[-1] == "logs: /out/2026-12-07/14-00-00"
    assert "command:" not in lines and not any(line.startswith("SGLang release") for line in lines)
    assert not any("sglang.port=0" in line for line in lines)  # the port note is for a printed command


def test_without_speculation_no_setting_is_described():
    algorithm = AlgorithmConfig(name=None, architecture=None, needs_draft=False)
    run = PreparedRun(target="/models/llama-8b")
    argv = launch_command(SGLangConfig(), algorithm, run, release=RELEASE)
    text = format_plan(algorithm, SGLangConfig(), run, argv, Path("/out"), wrote=False, release=RELEASE)
    assert "speculative setting" not in text and "--speculative-algorithm" not in text
    assert "--model-path /models/llama-8b" in text
