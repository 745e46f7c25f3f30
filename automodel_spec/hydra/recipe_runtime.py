"""The recipes' runtime at the Hydra edge: the program's entry, exit codes and messages.

``recipes/serve.py`` and ``recipes/export.py`` are thin Hydra apps over this module: ``main_entry``
runs one as the program (overrides checked, signal handlers installed, exit code), ``run_job`` runs
its job and turns every error into one message and an exit code (``run_and_exit``). The signal
rules themselves are ``signals``'.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shlex
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from automodel_spec.config.schema import ServeConfig
from automodel_spec.errors import SpecError
from automodel_spec.hydra.glue import SCRATCH_ENV, discard_unused_run_dir, typed_config
from automodel_spec.hydra.job_codes import last_sweep_exit_code, record_job_code
from automodel_spec.io.redact import mask_printed_config
from automodel_spec.io.signals import (
    Terminated,
    raise_on_signals,
    raise_signal_seen,
    release_signals,
    restore_default_actions,
)

# Hydra's options that take a value (the value is not an override)
_HYDRA_VALUE_FLAGS = frozenset({"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
                                "--cfg", "-c", "--package", "-p", "--info", "-i", "--shell-completion", "-sc",
                                "--experimental-rerun"})
# what Hydra's override grammar reads only inside quotes: '~' and non-ASCII characters
_QUOTE_ONLY = re.compile(r"~|[^\x00-\x7f]")


def check_override_quoting(args: list[str] | None = None) -> None:
    """Exit 1 with the quoted form when an override holds what Hydra reads only inside quotes.

    Hydra's lexer refuses ``~`` and non-ASCII characters in unquoted values (``draft.path=~/ckpt/run``,
    ``draft.path=/ckpt/ü``) with a bare ``LexerNoViableAltException``; quoted, they are plain strings
    (``'draft.path="~/ckpt/run"'``), and the library expands ``~`` in every path it reads.
    Overrides Hydra parses, or that fail for another reason, are left to Hydra.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = sys.argv[1:] if args is None else args
    parser = None
    fixes = []
    for i, arg in enumerate(args):
        prev = args[i - 1] if i else None
        key, eq, value = arg.partition("=")
        if arg.startswith("-") or prev in _HYDRA_VALUE_FLAGS or not eq or not _QUOTE_ONLY.search(value):
            continue
        parser = parser or OverridesParser.create()
        try:
            parser.parse_override(arg)
        except Exception:
            quote = '"' if '"' not in value else "'"
            fixes.append(f"  {shlex.quote(arg)}  ->  {shlex.quote(f'{key}={quote}{value}{quote}')}")
    if fixes:
        print("error: Hydra's override parser reads '~' and non-ASCII characters only inside quotes; "
              "quote the value, inside the shell's quotes:\n" + "\n".join(fixes),
              file=sys.stderr, flush=True)
        sys.exit(1)


# presets that need a Hydra plugin: the override -> (the plugin's module, its package, our extra)
_PLUGINS = {"launcher=parallel": ("hydra_joblib_launcher", "hydra-joblib-launcher", "parallel"),
            "launcher=slurm": ("hydra_submitit_launcher", "hydra-submitit-launcher", "slurm"),
            "sweep=optuna": ("hydra_optuna_sweeper", "hydra-optuna-sweeper", "optuna")}


def _has_plugin(module: str) -> bool:
    try:  # find_spec of a submodule raises when the namespace package is absent
        return importlib.util.find_spec(f"hydra_plugins.{module}") is not None
    except ModuleNotFoundError:
        return False


def check_plugins(args: list[str] | None = None, has_plugin=_has_plugin) -> None:
    """Exit 2 with the install command when a preset's Hydra plugin is missing (Hydra would only say
    that it found no such launcher or sweeper)."""
    args = sys.argv[1:] if args is None else args
    for arg in args:
        module, package, extra = _PLUGINS.get(arg.lstrip("+"), (None, None, None))
        if module and not has_plugin(module):
            print(f"error: {arg} needs the Hydra plugin {package}, which is not installed: pip install {package} "
                  f"(or pip install -e \".[{extra}]\" in this project)", file=sys.stderr, flush=True)
            sys.exit(2)


# What the recipes print (the plan, the export's notes and path, the error line) is also kept in the
# job's log file: conf/hydra/job_logging gives this logger the file handler only (the console has it).
# Outside a Hydra run it has no handler and goes nowhere else.
_PRINTED = logging.getLogger("automodel_spec.printed")
_PRINTED.propagate = False
_PRINTED.addHandler(logging.NullHandler())


def say(text: str, *, err: bool = False) -> None:
    """Print ``text`` (to stderr with ``err``) and keep it in the job's log file."""
    print(text, file=sys.stderr if err else sys.stdout, flush=True)
    _PRINTED.log(logging.ERROR if text.startswith("error:") else logging.INFO, "%s", text)


def tolerate_any_path() -> None:
    """Print a path whose bytes are not UTF-8 (carried as surrogates) escaped, never fail on it.

    Under a UTF-8 locale Python's stdout is strict: a ``draft.path`` holding byte 0xff ended the run in
    a ``UnicodeEncodeError`` at the first line naming it (C.UTF-8 escapes them itself).
    """
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def in_multirun() -> bool:
    """Whether this job is one point of a Hydra multirun (``-m``)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


BUG_LINE = ("error: this is a bug in automodel-spec, not a problem with your input: please report it with the "
            "command you ran and the traceback below.")


def run_and_exit(job: Callable, *args):
    """Run ``job(*args)``; report a ``SpecError`` as one clear message with its exit code.

    ``job`` returns an exit code, or ``(code, value)`` where ``value`` is what a sweeper optimizes.
    A single run exits with the job's code: 1 bad input or refusal, 2 a missing optional dependency,
    130 / 143 SIGINT / SIGTERM, 1 an unexpected exception (a bug: its traceback is shown after a line
    saying so). In a multirun, a failed job is reported and the sweep goes on with the next point (its
    code is recorded for ``last_sweep_exit_code``); the job's value (or its code) is returned to the sweeper.
    SIGINT / SIGTERM stop the whole sweep.
    """
    global _stopped_said
    _stopped_said = False  # this job's own signal is said by it
    value = None
    try:
        try:
            code = job(*args)
        except Exception as exc:
            raise_signal_seen(exc)  # the signal's own exception, turned into another on its way up
            raise
        if isinstance(code, tuple):
            code, value = code
        if not code:  # a success after a signal: its exception was swallowed on the way
            raise_signal_seen()
    except SpecError as exc:
        say(f"error: {exc}", err=True)
        code = exc.exit_code
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        _say_stopped(terminated)
        if in_multirun():
            raise  # the user stops the sweep, not one point: main_entry exits with 130 / 143
        code = 143 if terminated else 130
    except Exception:
        say(BUG_LINE, err=True)
        traceback.print_exc()
        _PRINTED.error("%s", traceback.format_exc())
        code = 1
    if code and not in_multirun():
        discard_unused_run_dir()  # a failed run that wrote nothing of its own leaves no outputs/DATE/TIME
        sys.exit(code)
    if in_multirun():  # in the sweep directory: jobs may run in other processes (joblib, submitit)
        hc = HydraConfig.get()
        record_job_code(Path(hc.sweep.dir), hc.job.num, code)
    if code and in_multirun():
        say(f"job {HydraConfig.get().job.num} failed with code {code}; continuing the sweep", err=True)
    if value is not None:
        return value
    # a sweeper that optimizes the return value must score a failed job as the worst, not as its code
    return 0.0 if code and in_multirun() else code


_stopped_said = False


def _say_stopped(terminated: bool) -> None:
    """``terminated`` / ``interrupted``, once (a multirun's job says it before the sweep stops)."""
    global _stopped_said
    if not _stopped_said:
        _stopped_said = True
        say("terminated" if terminated else "interrupted", err=True)


def job_output_dir() -> Path:
    """Hydra's directory of this job (``outputs/DATE/TIME``, or the multirun's point directory)."""
    return Path(HydraConfig.get().runtime.output_dir)


def sweep_dir() -> Path:
    """The multirun's directory, shared by its points (``multirun/DATE/TIME``)."""
    return Path(HydraConfig.get().sweep.dir)


def recipe_main(config_path: str, config_name: str) -> Callable:
    """``@hydra.main`` for a recipe: ``config_path`` is relative to the recipe's file, as Hydra reads it."""
    return hydra.main(version_base=None, config_path=config_path, config_name=config_name)


def run_job(job: Callable[[ServeConfig], int | tuple[int, float]], dcfg) -> int | float:
    """A recipe's job on the composed config, typed (every key checked), through ``run_and_exit``."""
    return run_and_exit(lambda: job(typed_config(dcfg)))


def main_entry(main: Callable[[], object]) -> None:
    """Run a recipe's ``@hydra.main`` function as the program: check the overrides, run, exit with its code.

    Both recipes take signals the same way, here: SIGINT raises ``KeyboardInterrupt`` and SIGTERM
    ``Terminated``, so that a job unwinds on either (a server is stopped, a half-written export removed)
    and a parallel launcher's ``Parallel()`` call is interrupted, ending its worker processes and their
    servers instead of leaving them running. Only then are the signals held since the start let in.
    torch and safetensors are imported where a job needs them, with the signals held meanwhile
    (``torch_import.import_torch``): a run that never touches a tensor does not load them.
    """
    tolerate_any_path()
    # a recipe run makes its own print_only sweep dir: one inherited is another run's (a recipe started from a
    # process that composed a print_only multirun); only that run's launcher workers share it, and they are
    # not started through here
    os.environ.pop(SCRATCH_ENV, None)
    mask_printed_config()  # Hydra prints --cfg output itself, before any code of ours runs
    check_override_quoting()
    check_plugins()
    raise_on_signals()
    try:
        release_signals()  # held since the recipe's first import; one that came meanwhile is handled here
        main()
    except KeyboardInterrupt as exc:  # a multirun lets it out of run_and_exit; a signal before the job starts
        terminated = isinstance(exc, Terminated)  # (during Hydra's composition) never reached it
        _say_stopped(terminated)
        discard_unused_run_dir()
        sys.exit(143 if terminated else 130)
    restore_default_actions()  # the work is done: a signal now ends the process by its default action
    sys.exit(last_sweep_exit_code())  # 0 after a single run: it exits from run_and_exit
