"""What the recipes share: turning library errors into messages and exit codes, Hydra-aware."""

from __future__ import annotations

import sys
import traceback

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from automodel_spec.errors import SpecError


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
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        code = 130
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
