"""The speculative setting's own rules (``spec_rules.spec_errors``); ``validate`` applying them is tested in
config/test_rules.py."""

from __future__ import annotations

import pytest

from automodel_spec.config.schema import SpecConfig
from automodel_spec.config.spec_rules import spec_errors


@pytest.mark.parametrize("spec", [SpecConfig(), SpecConfig(3, 1, 4), SpecConfig(7, 1, 8), SpecConfig(5, 4, 8),
                                  SpecConfig(5, 4, 21), SpecConfig(1, 1, 2), SpecConfig(2, 8, 3)])
def test_valid_spec(spec):
    assert spec_errors(spec) == []


@pytest.mark.parametrize(
    "spec,missing",
    [
        (SpecConfig(num_steps=3), ["spec.topk", "spec.num_draft_tokens"]),
        (SpecConfig(topk=4), ["spec.num_steps", "spec.num_draft_tokens"]),
        (SpecConfig(num_draft_tokens=8), ["spec.num_steps", "spec.topk"]),
        (SpecConfig(num_steps=3, num_draft_tokens=4), ["spec.topk"]),
        (SpecConfig(topk=1, num_draft_tokens=4), ["spec.num_steps"]),
    ],
)
def test_spec_knobs_go_together(spec, missing):
    errors = spec_errors(spec)
    assert len(errors) == 1 and "go together" in errors[0]
    for name in missing:
        assert name in errors[0]


@pytest.mark.parametrize("tokens", [3, 5, 8])
def test_chain_needs_steps_plus_one_tokens(tokens):
    errors = spec_errors(SpecConfig(num_steps=3, topk=1, num_draft_tokens=tokens))
    assert len(errors) == 1 and "spec.num_draft_tokens=4" in errors[0] and f"got {tokens}" in errors[0]


def test_tree_cannot_hold_more_than_steps_times_topk_plus_one():
    assert spec_errors(SpecConfig(num_steps=2, topk=4, num_draft_tokens=9)) == []  # 2*4+1 = 9: the full tree
    errors = spec_errors(SpecConfig(num_steps=2, topk=4, num_draft_tokens=10))
    assert len(errors) == 1 and "2*4+1 = 9" in errors[0]


@pytest.mark.parametrize("spec,bad", [(SpecConfig(0, 1, 1), "spec.num_steps=0"), (SpecConfig(3, 0, 4), "spec.topk=0"),
                                      (SpecConfig(3, 2, -1), "spec.num_draft_tokens=-1")])
def test_spec_values_must_be_positive(spec, bad):
    errors = spec_errors(spec)
    assert any(bad in e and ">= 1" in e for e in errors)
