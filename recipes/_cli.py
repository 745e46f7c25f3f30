"""What the recipes share: turning library errors into messages and exit codes, Hydra-aware."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import re
import shlex
import signal
import sys
import traceback
from pathlib import Path

from _hold_signals import release_signals
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from automodel_spec.errors import SpecError
from automodel_spec.job_codes import last_sweep_exit_code, record_job_code


def _ship_by_value() -> None:
    """Pickle this module with the task function instead of naming it.

    Launchers that run jobs in fresh processes (submitit: locally or on SLURM nodes) unpickle the
    recipe's task function there, where ``recipes/`` is not on ``sys.path`` and ``_cli`` cannot be
    imported by name. cloudpickle (what they pickle with) then carries this module's code along.
    """
    try:
        import cloudpickle
    except ImportError:  # no launcher that needs it is installed either
        return
    cloudpickle.register_pickle_by_value(sys.modules[__name__])


_ship_by_value()

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


class Terminated(KeyboardInterrupt):
    """SIGTERM, unwinding like Ctrl-C (cleanup runs) but ending with 143."""


# Set once SIGTERM has arrived. Native code that calls back into Python (torch building a tensor while
# safetensors reads a file) can catch the handler's exception and raise another in its place (seen:
# "could not determine the shape of object type 'torch.storage.UntypedStorage'", which the reader
# then reported as a damaged file): whatever the job raises after it, the run ends as terminated.
_terminated = False


def raise_terminated(signum, frame):
    global _terminated
    _terminated = True
    raise Terminated()


# Set once SIGINT has arrived. CPython drops an exception raised inside a weakref callback with only an
# "Exception ignored" message (seen: a Ctrl-C landing in importlib's module-lock callback during an
# import, after which the export ran to its end and exited 0): a job can return normally after a
# signal, and run_and_exit then ends the run as the signal would have.
_interrupted = False


def raise_interrupted(signum, frame):
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt()


def _raise_the_signal_seen(cause: BaseException | None = None) -> None:
    """Raise the exception of a SIGTERM / SIGINT that arrived during the job, whatever became of its own."""
    if _terminated:
        raise Terminated() from cause
    if _interrupted:
        raise KeyboardInterrupt() from cause


# Hydra's options that print and exit without running a job (no job: nothing imports torch)
_PRINT_ONLY_FLAGS = frozenset({"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc"})


def preload_native_modules(args: list[str] | None = None) -> None:
    """Import torch and safetensors now, before a handler that raises on SIGTERM is installed.

    An exception raised by a signal handler while a native extension initializes aborts the
    interpreter (SIGABRT) rather than unwinding; once imported, they are never initialized again.
    A missing one is left to the library, which reports it with its install command (exit 2).
    Skipped when ``args`` (default ``sys.argv[1:]``) hold one of Hydra's options that print and exit
    (``--help``, ``--cfg job``, ...): no job runs, and the import is most of their time (~1.5 s).
    """
    args = sys.argv[1:] if args is None else args
    if any(arg in _PRINT_ONLY_FLAGS for arg in args):
        return
    for name in ("torch", "safetensors.torch"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass


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
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


BUG_LINE = ("error: this is a bug in automodel-spec, not a problem with your input: please report it with the "
            "command you ran and the traceback below.")


def run_and_exit(job, *args):
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
            _raise_the_signal_seen(exc)  # the signal's own exception, turned into another on its way up
            raise
        if isinstance(code, tuple):
            code, value = code
        if not code:  # a success after a signal: its exception was swallowed on the way
            _raise_the_signal_seen()
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
        _discard_unused_run_dir()
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


def _discard_unused_run_dir() -> None:
    """A failed single run that wrote nothing of its own leaves no ``outputs/DATE/TIME`` behind."""
    from automodel_spec.hydra_glue import discard_unused_run_dir

    discard_unused_run_dir()


def main_entry(main) -> None:
    """Run a recipe's ``@hydra.main`` function as the program: check the overrides, run, exit with its code."""
    from automodel_spec.redact import mask_printed_config

    tolerate_any_path()
    mask_printed_config()  # Hydra prints --cfg output itself, before any code of ours runs
    check_override_quoting()
    check_plugins()
    signal.signal(signal.SIGINT, raise_interrupted)  # Python's own handler, but remembered: see _interrupted
    try:
        release_signals()  # held since the recipe's first import; one that came meanwhile is handled here
        main()
    except KeyboardInterrupt as exc:  # a multirun lets it out of run_and_exit; a signal before the job starts
        terminated = isinstance(exc, Terminated)  # (export.py's imports of torch) never reached it
        _say_stopped(terminated)
        _discard_unused_run_dir()
        sys.exit(143 if terminated else 130)
    # the work is done: a signal from now on ends the process by its default action, not by a
    # KeyboardInterrupt traceback from the middle of the interpreter's shutdown
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.exit(last_sweep_exit_code())  # 0 after a single run: it exits from run_and_exit
