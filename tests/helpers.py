"""Helpers shared by the CPU test suites (on ``sys.path`` through pytest's ``pythonpath``)."""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import runpy
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


def is_fake_server(pid: int) -> bool:
    """Whether ``pid`` runs tests/fakes/fake_sglang.py (so teardown never kills anything else)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"fake_sglang" in fh.read()
    except OSError:
        return False


def tree(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` with its kind, size and mtime ({} when root does not exist)."""
    if not root.exists():
        return {}
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = ("l" if p.is_symlink() else "d" if p.is_dir() else "f",
                                         st.st_size, st.st_mtime_ns)
    return out


REPO = Path(__file__).resolve().parents[1]


def write_large_eagle3_run(run: Path, seed: int = 0) -> Path:
    """An Automodel EAGLE-3 run whose export writes ~45 MB, the draft of the signal and cache tests: its
    write takes a tenth of a second or more, long enough for a signal to land inside it."""
    from automodel_spec.demo import synthetic

    shape = synthetic.LlamaShape(hidden_size=1024, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
                                 intermediate_size=4096, vocab_size=4096, max_position_embeddings=256)
    tensors = synthetic.eagle3_draft_tensors(shape, 1024, repeat=False, seed=seed)
    synthetic.write_automodel_run(run, synthetic.automodel_eagle3_config(shape, 1024), tensors,
                                  selected_token_ids=list(range(1024)), vocab_size=shape.vocab_size)
    return run


def run_recipe(name: str, *overrides: str, output_dir: Path | None = None) -> int:
    """``recipes/NAME.py OVERRIDES`` in this process: Hydra's compose API, then the recipe's job through
    ``recipe_runtime.run_and_exit``; returns the exit code it would end with.

    As in Hydra's own app examples: the config is composed as the CLI composes it, the job gets the same
    typed ``ServeConfig``, and its messages and errors go to this process's stdout / stderr (``capsys``)
    and ``logging`` (``caplog``). What needs a process (Hydra's launcher and output directories,
    ``--help``, ``--cfg``, multiruns, signals) is tested with subprocesses. ``output_dir`` is the job's
    directory (serve.py asks Hydra for it otherwise).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from automodel_spec.hydra.glue import typed_config
    from automodel_spec.hydra.recipe_runtime import run_and_exit

    job = load_recipe(name)[name]
    extra = [f"output_dir={output_dir}"] if output_dir is not None else []
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        dcfg = compose(config_name=name, overrides=[*overrides, *extra])
    try:  # typed as the recipe types it: every key checked against the schema (the '+key' form too)
        return run_and_exit(lambda: job(typed_config(dcfg)))
    except SystemExit as exc:
        return exc.code


def load_script(path: Path):
    """A script of ``scripts/`` as a module, loaded by its path (scripts are no package) and registered in
    ``sys.modules`` under its file's stem, so that what it defines (dataclasses) finds its module."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@functools.cache
def load_recipe(name: str) -> dict:
    """The globals of ``recipes/NAME.py``, run once as a module that is not the program."""
    return runpy.run_path(str(REPO / "recipes" / f"{name}.py"), run_name=f"recipe_{name}")


def _default_sigint() -> None:
    """Let the child see SIGINT even when pytest was started with it ignored (``cmd &`` in a script)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class ServeProcess:
    """``python recipes/serve.py ...`` in its own session, as a user runs it; output collected line by line
    (and copied to ``log_path`` when given). ``env`` replaces the environment (default: inherited)."""

    def __init__(self, args: list[str], *, cwd: Path, env: dict | None = None, log_path: Path | None = None):
        cwd.mkdir(parents=True, exist_ok=True)
        self.lines: list[str] = []
        self.log_path = log_path
        full_env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, str(REPO / "recipes" / "serve.py"), *args], cwd=cwd,
                                     env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                     preexec_fn=_default_sigint)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        log = open(self.log_path, "w") if self.log_path else None
        try:
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                if log:
                    log.write(line)
                    log.flush()
        finally:
            if log:
                log.close()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: re.Pattern | str, timeout: float = 30) -> re.Match:
        pattern = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            while seen < len(self.lines):
                m = pattern.search(self.lines[seen])
                seen += 1
                if m:
                    return m
            if self.proc.poll() is not None:
                self._reader.join(timeout=5)
                if seen >= len(self.lines):
                    raise AssertionError(f"serve.py exited with {self.proc.returncode} before "
                                         f"{pattern.pattern!r}:\n{self.output[-4000:]}")
            time.sleep(0.05)
        raise AssertionError(f"no {pattern.pattern!r} within {timeout}s:\n{self.output[-4000:]}")

    def finish(self, timeout: float = 30) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def signal(self, sig: int, timeout: float = 30) -> int:
        """Signal serve.py alone (its server runs in a session of its own); return its exit code."""
        self.proc.send_signal(sig)
        return self.finish(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)


def greedy_tokens(target, ids: list[int], n: int) -> list[int]:
    """The ``n`` tokens a transformers model generates greedily after ``ids``, one full forward pass each
    (no cache, no batching): the plain decode the references are held against."""
    import torch

    seq = list(ids)
    with torch.no_grad():
        for _ in range(n):
            seq.append(int(target(torch.tensor([seq])).logits[0, -1].argmax()))
    return seq[len(ids):]
