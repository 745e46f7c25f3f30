"""A literal ``sglang.api_key`` never reaches the files a sweep writes, nor the console.

Sweeps run against the fake SGLang server (``tests/fakes/fake_sglang.py``), which requires the key
and prints it at boot. Not even Hydra's own per-job ``.hydra/`` files hold a key given literally
(``RedactCallback`` masks them as the job starts); given as ``${oc.env:...}``, they hold the interpolation.
The demo pair comes built and exported in the shared ``cache`` (tests/conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVE = REPO / "recipes" / "serve.py"
FAKE = REPO / "tests" / "fakes" / "fake_sglang.py"
KEY = "sk-literal-7f3a9c2e5b"
WORKLOAD = [f"sglang.python={FAKE}", "sglang.port=0", "sglang.stop_timeout_s=4", "sglang.ready_timeout_s=30",
            "bench.num_prompts=2", "bench.max_new_tokens=8", "bench.request_timeout_s=20", "bench.concurrency=[1]"]
SWEEP = ["-m", "+sweep=grid", *WORKLOAD, "bench.name=s", "spec.num_steps=1,3", "spec.topk=1"]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fake server is POSIX-only")


def _run(script: Path, *args: str, cwd: Path, cache: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("FAKE_SGLANG_", "AUTOMODEL_SPEC_", "HYDRA_", "SGLANG_API_KEY"))}
    full_env.update(AUTOMODEL_SPEC_CACHE=str(cache), PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)


def _files_holding(root: Path, secret: str) -> tuple[list[str], list[str]]:
    """Files under ``root`` whose name or content holds ``secret``: (Hydra's ``.hydra/`` files, all others)."""
    hydra, ours = [], []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        held = secret in str(rel) or (path.is_file() and secret.encode() in path.read_bytes())
        if held:
            (hydra if ".hydra" in rel.parts else ours).append(str(rel))
    return hydra, ours


@pytest.mark.slow
def test_literal_key_in_a_sweep_stays_out_of_our_files_and_the_console(tmp_path, cache):
    cwd = tmp_path / "cwd"
    res = _run(SERVE, *SWEEP, f"sglang.api_key={KEY}", cwd=cwd, cache=cache)
    console = res.stdout + res.stderr
    assert res.returncode == 0, console[-3000:]

    sweep = cwd / "sweeps" / "s"
    points = sorted(p.name for p in sweep.iterdir()
                    if p.is_dir() and p.name not in ("baseline", "presets") and not p.name.startswith("."))  # .job_codes
    assert points == ["spec.num_steps=1,spec.topk=1", "spec.num_steps=3,spec.topk=1"]  # no api_key in names
    assert {"summary.csv", "summary.md", "multirun.yaml", "best_override.txt"} <= {p.name for p in sweep.iterdir()}
    assert KEY not in console
    assert "sglang.api_key=***" in console  # Hydra's launcher line for each job, masked
    hydra, ours = _files_holding(cwd, KEY)
    assert ours == [], f"the key was written to {ours}"
    assert hydra == [], f"the key is in Hydra's per-job files {hydra}"
    overrides = sorted(sweep.glob("*/.hydra/overrides.yaml"))
    assert overrides and all("sglang.api_key='***'" in p.read_text() for p in overrides)
    assert "api_key: '***'" in (sweep / "multirun.yaml").read_text()
    assert "server_args api_key=***" in (sweep / points[0] / "server.log").read_text()  # the fake printed it


@pytest.mark.slow
def test_key_from_the_environment_is_written_nowhere(tmp_path, cache):
    cwd = tmp_path / "cwd"
    res = _run(SERVE, *SWEEP, "sglang.api_key=${oc.env:SGLANG_API_KEY}", cwd=cwd, cache=cache,
               env={"SGLANG_API_KEY": KEY})
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert KEY not in res.stdout + res.stderr
    assert _files_holding(cwd, KEY) == ([], [])  # not even Hydra's files: they hold the interpolation


_MASKED_CFG = """
import runpy, sys
from automodel_spec.io.redact import mask_printed_config

sys.argv = sys.argv[1:]
mask_printed_config()
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("what", ["job", "hydra", "all"])
def test_cfg_output_is_masked_by_the_hook(tmp_path, cache, what):
    res = subprocess.run([sys.executable, "-c", _MASKED_CFG, str(SERVE), "--cfg", what, f"sglang.api_key={KEY}"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "AUTOMODEL_SPEC_CACHE": str(cache)})
    assert res.returncode == 0, res.stderr[-2000:]
    assert KEY not in res.stdout + res.stderr
    assert ("api_key: '***'" if what != "hydra" else "sglang.api_key='***'") in res.stdout


def test_cfg_job_of_the_recipe_masks_the_key(tmp_path, cache):
    res = _run(SERVE, "--cfg", "job", f"sglang.api_key={KEY}", cwd=tmp_path, cache=cache)
    assert res.returncode == 0 and KEY not in res.stdout + res.stderr
