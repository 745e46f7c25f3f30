"""Keep ``sglang.api_key`` out of what a sweep writes and prints.

A key given literally on the command line (``sglang.api_key=sk-...``) travels through Hydra: into
the launcher's console lines, the sweep's ``multirun.yaml`` and each job's ``.hydra/`` files. The
point directory names leave it out (``exclude_keys`` in ``conf/sweep/``); ``hydra.glue.RedactCallback``
masks it (with ``install_log_filter`` and ``mask_file``) in the console and log lines and in ``multirun.yaml``; ``write_summary`` masks it in the
summaries. Hydra's own per-job ``.hydra/`` files keep what was given (they are how a job is re-run):
pass the key as ``sglang.api_key='${oc.env:SGLANG_API_KEY}'`` and only the interpolation is written.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from automodel_spec.io.atomic_write import write_text_atomically

MASK = "***"
# Shorter keys are masked only where they appear as a key's value, never in free text (a two-letter
# key would mask ordinary words in every log line).
MIN_FREE_TEXT_LEN = 4
# ``api_key: VALUE`` (YAML), ``api_key=VALUE`` (overrides, override_dirname), ``--api-key VALUE``.
_KEYED = re.compile(r"(?P<key>(?:admin_)?api_key\s*[:=]\s*|--api-key[= ])(?P<value>[^\s,'\"\]}]+|'[^']*'|\"[^\"]*\")")
_NOT_SECRET = {"null", "None", "~", "''", '""', MASK, f"'{MASK}'"}


def secrets_of(config) -> list[str]:
    """The literal API keys in a composed config (``sglang.api_key``, ``--api-key`` in extra_args)."""
    sglang = _get(config, "sglang")
    found = [_get(sglang, "api_key")]
    extra = list(_get(sglang, "extra_args") or [])
    for i, arg in enumerate(extra):
        if arg == "--api-key" and i + 1 < len(extra):
            found.append(extra[i + 1])
        elif isinstance(arg, str) and arg.startswith("--api-key="):
            found.append(arg.split("=", 1)[1])
    return sorted({str(s) for s in found if s}, key=len, reverse=True)


def _get(node, key: str):
    """``node[key]`` for dicts, DictConfigs and dataclasses; ``None`` when absent or unresolvable."""
    if node is None:
        return None
    try:
        return node.get(key) if hasattr(node, "get") else getattr(node, key, None)
    except Exception:  # an interpolation that cannot be resolved here (e.g. ${oc.env:...} unset)
        return None


def mask(text: str, secrets: Iterable[str] = (), replacement: str = MASK) -> str:
    """``text`` with every value given to an api_key, and each secret anywhere, replaced.

    Args:
        text: what is about to be written or printed.
        secrets: the literal keys (``secrets_of``); masked wherever they appear.
        replacement: ``***``, or ``'***'`` in YAML (a bare ``*`` starts a YAML alias).
    """
    text = _KEYED.sub(lambda m: _mask_value(m, replacement), text)
    for s in secrets:
        if len(s) >= MIN_FREE_TEXT_LEN:
            text = text.replace(s, replacement)
    return text


def _mask_value(m: re.Match, replacement: str) -> str:
    value = m["value"]
    return m[0] if value in _NOT_SECRET or value.startswith("${") else m["key"] + replacement


def mask_file(path: Path, secrets: Iterable[str] = ()) -> bool:
    """Rewrite ``path`` (YAML or text) with its secrets masked, atomically; ``True`` if it changed."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return False
    masked = mask(text, secrets, replacement=f"'{MASK}'")
    if masked == text:
        return False
    write_text_atomically(path, masked)
    return True


_LOG_SECRETS: list[str] = []


def install_log_filter(secrets: list[str]) -> None:
    """Mask ``secrets`` (and any api_key value) in every log record this process creates from now on.

    A record factory, not a handler filter: Hydra configures logging again when its launcher starts
    and at each job, which replaces the handlers (and any filter on them).
    """
    _LOG_SECRETS[:] = secrets
    if getattr(logging.getLogRecordFactory(), "_automodel_spec_redact", False):
        return
    make_record = logging.getLogRecordFactory()

    def masked_record(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is logging's to report, not ours
            return record
        masked = mask(message, _LOG_SECRETS)
        if masked != message:
            record.msg, record.args = masked, None
        return record

    masked_record._automodel_spec_redact = True
    logging.setLogRecordFactory(masked_record)


class _MaskingStream:
    """A text stream that masks API keys in whatever is written through it."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(mask(text, replacement=f"'{MASK}'"))  # Hydra prints YAML
        return len(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def mask_printed_config(argv: list[str] | None = None) -> None:
    """Under Hydra's ``--cfg``/``-c`` (print the config and exit), mask API keys in what it prints.

    Hydra prints the config itself, before any code of ours runs; the recipes call this first.
    """
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("--cfg", "-c") or a.startswith("--cfg=") for a in args):
        sys.stdout = _MaskingStream(sys.stdout)
