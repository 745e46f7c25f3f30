"""``mode=check``: the reference and a short served run, non-zero when they disagree.

The server is the fake SGLang (a lifecycle test: it proves the recipe computes the reference, holds
the served accept length against it and exits accordingly, never that SGLang serves the draft). The
reference is real: the demo pair's exported draft through ``automodel_spec.bench.reference`` on the CPU.
The demo draft is built to agree with its target, so its reference accepts every draft token, as the
fake does by default; ``FAKE_SGLANG_ACCEPT`` makes the fake accept fewer, as a mis-served draft would.
The recipe's job runs in this process (``helpers.run_recipe``: Hydra's compose, then the job): what is
tested is the check, not the command line, which test_bench_cli.py runs in subprocesses.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
import logging
import subprocess

import pytest
from test_bench_cli import WORKLOAD

from automodel_spec.bench import served_checks

# A skip mark rather than pytest.importorskip: importing transformers at collection costs every pytest-xdist
# worker its import (~0.6 s of CPU), also the workers that never run these tests.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers is not installed")

CHECK = [*[w for w in WORKLOAD if not w.startswith(("bench.num_prompts", "bench.max_new_tokens", "bench.concurrency"))],
         "bench.num_prompts=2", "bench.max_new_tokens=12", "spec.num_steps=3", "spec.topk=1"]


@pytest.fixture(scope="module")
def references() -> dict:
    """The references this module's runs computed, by everything that goes into the reference's process.

    A reference process (transformers and torch imported, ~4 s of CPU) is deterministic: the same draft,
    target, setting, prompts and sampling give the same JSON. Three of this module's runs ask for the same
    one (the passing and the failing check differ only in the fake server, which the reference never
    sees), so each distinct one is computed once and handed to later runs as a copy. The module runs whole
    on one pytest-xdist worker (tests/conftest.py) so that they share it.

    The first distinct one is computed by the real subprocess; later ones (the tree's, at temperature 0 and
    1) by the same command's ``main`` in this process (``reference_in_this_process``)."""
    return {}


@contextlib.contextmanager
def reference_in_this_process():
    """``served_checks._compute_in_subprocess`` as it is (its prompts file, its command, its JSON read back),
    with the command ``python -m automodel_spec.bench.reference ARGS`` run as ``reference.main(ARGS)`` in this
    process, where transformers is imported once (tests/conftest.py runs this module on the worker that runs
    the reference's own tests): a process of its own imports torch and transformers again (~4 s of CPU).
    Any other ``subprocess.run`` goes through as it is."""
    from automodel_spec.bench import reference

    real_run = subprocess.run

    def run(argv, *args, **kwargs):
        if list(argv[1:3]) != ["-m", "automodel_spec.bench.reference"]:
            return real_run(argv, *args, **kwargs)
        logger = logging.getLogger("automodel_spec")  # the command's console logging, kept to the command
        handlers, level = logger.handlers[:], logger.level
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = reference.main(list(argv[3:]))
        finally:
            logger.handlers[:], logger.level = handlers, level
        return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())

    with pytest.MonkeyPatch.context() as m:
        m.setattr(subprocess, "run", run)
        yield


@pytest.fixture
def check(bench_job, monkeypatch, references):
    """Factory: tests/cli/conftest.py's ``bench_job`` (``recipes/serve.py OVERRIDES`` in this process on the demo
    cache, no process left behind), with each reference computed once for the module (``references``)."""
    compute = served_checks._compute_in_subprocess

    def computed_once(run, prompts, setting, max_new_tokens, gpu_pool, share=1, sampling=None):
        key = json.dumps([str(run.target), str(run.export.path), repr(setting), max_new_tokens, gpu_pool, share,
                          [[p.id, p.text, p.input_ids] for p in prompts],
                          served_checks._sampling_args(setting, sampling)], default=str)
        if key not in references:
            with reference_in_this_process() if references else contextlib.nullcontext():
                references[key] = compute(run, prompts, setting, max_new_tokens, gpu_pool, share, sampling)
        return copy.deepcopy(references[key])  # the caller may adjust its copy (a tree's size)

    monkeypatch.setattr(served_checks, "_compute_in_subprocess", computed_once)
    return bench_job


def test_check_passes_when_served_matches_the_reference(tmp_path, check):
    out = tmp_path / "out"
    res = check("mode=check", *CHECK, output_dir=out)
    assert res.returncode == 0, res.output
    assert "check passed: served as trained (served 4.00, reference 4.00)" in res.stdout
    assert "identical to the no-speculation baseline's 2/2" in res.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["reference"]["status"] == "ok" and m["reference"]["problems"] == []
    assert m["reference"]["aux_layers"] == [2, 4, 5]  # SGLang's default capture for 8 target layers
    assert set(m["levels"]) == {"T0_c1"}  # greedy, one request at a time, whatever bench.* says
    assert m["levels"]["T0_c1"]["served_as_trained"] is True


def test_check_fails_when_the_server_accepts_less_than_the_reference(tmp_path, check):
    out = tmp_path / "out"
    res = check("mode=check", *CHECK, output_dir=out, env={"FAKE_SGLANG_ACCEPT": "0.2"})
    assert res.returncode == 1, res.output
    assert "check FAILED" in res.stderr and "below the reference 4.00" in res.stderr
    assert "aux layer ids" in res.stderr and "num_hidden_layers" in res.stderr  # what to check first
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "ok" and m["levels"]["T0_c1"]["served_as_trained"] is False


def test_check_of_an_algorithm_without_a_draft_is_refused(tmp_path, check):
    res = check("mode=check", "algorithm=none", *CHECK, output_dir=tmp_path / "out")
    assert res.returncode != 0 and "mode=check holds an EAGLE draft against its reference" in res.output


def test_check_of_a_point_measured_without_the_reference_adds_it(tmp_path, check):
    out = tmp_path / "out"
    res = check("mode=bench", *CHECK, "bench.reference=false", output_dir=out)
    assert res.returncode == 0, res.output
    assert json.loads((out / "metrics.json").read_text())["reference"]["status"] == "skipped"
    res = check("mode=check", *CHECK, output_dir=out)
    assert res.returncode == 0, res.output
    assert "already complete" in res.log and "check passed" in res.stdout  # not measured again
    assert json.loads((out / "metrics.json").read_text())["reference"]["status"] == "ok"


def test_a_point_is_measured_again_when_the_target_is_retrained_at_the_same_path(tmp_path, check, cache):
    """Resuming reuses a finished point only while the target holds the same weights: a target retrained,
    widened or copied over in place keeps its path, and its old numbers must not stand for the new ones."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from automodel_spec.demo.pair import demo_pair
    from automodel_spec.export.eagle3_layout import ARCHITECTURE

    pair = demo_pair(cache, ARCHITECTURE)
    target = tmp_path / "target"
    shutil.copytree(pair.target, target)
    args = ("mode=bench", *CHECK, "bench.reference=false", "draft=trained", f"draft.path={pair.draft_run}",
            f"target.path={target}")
    out = tmp_path / "out"
    assert check(*args, output_dir=out).returncode == 0
    first = json.loads((out / "metrics.json").read_text())
    again = check(*args, output_dir=out)
    assert again.returncode == 0 and "already complete (ok); skipped" in again.log  # the same weights: reused
    (weights,) = target.glob("*.safetensors")
    tensors = load_file(weights)
    save_file({name: t + torch.ones_like(t) * 1e-3 for name, t in tensors.items()}, weights)  # same names, shapes
    retrained = check(*args, output_dir=out)
    assert retrained.returncode == 0, retrained.output
    assert "already complete" not in retrained.log
    assert json.loads((out / "metrics.json").read_text())["key"] != first["key"]


def test_check_of_a_tree_at_temperature_0_and_1_gives_an_exact_and_an_interval_verdict(tmp_path, check):
    """A tree (3 steps, topk 2, 5 draft tokens) and a sampled level: the reference is the tree as SGLang
    builds it (exact) at T=0 and an interval at T=1, each level judged against its own."""
    tree = [w for w in CHECK if not w.startswith("spec.topk")] + ["spec.topk=2", "spec.num_draft_tokens=5",
                                                                   "bench.temperature=[1]"]
    out = tmp_path / "out"
    res = check("mode=check", *tree, output_dir=out)
    assert res.returncode == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["levels"]) == {"T0_c1", "T1_c1"}
    exact, sampled = m["levels"]["T0_c1"], m["levels"]["T1_c1"]
    assert exact["reference_kind"] == "exact" and exact["reference_interval"] is None
    assert sampled["reference_kind"] == "interval"
    low, high = sampled["reference_interval"]
    assert low <= sampled["reference_accept_length"] <= high
    assert m["reference"]["by_temperature"]["1"]["kind"] == "interval" and m["reference"]["num_draft_tokens"] == 5
    assert "T=1 (interval): served as trained" in res.stdout and "T=0 (exact): served as trained" in res.stdout
    assert exact["depths_as_trained"] is True and exact["histogram_distance"] is not None
