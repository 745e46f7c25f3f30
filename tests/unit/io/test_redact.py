"""Masking a literal API key in text, files, log records and printed configs."""

from __future__ import annotations

import io
import logging

from omegaconf import OmegaConf

from automodel_spec.hydra.glue import RedactCallback
from automodel_spec.io.redact import install_log_filter, mask, mask_file, secrets_of

KEY = "sk-abcdef123"


def test_secrets_of_a_config_include_extra_args_keys():
    cfg = OmegaConf.create({"sglang": {"api_key": KEY, "extra_args": ["--api-key", "other-1", "--api-key=third-3"]}})
    assert set(secrets_of(cfg)) == {KEY, "other-1", "third-3"}
    assert secrets_of(OmegaConf.create({"sglang": {"api_key": None}})) == []
    unset_env = OmegaConf.create({"sglang": {"api_key": "${oc.env:AUTOMODEL_SPEC_TEST_UNSET_VAR}"}})
    assert secrets_of(unset_env) == []  # an interpolation that cannot resolve is no secret to mask


def test_mask_replaces_keyed_values_and_the_literal_anywhere():
    text = f"#0 : spec.topk=1 sglang.api_key={KEY} ; argv --api-key {KEY} ; in a path /sweeps/{KEY}/x"
    assert mask(text, [KEY]) == "#0 : spec.topk=1 sglang.api_key=*** ; argv --api-key *** ; in a path /sweeps/***/x"
    assert mask("api_key: null\napi_key: ${oc.env:K}\n") == "api_key: null\napi_key: ${oc.env:K}\n"
    assert mask("a key 'ab' in words: abc", ["ab"]) == "a key 'ab' in words: abc"  # too short for free text


def test_mask_file_keeps_yaml_valid(tmp_path):
    f = tmp_path / "multirun.yaml"
    f.write_text(f"sglang:\n  api_key: {KEY}\n  extra_args:\n  - {KEY}\nname: sglang.api_key={KEY},x=1\n")
    assert mask_file(f, [KEY]) and not mask_file(f, [KEY])
    loaded = OmegaConf.load(f)
    assert loaded.sglang.api_key == "***" and loaded.sglang.extra_args == ["***"] and KEY not in f.read_text()


def test_log_records_are_masked_whatever_handler_writes_them():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    log = logging.getLogger("automodel_spec.test_redact")
    log.addHandler(handler)
    try:
        install_log_filter([KEY])
        log.warning("launching %s", f"sglang.api_key={KEY} and {KEY}")
    finally:
        log.removeHandler(handler)
        install_log_filter([])
    assert stream.getvalue() == "launching sglang.api_key=*** and ***\n"


def test_callback_masks_multirun_yaml_at_each_job(tmp_path):
    (tmp_path / "multirun.yaml").write_text(f"sglang:\n  api_key: {KEY}\n")
    cfg = OmegaConf.create({"sglang": {"api_key": KEY}, "hydra": {"sweep": {"dir": str(tmp_path)}}})
    try:
        RedactCallback().on_job_start(cfg)
    finally:
        install_log_filter([])
    assert KEY not in (tmp_path / "multirun.yaml").read_text()
