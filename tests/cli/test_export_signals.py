"""A SIGTERM during an export ends it like Ctrl-C: exit 143, no temporary directory left, the next run works."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest
from helpers import run_recipe, write_large_eagle3_run

from automodel_spec.hydra import recipe_runtime
from automodel_spec.io import signals

EXPORT = Path(__file__).resolve().parents[2] / "recipes" / "export.py"


def _env(cache: Path) -> dict:
    return {**os.environ, "AUTOMODEL_SPEC_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def big_run(tmp_path_factory) -> Path:
    return write_large_eagle3_run(tmp_path_factory.mktemp("big") / "run")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_signal_while_writing_leaves_no_partial_export(big_run, tmp_path, monkeypatch, capsys, sig, code):
    cache = tmp_path / "cache"
    exports = cache / "exports"
    proc = subprocess.Popen([sys.executable, str(EXPORT), "draft=automodel", f"draft.path={big_run}"],
                            cwd=tmp_path, env=_env(cache), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if exports.is_dir() and any(".tmp-" in p.name for p in exports.iterdir()):
            break
        time.sleep(0.005)
    else:
        proc.kill()
        pytest.fail(f"the export never started writing (rc {proc.poll()}): {proc.stdout.read()[-2000:]}")
    os.kill(proc.pid, sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == code, out[-2000:]
    assert "Traceback" not in out
    assert [p.name for p in exports.iterdir() if not p.name.endswith(".lock")] == []
    # the next run: the export's job in this process (torch is imported here already; a process of its own
    # would import it again, ~2 s of CPU)
    monkeypatch.setenv("AUTOMODEL_SPEC_CACHE", str(cache))
    capsys.readouterr()
    again = run_recipe("export", "draft=automodel", f"draft.path={big_run}")
    printed = capsys.readouterr()
    assert again == 0, (printed.out + printed.err)[-2000:]
    assert "export (written)" in printed.out, printed.out[-2000:]
    written = [p for p in exports.iterdir() if not p.name.endswith(".lock")]
    assert len(written) == 1 and (written[0] / "model.safetensors").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("raised", [ValueError, RuntimeError])
def test_an_error_raised_in_place_of_sigterms_own_ends_as_terminated(monkeypatch, capsys, raised):
    # native code (torch building a tensor for safetensors) can catch the SIGTERM handler's exception
    # and raise another: the reader then reports a "damaged file", or it looks like a bug of ours
    from automodel_spec.errors import SpecError

    monkeypatch.setattr(signals, "_terminated", False)
    monkeypatch.setattr(signals, "_interrupted", False)

    def reader_interrupted_inside_native_code():
        try:
            signals.raise_terminated(signal.SIGTERM, None)
        except KeyboardInterrupt as exc:
            native = raised("could not determine the shape of object type 'torch.storage.UntypedStorage'")
            if raised is ValueError:  # what our reader makes of it
                raise SpecError("cannot read model.safetensors: ... The file is damaged or not safetensors.") from native
            raise native from exc

    with pytest.raises(SystemExit) as ended:
        recipe_runtime.run_and_exit(reader_interrupted_inside_native_code)
    err = capsys.readouterr().err
    assert ended.value.code == 143 and "terminated" in err
    assert "error:" not in err and "damaged" not in err


def test_an_error_without_a_signal_is_still_reported_as_itself(monkeypatch, capsys):
    from automodel_spec.errors import SpecError

    monkeypatch.setattr(signals, "_terminated", False)
    monkeypatch.setattr(signals, "_interrupted", False)

    def bad_input():
        raise SpecError("the file is damaged")

    with pytest.raises(SystemExit) as ended:
        recipe_runtime.run_and_exit(bad_input)
    assert ended.value.code == 1 and "error: the file is damaged" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(("sig", "handler", "code", "said"),
                         [(signal.SIGINT, "raise_interrupted", 130, "interrupted"),
                          (signal.SIGTERM, "raise_terminated", 143, "terminated")], ids=["SIGINT", "SIGTERM"])
def test_a_signal_swallowed_by_a_weakref_callback_still_ends_the_run(monkeypatch, capsys, sig, handler, code, said):
    # CPython drops an exception raised inside a weakref callback ("Exception ignored in: ..."): a Ctrl-C
    # landing in importlib's module-lock callback let an export run to its end and exit 0
    monkeypatch.setattr(signals, "_terminated", False)
    monkeypatch.setattr(signals, "_interrupted", False)
    finished = []

    class Module:
        pass

    def export_signalled_inside_a_callback():
        lock = Module()
        ref = weakref.ref(lock, lambda _: signal.raise_signal(sig))  # noqa: F841
        del lock  # the callback runs here; the handler's exception goes no further than it
        finished.append(True)
        return 0

    previous = signal.signal(sig, getattr(signals, handler))
    try:
        with pytest.raises(SystemExit) as ended:
            recipe_runtime.run_and_exit(export_signalled_inside_a_callback)
    finally:
        signal.signal(sig, previous)
    assert finished, "the callback's exception was not swallowed: the case is not reproduced"
    assert ended.value.code == code and said in capsys.readouterr().err


# The signal comes while Hydra is being imported, after the recipe's first import of the package: held
# since then, it reaches the recipe's handler (without the hold, SIGTERM's default action: rc -15).
_SIGNAL_DURING_HYDRAS_IMPORT = """
import os, runpy, signal, sys
sig = signal.Signals[sys.argv[1]]
sys.argv = sys.argv[2:]

def send_once(event, args):
    if event == "import" and args[0] == "hydra" and not sent:
        sent.append(True)
        os.kill(os.getpid(), sig)

sent = []
sys.addaudithook(send_once)
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize(("sig", "code", "said"), [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")],
                         ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_the_recipe_imports_hydra_waits_for_its_handler(tmp_path, sig, code, said):
    res = subprocess.run([sys.executable, "-c", _SIGNAL_DURING_HYDRAS_IMPORT, sig.name, str(EXPORT), "print_only=true"],
                         cwd=tmp_path, env=_env(tmp_path / "cache"), capture_output=True, text=True, timeout=120)
    assert res.returncode == code, res.stdout + res.stderr
    assert res.stderr.strip().endswith(said) and "Traceback" not in res.stderr, res.stderr
