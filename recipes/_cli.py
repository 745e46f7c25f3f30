"""What the recipes share: turning library errors into messages and exit codes, Hydra-aware."""

from __future__ import annotations

import sys
import traceback

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from automodel_spec.errors import SpecError


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_and_exit(job, *args) -> int:
    """Run ``job(*args)``; report a ``SpecError`` as one clear message with its exit code.

    A single run exits with the job's code. In a multirun, the job's failure is reported and
    returned so the sweep goes on with the next point.
    """
    try:
        code = job(*args)
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
    return code
