"""Drafts written by the producers' own code (tests/fixtures/producers, see its manifests) serve as trained.

Each fixture was made by NeMo Automodel, SpecForge or speculators themselves
(``scripts/fixtures/make_producer_fixtures.py``); none of them is installed here. Each is resolved from the
path a user would give, checked and exported against a matching target config; the exported
tensors must be the producer's tensors, under the names SGLang loads and in the serving dtype,
with only the documented drops. Fixtures the manifest marks ``refuse`` must be refused with the
reason. The user's files are never modified.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from automodel_spec.draft import specforge_checkpoint
from automodel_spec.draft.resolve import resolve_draft
from automodel_spec.draft.weights import load_draft_weights
from automodel_spec.errors import CheckpointError
from automodel_spec.export.serving_dtype import choose_serving_dtype
from automodel_spec.prepare import prepare_export

ROOT = Path(__file__).resolve().parents[1] / "fixtures" / "producers"
EAGLE3, EAGLE = "LlamaForCausalLMEagle3", "LlamaForCausalLMEagle"
ARCH = {"EAGLE-3": EAGLE3, "EAGLE-3.1": EAGLE3, "P-EAGLE": EAGLE3, "EAGLE-1/2": EAGLE}
# What each refusal must say (the manifest's `why` says it in the producer's words).
REFUSAL = {"P-EAGLE": "P-EAGLE", "EAGLE-1/2": "input_layernorm.weight was trained"}
# Checkpoints whose config lives elsewhere: the file the producer was given (draft.config).
CONFIG_ELSEWHERE = {"specforge_training_run": "inputs/draft_config.json"}
# Names SGLang replaces with the target's, so the export leaves them out.
DROPPED = {EAGLE3: {"embed_tokens.weight"}, EAGLE: {"embed_tokens.weight", "lm_head.weight"}}


def _fixtures() -> list[tuple[str, dict]]:
    out = []
    for manifest in sorted(ROOT.glob("*/manifest.json")):
        doc = json.loads(manifest.read_text())
        out += [(manifest.parent.name, f) for f in doc["fixtures"]]
    return out


FIXTURES = _fixtures()
IDS = [f"{producer}/{f['name']}" for producer, f in FIXTURES]


def _digest(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _target_config(producer: str, fixture: dict, config: dict) -> dict:
    """The target the draft was trained on: the producer's own input, else a bfloat16 Llama of its shape."""
    given = fixture["facts"].get("target_config")
    if given:
        return json.loads((ROOT / producer / given).read_text())
    layers = fixture["facts"]["target_layers"]
    keys = ("hidden_size", "vocab_size", "num_attention_heads", "num_key_value_heads", "intermediate_size",
            "rope_parameters", "rope_theta", "rope_scaling", "max_position_embeddings")
    target = {k: config[k] for k in keys if k in config}
    return target | {"architectures": ["LlamaForCausalLM"], "num_hidden_layers": layers, "torch_dtype": "bfloat16",
                     "hidden_size": config.get("target_hidden_size") or config["hidden_size"]}


def _serving_name(name: str) -> str:
    """The producers' names as our export writes them (SGLang >= 0.5.9 loads ``midlayer.*``)."""
    name = name.removeprefix("model.")
    return "midlayer." + name.removeprefix("layers.0.") if name.startswith("layers.0.") else name


def test_every_producer_has_fixtures():
    assert {p for p, _ in FIXTURES} >= {"automodel"}, f"no fixtures under {ROOT}"


@pytest.mark.parametrize(("producer", "fixture"), FIXTURES, ids=IDS)
def test_fixture_serves_as_trained_or_is_refused(producer, fixture, tmp_path, monkeypatch):
    path = ROOT / producer / fixture["path"]
    algorithm = fixture["facts"]["algorithm"]
    arch = ARCH[algorithm]
    before = _digest(path)
    if fixture["name"] in CONFIG_ELSEWHERE:  # as on any machine but the one it was trained on
        monkeypatch.setattr(specforge_checkpoint, "_recorded_config", lambda step: None)

    if fixture["action"] == "refuse":
        with pytest.raises(CheckpointError) as exc:
            resolved = resolve_draft(str(path))
            target = _target_config(producer, fixture, json.loads(resolved.config_file.read_text()))
            prepare_export(resolved, arch, cache_dir=tmp_path, target_config=target,
                         serving_dtype=choose_serving_dtype(None, target))
        assert (fixture["facts"].get("refusal_must_mention") or REFUSAL[algorithm]) in str(exc.value)
        assert not (tmp_path / "exports").exists() or not any((tmp_path / "exports").iterdir())
        assert _digest(path) == before
        return

    _check_export(producer, fixture, resolve_draft(str(path)), tmp_path)
    assert _digest(path) == before


OTHER = {EAGLE3: (EAGLE, "algorithm=EAGLE3."), EAGLE: (EAGLE3, "algorithm=EAGLE.")}  # the other class; the advice


@pytest.mark.parametrize(("producer", "fixture"), FIXTURES, ids=IDS)
def test_a_draft_served_as_the_other_algorithm_is_told_which_one_it_is(producer, fixture, tmp_path):
    """The default algorithm is EAGLE3: an EAGLE-1/2 draft given to it (or the reverse) is refused, and
    the refusal says which ``algorithm=`` the draft fits, first among its problems."""
    if fixture["facts"]["algorithm"] == "P-EAGLE":
        pytest.skip("no SGLang algorithm serves P-EAGLE: refused for that before any layout check")
    config = ROOT / producer / CONFIG_ELSEWHERE[fixture["name"]] if fixture["name"] in CONFIG_ELSEWHERE else None
    resolved = resolve_draft(str(ROOT / producer / fixture["path"]), config=str(config) if config else None)
    target = _target_config(producer, fixture, json.loads(resolved.config_file.read_text()))
    own = ARCH[fixture["facts"]["algorithm"]]
    other, advice = OTHER[own]
    with pytest.raises(CheckpointError) as exc:
        prepare_export(resolved, other, cache_dir=tmp_path, target_config=target,
                       serving_dtype=choose_serving_dtype(None, target))
    message = str(exc.value)
    assert advice in message
    if "problem(s)" in message:  # a layout refusal: the advice leads its list
        assert message.splitlines()[1].endswith(advice), message
    if fixture["action"] == "refuse" and config is None:  # refused as its own algorithm too, with no such hint
        with pytest.raises(CheckpointError) as exc:
            prepare_export(resolved, own, cache_dir=tmp_path, target_config=target,
                           serving_dtype=choose_serving_dtype(None, target))
        assert "algorithm=" not in str(exc.value)


@pytest.mark.parametrize(("producer", "name"), [("specforge", n) for n in CONFIG_ELSEWHERE])
def test_checkpoint_with_its_config_given_serves_as_trained(producer, name, tmp_path):
    fixture = next(f for p, f in FIXTURES if p == producer and f["name"] == name)
    config = ROOT / producer / CONFIG_ELSEWHERE[name]
    resolved = resolve_draft(str(ROOT / producer / fixture["path"]), config=str(config))
    assert resolved.config_file == config.resolve()
    _check_export(producer, fixture, resolved, tmp_path)


def test_specforge_checkpoint_and_its_export_serve_the_same_draft(tmp_path):
    """Serving the training checkpoint directly = serving what `specforge export --to sglang` wrote."""
    config = ROOT / "specforge" / "inputs" / "draft_config.json"
    target = json.loads((ROOT / "specforge" / "inputs" / "target_config.json").read_text())
    ours = [prepare_export(resolve_draft(str(ROOT / "specforge" / p), config=c), EAGLE3, cache_dir=tmp_path / p,
                         target_config=target, serving_dtype=choose_serving_dtype(None, target))
            for p, c in (("training_run", str(config)), ("sglang_export", None))]
    a, b = (load_file(str(r.path / "model.safetensors")) for r in ours)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # SpecForge's export adds transformers' defaults (dropout, token ids, ...); what SGLang reads is equal
    read = ("architectures", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "head_dim", "intermediate_size", "rms_norm_eps", "rope_theta", "rope_scaling", "draft_vocab_size",
            "vocab_size", "torch_dtype", "eagle_config", "target_hidden_size", "hidden_act")
    assert {k: ours[0].config.get(k) for k in read} == {k: ours[1].config.get(k) for k in read}


def _check_export(producer: str, fixture: dict, resolved, tmp_path: Path) -> None:
    arch = ARCH[fixture["facts"]["algorithm"]]
    config = json.loads(resolved.config_file.read_text())
    target = _target_config(producer, fixture, config)
    res = prepare_export(resolved, arch, cache_dir=tmp_path, target_config=target,
                       serving_dtype=choose_serving_dtype(None, target))
    produced = load_draft_weights(resolved)
    exported = load_file(str(res.path / "model.safetensors"))
    cfg = res.config

    expected = {_serving_name(n): t for n, t in produced.items()
                if _serving_name(n).removeprefix("midlayer.") not in DROPPED[arch]}
    assert set(exported) == set(expected)
    for name, t in expected.items():
        want = t.to(torch.bfloat16) if t.is_floating_point() else t
        assert exported[name].dtype == want.dtype and torch.equal(exported[name], want), name

    layers = len({m.group(1) for n in produced if (m := re.match(r"(?:model\.)?layers\.(\d+)\.", n))}) or 1
    assert cfg["architectures"] == [arch] and cfg["num_hidden_layers"] == layers
    assert cfg["torch_dtype"] == "bfloat16"
    rope = config.get("rope_parameters") or (config.get("transformer_layer_config") or {}).get("rope_parameters") or {}
    assert cfg["rope_theta"] == rope.get("rope_theta", config.get("rope_theta"))
    aux = fixture["facts"].get("expected_eagle_aux_hidden_state_layer_ids")
    assert (cfg.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids") == aux
    if cfg.get("draft_vocab_size", cfg["vocab_size"]) < cfg["vocab_size"]:
        assert "d2t" in exported  # SGLang's EAGLE3 maps draft ids only through d2t in the weights
