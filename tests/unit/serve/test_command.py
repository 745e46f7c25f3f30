"""The server argv: exact flags for each algorithm, pass-through options, secrets masked."""

from __future__ import annotations

import shlex

from automodel_spec.config.schema import AlgorithmConfig, SGLangConfig, SpecConfig
from automodel_spec.serve.command import DraftArgs, build_launch_command, format_command, redact

PY = "/venv/bin/python"
EAGLE3 = AlgorithmConfig(name="EAGLE3", architecture="LlamaForCausalLMEagle3", needs_draft=True,
                         uses_token_map=False)
EAGLE = AlgorithmConfig(name="EAGLE", architecture="LlamaForCausalLMEagle", needs_draft=True, uses_token_map=True)
NONE = AlgorithmConfig(name=None, architecture=None, needs_draft=False, uses_token_map=False)
HEAD = [PY, "-m", "sglang.launch_server", "--model-path", "/models/target",
        "--host", "127.0.0.1", "--port", "30000"]


def _build(*args, release: str = "0.5.17", **kw) -> list[str]:
    """The argv for 0.5.17, the release the GPU machine serves with (other releases: test_sglang_options)."""
    return build_launch_command(*args, release=release, **kw)


def _sg(**kw) -> SGLangConfig:
    return SGLangConfig(python=PY, **kw)


def test_eagle3_with_spec():
    argv = _build("/models/target", _sg(), EAGLE3, SpecConfig(3, 1, 4),
                                DraftArgs(path="/exports/d", token_map="/exports/d/token_map.pt"))
    assert argv == HEAD + [
        "--speculative-algorithm", "EAGLE3",
        "--speculative-draft-model-path", "/exports/d",
        "--speculative-num-steps", "3",
        "--speculative-eagle-topk", "1",
        "--speculative-num-draft-tokens", "4",
    ]  # no --speculative-token-map: EAGLE3 ignores it


def test_eagle3_without_spec_leaves_the_choice_to_sglang():
    argv = _build("/models/target", _sg(), EAGLE3, SpecConfig(), DraftArgs(path="/exports/d"))
    assert argv == HEAD + ["--speculative-algorithm", "EAGLE3", "--speculative-draft-model-path", "/exports/d"]


def test_algorithm_none_has_no_speculative_flags():
    argv = _build("/models/target", _sg(), NONE, SpecConfig(5, 4, 8), DraftArgs(path="/exports/d"))
    assert argv == HEAD
    assert not any(a.startswith("--speculative") for a in argv)


def test_eagle_with_token_map():
    argv = _build("/models/target", _sg(), EAGLE, SpecConfig(5, 4, 8),
                                DraftArgs(path="/exports/e", token_map="/exports/e/token_map.pt"))
    assert argv == HEAD + [
        "--speculative-algorithm", "EAGLE",
        "--speculative-draft-model-path", "/exports/e",
        "--speculative-token-map", "/exports/e/token_map.pt",
        "--speculative-num-steps", "5",
        "--speculative-eagle-topk", "4",
        "--speculative-num-draft-tokens", "8",
    ]


def test_eagle_without_token_map_omits_the_flag():
    argv = _build("/models/target", _sg(), EAGLE, SpecConfig(), DraftArgs(path="/exports/e"))
    assert "--speculative-token-map" not in argv


def test_hub_draft_revision_and_target_revision():
    argv = _build("org/target", _sg(), EAGLE3, SpecConfig(), DraftArgs(path="org/draft", revision="r1"),
                                target_revision="main")
    assert argv[3:7] == ["--model-path", "org/target", "--revision", "main"]
    i = argv.index("--speculative-draft-model-path")
    assert argv[i:i + 4] == ["--speculative-draft-model-path", "org/draft",
                             "--speculative-draft-model-revision", "r1"]


def test_tp_and_multi_node_pass_through():
    sg = _sg(tp_size=8, nnodes=2, node_rank=1, dist_init_addr="10.0.0.1:5000")
    argv = _build("/models/target", sg, NONE, SpecConfig(), None)
    assert argv == HEAD + ["--tp-size", "8", "--nnodes", "2", "--node-rank", "1", "--dist-init-addr", "10.0.0.1:5000"]


def test_single_node_defaults_add_nothing():
    argv = _build("/models/target", _sg(), NONE, SpecConfig(), None)
    assert argv == HEAD
    assert "--tp-size" not in argv and "--nnodes" not in argv


def test_server_options_and_flags():
    sg = _sg(dtype="bfloat16", mem_fraction_static=0.8, attention_backend="fa3", cuda_graph_max_bs=32,
             max_running_requests=64, context_length=4096, log_level="info", disable_cuda_graph=True,
             skip_tokenizer_init=True, trust_remote_code=True)
    argv = _build("/models/target", sg, NONE, SpecConfig(), None)
    assert argv == HEAD + ["--dtype", "bfloat16", "--mem-fraction-static", "0.8", "--attention-backend", "fa3",
                           "--cuda-graph-max-bs-decode", "32", "--max-running-requests", "64", "--context-length", "4096",
                           "--log-level", "info", "--disable-cuda-graph", "--skip-tokenizer-init",
                           "--trust-remote-code"]


def test_cuda_graph_batch_sizes_as_one_flag_with_several_values():
    argv = _build("/models/target", _sg(cuda_graph_bs=[1, 8, 32]), NONE, SpecConfig(), None)
    assert argv == HEAD + ["--cuda-graph-bs-decode", "1", "8", "32"]
    # before 0.5.14 (no decode/prefill split) the only spelling
    argv = _build("/models/target", _sg(cuda_graph_bs=[1, 8, 32]), NONE, SpecConfig(), None, release="0.5.13")
    assert argv == HEAD + ["--cuda-graph-bs", "1", "8", "32"]


def test_extra_args_verbatim_at_the_end():
    extra = ["--enable-metrics", "--speculative-attention-mode", "decode", "--weird=a b"]
    argv = _build("/models/target", _sg(extra_args=extra), EAGLE3, SpecConfig(3, 1, 4),
                                DraftArgs(path="/exports/d"))
    assert argv[-len(extra):] == extra
    assert argv.index("--speculative-num-draft-tokens") < argv.index("--enable-metrics")


def test_port_override():
    argv = _build("/models/target", _sg(port=0), NONE, SpecConfig(), None, port=41234)
    assert argv[argv.index("--port") + 1] == "41234"
    argv = _build("/models/target", _sg(host="0.0.0.0", port=31000), NONE, SpecConfig(), None)
    assert argv[5:9] == ["--host", "0.0.0.0", "--port", "31000"]


def test_default_python_is_the_current_interpreter():
    import sys

    argv = _build("/models/target", SGLangConfig(), NONE, SpecConfig(), None)
    assert argv[0] == sys.executable


def test_api_key_passed_but_redacted_when_shown():
    argv = _build("/models/target", _sg(api_key="s3cret", extra_args=["--api-key=other"]),
                                NONE, SpecConfig(), None)
    assert argv[argv.index("--api-key") + 1] == "s3cret"  # the server gets the real key
    shown = redact(argv)
    assert "s3cret" not in shown and "--api-key=other" not in shown
    assert shown[shown.index("--api-key") + 1] == "***" and "--api-key=***" in shown
    line = format_command(argv)
    assert "s3cret" not in line and "other" not in line
    assert argv[argv.index("--api-key") + 1] == "s3cret"  # redact copies, never mutates


def test_redact_trailing_flag_and_format_is_shell_safe():
    assert redact(["x", "--api-key"]) == ["x", "--api-key"]
    argv = [PY, "-m", "sglang.launch_server", "--model-path", "/my models/t'x"]
    assert shlex.split(format_command(argv)) == argv


def test_every_setting_of_the_table_is_passed_or_named_as_not_passed():
    # sglang_options.OPTIONS owns the flags: a row the builder gives no value would fail every build
    # (KeyError), and one it forgets to pass would be missing here
    from automodel_spec.config.sglang_options import OPTIONS, known_releases, spelling
    from automodel_spec.serve.command import NOT_PASSED, launch_values

    keys = {o.key for o in OPTIONS}
    assert set(NOT_PASSED) <= keys, "NOT_PASSED names a key the table no longer has"
    sg = _sg(tp_size=2, dtype="bfloat16", mem_fraction_static=0.5, attention_backend="triton", cuda_graph_max_bs=8,
             cuda_graph_bs=[1, 8], max_running_requests=8, context_length=512, log_level="info", api_key="k",
             nnodes=2, node_rank=1, dist_init_addr="10.0.0.1:5000", disable_cuda_graph=True,
             disable_prefill_cuda_graph=True, skip_tokenizer_init=True, trust_remote_code=True)
    draft = DraftArgs(path="/d", revision="r", token_map="/d/map.pt")
    passed = set()
    for spec in (SpecConfig(3, 1, 4), SpecConfig(adaptive=True, adaptive_config="/a.json")):
        values = launch_values("/m", sg, EAGLE, spec, draft, target_revision="main")
        assert set(values) == keys - set(NOT_PASSED)
        release = known_releases()[-1]
        argv = _build("/m", sg, EAGLE, spec, draft, release=release, target_revision="main")
        for key in sorted(keys - set(NOT_PASSED)):
            if values[key] not in (None, False):  # set in this spec (adaptive mode has no steps here)
                assert spelling(key, release) in argv, key
                passed.add(key)
        assert values["spec.adaptive"] == spec.adaptive
    assert passed == keys - set(NOT_PASSED), "a setting of the table that no configuration passes"
