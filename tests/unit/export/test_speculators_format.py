"""speculators' (vLLM's) EAGLE-3 config read as SGLang's flat Llama EAGLE-3 draft config.

From the config speculators itself wrote (``tests/fixtures/producers/speculators/converted_from_eagle3``)
and edits of it: the nested layer config flattened with the EAGLE-3 keys beside it, what is only the
layer's dropped, the aux layer ids moved from speculators' numbering (input of layer ``i``) to SGLang's
(output of layer ``i - 1``), the drafts SGLang cannot serve as trained refused with every reason at once,
and the notes that tell the user what was changed.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from automodel_spec.errors import CheckpointError
from automodel_spec.export.speculators_format import is_speculators_config, to_llama_draft_config

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "producers" / "speculators" / "converted_from_eagle3"


@pytest.fixture
def written() -> dict:
    """config.json as speculators 0.9 wrote it (aux ids null, target_hidden_size null)."""
    return json.loads((FIXTURE / "config.json").read_text())


def convert(config: dict) -> tuple[dict, list[str]]:
    notes: list[str] = []
    return to_llama_draft_config(config, "/drafts/d", notes), notes


def test_configs_written_by_speculators_are_recognised(written):
    assert is_speculators_config(written)
    assert is_speculators_config({"transformer_layer_config": {}})
    assert is_speculators_config({"speculators_config": {"algorithm": "eagle3"}})
    assert not is_speculators_config({"architectures": ["LlamaForCausalLMEagle3"], "hidden_size": 64})


def test_the_layer_config_is_flattened_with_the_eagle3_keys(written):
    cfg, notes = convert(written)
    layer = written["transformer_layer_config"]
    # the decoder layer's settings at the top, as SGLang's LlamaForCausalLMEagle3 reads them
    for key in ("hidden_size", "num_attention_heads", "num_key_value_heads", "intermediate_size", "vocab_size",
                "head_dim", "rms_norm_eps", "rope_parameters", "num_hidden_layers"):
        assert cfg[key] == layer[key]
    assert not {"transformer_layer_config", "speculators_config", "speculators_model_type"} & set(cfg)
    assert cfg["architectures"] == ["Eagle3Speculator"]  # the top level's (the preflight renames it)
    assert cfg["draft_vocab_size"] == 128
    assert cfg["target_hidden_size"] == 64  # null in the file: the layer's hidden size
    assert cfg["tie_word_embeddings"] is False and cfg["dtype"] == "float32"
    assert "eagle_config" not in cfg  # no aux ids given: SGLang's default taps
    assert not {"norm_output", "fc_norm", "norm_before_fc"} & set(cfg)  # false flags are not written
    assert len(notes) == 1 and notes[0].startswith("speculators (vLLM) EAGLE-3 format")


def test_the_input_config_is_not_changed(written):
    written["eagle_aux_hidden_state_layer_ids"] = [2, 5]
    before = copy.deepcopy(written)
    convert(written)
    assert written == before  # the caller keeps the file's config (it is hashed and reported)


def test_keys_only_the_layer_has_are_dropped(written):
    written["transformer_layer_config"].update(layer_types=["full_attention"], sliding_window=None,
                                               use_sliding_window=False, max_window_layers=1,
                                               architectures=["LlamaForCausalLM"])
    cfg, notes = convert(written)
    assert not {"layer_types", "sliding_window", "use_sliding_window", "max_window_layers"} & set(cfg)
    assert cfg["architectures"] == ["Eagle3Speculator"]  # not the layer's LlamaForCausalLM
    assert not any("sliding window" in n for n in notes)  # full attention: nothing to warn of


def test_given_top_level_values_win_over_the_layers(written):
    written.update(target_hidden_size=4096, tie_word_embeddings=True, torch_dtype="bfloat16", dtype=None,
                   norm_output=True, fc_norm=True)
    cfg, _ = convert(written)
    assert cfg["target_hidden_size"] == 4096 and cfg["tie_word_embeddings"] is True
    assert cfg["torch_dtype"] == "bfloat16" and "dtype" not in cfg  # a null dtype is not written
    assert cfg["norm_output"] is True and cfg["fc_norm"] is True and "norm_before_fc" not in cfg


def test_aux_layer_ids_move_to_sglangs_numbering(written):
    # speculators' id i taps the input of target layer i; SGLang's id j the output of layer j
    written["eagle_aux_hidden_state_layer_ids"] = [2, 16, 29]
    cfg, notes = convert(written)
    assert cfg["eagle_config"] == {"eagle_aux_hidden_state_layer_ids": [1, 15, 28]}
    assert any("[2, 16, 29]" in n and "[1, 15, 28]" in n for n in notes)


@pytest.mark.parametrize(("ids", "message"), [
    ([0, 3, 5], r"taps the embedding output \(id 0\)"),
    ([1, -2], r"taps the embedding output"),
    ([1, True], r"is not a list of layer numbers"),
    ("1,2", r"is not a list of layer numbers"),
    ([1.0, 2.0], r"is not a list of layer numbers"),
])
def test_aux_layer_ids_sglang_cannot_capture_are_refused(written, ids, message):
    written["eagle_aux_hidden_state_layer_ids"] = ids
    with pytest.raises(CheckpointError, match=message) as err:
        convert(written)
    assert "/drafts/d" in str(err.value)  # says which draft


def test_the_algorithm_is_read_from_speculators_config_when_the_type_is_absent(written):
    del written["speculators_model_type"]
    assert convert(written)[0]["hidden_size"] == 64
    written["speculators_config"]["algorithm"] = "eagle"
    with pytest.raises(CheckpointError, match=r"speculators draft of type 'eagle'.*Serve it with vLLM"):
        convert(written)


@pytest.mark.parametrize("edit", [
    lambda c: c.pop("transformer_layer_config"),
    lambda c: c.update(transformer_layer_config="llama"),
    lambda c: c["transformer_layer_config"].update(model_type="qwen3"),
])
def test_a_layer_that_is_not_llama_is_refused(written, edit):
    edit(written)
    with pytest.raises(CheckpointError, match=r"transformer_layer_config is missing or not a llama layer"):
        convert(written)


def test_a_layer_without_model_type_is_taken_as_llama(written):
    del written["transformer_layer_config"]["model_type"]
    assert convert(written)[0]["num_key_value_heads"] == 2


def test_norm_before_residual_is_refused_with_what_to_do(written):
    written["norm_before_residual"] = True
    with pytest.raises(CheckpointError, match=r"norm_before_residual: true.*--no-norm-before-residual"):
        convert(written)


def test_every_reason_is_listed_at_once(written):
    written.update(speculators_model_type="medusa", norm_before_residual=True)
    written["transformer_layer_config"]["model_type"] = "mistral"
    with pytest.raises(CheckpointError, match=r"\(3 problem\(s\)\)") as err:
        convert(written)
    text = str(err.value)
    assert "'medusa'" in text and "not a llama layer" in text and "norm_before_residual" in text


@pytest.mark.parametrize("layer_edit", [
    {"use_sliding_window": True, "sliding_window": 4096},
    {"layer_types": ["sliding_attention"], "sliding_window": 4096},
])
def test_a_sliding_window_draft_is_served_with_a_warning(written, layer_edit):
    written["transformer_layer_config"].update(layer_edit)
    cfg, notes = convert(written)
    (warning,) = [n for n in notes if n.startswith("WARNING")]
    assert "4096-token sliding window" in warning and "--speculative-draft-window-size" in warning
    assert "sliding_window" not in cfg  # SGLang's draft attends to the whole context
