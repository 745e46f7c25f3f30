"""What the recipes share: turning library errors into messages and exit codes, Hydra-aware."""

from __future__ import annotations

import re
import shlex
import sys
import traceback

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from automodel_spec.errors import SpecError

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


class Terminated(KeyboardInterrupt):
    """SIGTERM, unwinding like Ctrl-C (cleanup runs) but ending with 143."""


def raise_terminated(signum, frame):
    raise Terminated()


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_and_exit(job, *args):
    """Run ``job(*args)``; report a ``SpecError`` as one clear message with its exit code.

    ``job`` returns an exit code, or ``(code, value)`` where ``value`` is what a sweeper optimizes.
    A single run exits with the job's code. In a multirun, a failure is reported and the sweep
    goes on with the next point; the job's value (or its code) is returned to the sweeper.
    """
    value = None
    try:
        code = job(*args)
        if isinstance(code, tuple):
            code, value = code
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        code = exc.exit_code
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print("terminated" if terminated else "interrupted", file=sys.stderr, flush=True)
        code = 143 if terminated else 130
    except Exception:
        if not in_multirun():
            raise
        traceback.print_exc()
        code = 1
    if code and not in_multirun():
        sys.exit(code)
    if code and in_multirun():
        print(f"job {HydraConfig.get().job.num} failed with code {code}; continuing the sweep", file=sys.stderr)
    if value is not None:
        return value
    # a sweeper that optimizes the return value must score a failed job as the worst, not as its code
    return 0.0 if code and in_multirun() else code
