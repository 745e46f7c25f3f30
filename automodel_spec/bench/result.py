"""The typed result of a benchmark point: what ``metrics.json`` holds, written by the job, read by every reader.

One set of dataclasses: ``PointResult`` (one server, one setting) holds ``LevelResult`` per level
(temperature x concurrency), each with ``CategoryResult`` per prompt category. The speculative setting
appears twice under two names: ``requested`` (what the configuration asked for, draft tokens derived)
and ``effective`` (what the server reported it uses, read back from ``/server_info``).

Files carry ``schema`` (``SCHEMA_VERSION``; a file without one was written by schema 2, before this
module). Another version, an unknown key or a missing one is refused with a ``ResultSchemaError``
naming the file and the key, never silently dropped.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from automodel_spec.config.sglang_options import INFO_SPEC
from automodel_spec.errors import SpecError

SCHEMA_VERSION = 3
METRICS = "metrics.json"  # a point's result file, in its directory
MAX_RESULT_BYTES = 64 << 20  # a result of many levels and categories is tens of kilobytes
STATUSES = ("ok", "invalid", "failed")


class ResultSchemaError(SpecError):
    """A ``metrics.json`` (or summary CSV) this version cannot read."""


@dataclass
class SpecSettings:
    """A speculative setting: steps / topk / draft tokens, and SGLang's adaptive mode.

    ``None`` means not set (requested) or not reported (effective).
    """

    num_steps: int | None = None
    topk: int | None = None
    num_draft_tokens: int | None = None
    adaptive: bool = False
    adaptive_config: str | None = None

    def label(self) -> str:
        """``7/1/8``, ``adaptive 7/1/8`` or ``auto`` (nothing set)."""
        if self.num_steps is None and not self.adaptive:
            return "auto"
        core = f"{_i(self.num_steps)}/{_i(self.topk)}/{_i(self.num_draft_tokens)}"
        return f"adaptive {core}" if self.adaptive else core


@dataclass
class CategoryResult:
    """Acceptance of one prompt category at one level."""

    requests: int
    output_tokens: int
    verify_steps: int
    accept_length: float | None = None
    accept_length_sem: float | None = None
    request_tok_per_s: float | None = None


@dataclass
class LevelResult:
    """One level (temperature x concurrency) of one point; each field's meaning is written beside it."""

    temperature: float
    concurrency: int
    requests: int = 0
    failed_requests: int = 0
    output_tokens: int = 0
    wall_s: float = 0.0
    """Wall time of the level's requests, first sent to last answered."""
    output_tok_per_s: float | None = None
    """``output_tokens / wall_s``: what the sweep ranks by."""
    request_tok_per_s: float | None = None
    request_tok_per_s_sem: float | None = None
    """Mean tokens/s of a single request, and its standard error over the requests."""
    latency_p50_s: float | None = None
    latency_p90_s: float | None = None
    latency_p99_s: float | None = None
    tpot_s: float | None = None
    """Mean latency per output token, prefill included (``latency_s / completion_tokens`` of each request)."""
    streamed: bool = False
    """The requests were streamed: the latencies below were measured from their chunks."""
    ttft_p50_s: float | None = None
    ttft_p90_s: float | None = None
    ttft_p99_s: float | None = None
    """Time to first token: from a request's send to its first chunk carrying a token."""
    itl_p50_s: float | None = None
    itl_p90_s: float | None = None
    itl_p99_s: float | None = None
    """Inter-token latency between chunks: the gaps between a request's consecutive chunks, over all the
    level's requests. Under speculation a chunk carries a verify round's tokens, so gaps are fewer and longer."""
    itl_token_p50_s: float | None = None
    itl_token_p90_s: float | None = None
    itl_token_p99_s: float | None = None
    """Inter-token latency per output token: each gap divided by the tokens of the chunk it ended, counted
    once per token."""
    tpot_p50_s: float | None = None
    tpot_p90_s: float | None = None
    tpot_p99_s: float | None = None
    """Time per output token after the first, per request: ``(latency - ttft) / (completion_tokens - 1)``."""
    request_rate: float | None = None
    """An open-loop level: the Poisson arrival rate asked for (requests/s); ``concurrency`` is then its cap on
    requests in flight (0: none). ``None``: a closed loop of ``concurrency`` requests in flight."""
    achieved_rate_rps: float | None = None
    """Requests sent a second over the arrivals' span (open loop: below ``request_rate`` when the cap held them)."""
    throughput_rps: float | None = None
    """Requests answered a second (``requests - failed_requests`` over ``wall_s``)."""
    unsent_requests: int = 0
    queue_p99_s: float | None = None
    """Open loop: requests never sent (still waiting for a place under the cap when ``bench.duration_s`` ran
    out), and the p99 of the waits in the client before a request was sent."""
    wait_growth_s: float | None = None
    saturated: bool | None = None
    """Open loop: how much longer the last third of the arrivals waited for their first token (client queue
    included) than the first third (medians), and whether the queue grew without bound: requests left
    unsent, or ``wait_growth_s`` above the first third's median latency (``bench.metrics.saturation``)."""
    good_requests: int | None = None
    goodput_rps: float | None = None
    slo_met: bool | None = None
    slo_missed: list[str] | None = None
    baseline_goodput_rps: float | None = None
    """With ``bench.slo`` set: requests within every goal, their number a second of ``wall_s``, whether the level
    met the goals (p99s within the bounds, no request failed, not saturated) and, if not, what it missed; the
    no-speculation baseline's goodput at the same level where it met the goals."""
    phase: int | None = None
    """A phased load (``bench.phases``): the phase's place (1, 2, ...), 0 for the whole run."""
    phase_load: str | None = None
    """The phase as given (``c8``, ``r2``); the whole run: the phases joined (``c1 -> c8 -> c1``)."""
    verify_steps: int = 0
    accept_length: float | None = None
    accept_length_sem: float | None = None
    """Completion tokens per verify step over the level's requests; standard error over the requests
    (settings within a few of it are not told apart by this workload)."""
    acceptance_rate: float | None = None
    """Share of drafted positions accepted, ``(accept_length - 1) / num_steps``."""
    server_accept_length: float | None = None
    """The server's own running average (``avg_spec_accept_length`` of ``/server_info``)."""
    baseline_tok_per_s: float | None = None
    speedup: float | None = None
    """``output_tok_per_s`` over the shared no-speculation baseline's at the same level."""
    accept_histogram: list[int] | None = None
    histogram_requests: int = 0
    """``accept_histogram[k]``: verify rounds that accepted ``k`` drafted tokens (the bonus token not
    counted), summed over the ``histogram_requests`` requests that reported one (SGLang's
    ``spec_correct_drafts_histogram``)."""
    by_category: dict[str, CategoryResult] = field(default_factory=dict)
    """Acceptance of each prompt category (a prompt's ``category``)."""
    reference_accept_length: float | None = None
    """The reference accept length of the draft over this level's prompts (``automodel_spec.bench.reference``:
    the exported draft as SGLang's loader reads it, SGLang's tree and verify rules, no SGLang)."""
    reference_kind: str | None = None
    reference_interval: list[float] | None = None
    """``exact`` (temperature 0, chain or tree), ``interval`` (temperature > 0: ``reference_interval`` is
    where one served run lies, 99%; ``reference_accept_length`` its expected value) or ``bound`` (a tree
    computed as its chain, its size unknown)."""
    served_as_trained: bool | None = None
    reference_verdict: str | None = None
    """``accept_length`` within 5% of the reference, or not below its interval (``reference.verdict``),
    and the sentence shown; ``None`` where no reference was computed."""
    reference_histogram: list[int] | None = None
    served_survival: list[float] | None = None
    reference_survival: list[float] | None = None
    histogram_distance: float | None = None
    depths_as_trained: bool | None = None
    depth_verdict: str | None = None
    """Per depth: the reference's rounds by drafts accepted over this level's prompts; the share of
    rounds that accepted at least ``d`` drafts (``[d - 1]``), served and reference; the total variation
    distance of the two histograms; whether no depth falls short of the reference's
    (``accept_depths.depth_verdict``) and the sentence shown. ``None`` without both histograms."""
    trained_survival: list[float] | None = None
    trained_depths_ok: bool | None = None
    trained_depth_verdict: str | None = None
    """Chains at temperature 0, where the training output records it (``trained_depths``): training's
    survival per depth, whether the reference reaches it at every depth (``accept_depths.trained_depth_verdict``:
    a warning, the data differ) and the sentence shown."""
    lossless_compared: int = 0
    lossless_identical: int = 0
    lossless_first_difference: int | None = None
    """Temperature 0: requests whose output tokens were compared with the no-speculation baseline's
    (same prompt, same level), how many were identical, and the earliest output position that
    differed in any of them (``None``: none differed)."""

    @property
    def key(self) -> str:
        return level_key(self.temperature, self.concurrency, request_rate=self.request_rate, phase=self.phase)


@dataclass
class ReferenceSummary:
    """The reference accept length of a point's draft (``automodel_spec.bench.reference``).

    Attributes:
        status: ``ok`` (computed), ``skipped`` (``reason`` says why: too costly for ``bench.reference``
            auto, no temperature-0 level, no local target, ...) or ``failed`` (``reason``: the error).
        accept_length: over the largest level's prompt set; each level has its own in ``levels``.
        histogram: verify rounds by drafted tokens accepted (``[k]``: ``k`` accepted).
        exact: ``kind == "exact"``.
        kind: ``exact``, ``interval`` or ``bound`` (``ReferenceResult.kind``) of the computation above.
        by_temperature: every computation of the point, by temperature (``"0"``, ``"0.7"``): its kind,
            accept length, interval, histogram and seconds.
        problems: what SGLang would serve differently from the export (weights it skips or leaves
            random, extra layers, a missing hot-token map); any of them fails the verdict.
        aux_layers: the target layers whose inputs the draft reads (after SGLang's ``+1``).
    """

    status: str
    reason: str | None = None
    accept_length: float | None = None
    histogram: list[int] | None = None
    num_steps: int | None = None
    topk: int | None = None
    exact: bool | None = None
    problems: list[str] = field(default_factory=list)
    aux_layers: list[int] = field(default_factory=list)
    device: str | None = None
    seconds: float | None = None
    kind: str | None = None
    num_draft_tokens: int | None = None
    by_temperature: dict[str, dict] = field(default_factory=dict)


@dataclass
class PointResult:
    """One benchmark point: one server, one setting, every level (``metrics.json``).

    Attributes:
        status: ``ok`` (measured), ``invalid`` (a setting SGLang would refuse; ``reason`` says why)
            or ``failed`` (``error`` says why; a re-run measures it again).
        key: what makes two points the same measurement (``bench.job.point_key``).
        algorithm: ``--speculative-algorithm``; ``None`` for the no-speculation baseline.
        requested: the setting the configuration asked for.
        effective: the setting the server reported it uses (it may change what was asked for).
        server_settings: the other server settings read back (attention backend, memory fraction, ...).
        bench: the workload as configured (``BenchConfig`` fields).
        reference: the draft's reference accept length (``bench.reference``), ``None`` when not asked.
        target_content, draft_content: what the target's files and the draft's export held (their content
            keys; ``None`` for a hub id or a result written before they were recorded): a sweep ranks only
            the points of one pair, on one model of card (``cards``), one SGLang release and one prompts
            file's content (``sweep.rows.collect_rows``).
        sglang_installed: the SGLang release that served it (``None``: unknown, or a result written before).
        prompts_content: the digest of the prompts file it read (``workload.prompts_content_key``).
        gpu: the host's GPUs when it was measured, each ``"NAME, UUID"`` (``None``: no ``nvidia-smi``).
    """

    status: str
    key: str | None = None
    algorithm: str | None = None
    requested: SpecSettings = field(default_factory=SpecSettings)
    effective: SpecSettings | None = None
    server_settings: dict[str, Any] = field(default_factory=dict)
    bench: dict[str, Any] = field(default_factory=dict)
    target: str | None = None
    draft: str | None = None
    target_content: str | None = None
    draft_content: str | None = None
    sglang_installed: str | None = None
    prompts_content: str | None = None
    started: str | None = None
    levels: dict[str, LevelResult] = field(default_factory=dict)
    boot_s: float | None = None
    gpu_seconds: float | None = None
    gpu: list[str] | None = None
    gpus: list[str] | None = None
    other_gpu_processes: list[str] = field(default_factory=list)
    idle_servers: int = 0  # servers of other points idle on the GPU while this one measured (servers_per_gpu)
    server_log: str | None = None
    baseline_dir: str | None = None
    reference: ReferenceSummary | None = None
    reason: str | None = None
    error: str | None = None
    traceback: str | None = None
    schema: int = SCHEMA_VERSION

    @property
    def setting(self) -> SpecSettings:
        """What the server ran: the effective setting where it was read back, else the requested one."""
        eff = self.effective
        if eff is not None and eff.num_steps is not None:
            return eff
        return self.requested

    @property
    def cards(self) -> list[str] | None:
        """The models of the GPUs it was measured beside (``card_models`` of ``gpu``)."""
        return card_models(self.gpu)

    def level(self, temperature: float, concurrency: int, request_rate: float | None = None) -> LevelResult | None:
        return self.levels.get(level_key(temperature, concurrency, request_rate=request_rate))

    def to_dict(self) -> dict:
        return asdict(self)


def card_models(gpus: list[str] | None) -> list[str] | None:
    """The models of ``gpus`` as ``PointResult.gpu`` records them (``"NAME, UUID"``), without the UUIDs: another
    card of the same model measures alike. Each once, sorted; ``None`` where none is known."""
    return sorted({g.rsplit(", ", 1)[0] for g in gpus}) if gpus else None


def level_key(temperature: float, concurrency: int, *, request_rate: float | None = None,
              phase: int | None = None) -> str:
    """The key of one level in ``metrics.json``.

    ``T0_c1``, ``T5.5_c8`` (closed loop); ``T0_r2.5``, ``T0_r2.5_c4`` (open loop, capped at 4 in flight);
    ``T0_p2_c8``, ``T0_p3_r2`` (phase 2 and 3 of a phased load), ``T0_phased`` (the whole phased run).
    """
    if phase == 0:
        return f"T{temperature:g}_phased"
    load = f"r{request_rate:g}" + (f"_c{concurrency}" if concurrency else "") if request_rate is not None \
        else f"c{concurrency}"
    return f"T{temperature:g}_p{phase}_{load}" if phase is not None else f"T{temperature:g}_{load}"


def write_point(path: Path, result: PointResult) -> None:
    """Write ``result`` to ``path`` atomically (a reader never sees half a file)."""
    from automodel_spec.io.atomic_write import write_json_atomically

    write_json_atomically(Path(path), json_safe(result.to_dict()))


def read_point(path: Path) -> PointResult:
    """Read a ``metrics.json`` of this schema.

    Raises:
        ResultSchemaError: not JSON, a newer or unknown schema, an unknown or missing key.
    """
    path = Path(path)
    if path.is_dir():
        raise ResultSchemaError(f"{path}: is a directory, not a benchmark result file")
    if path.exists() and not path.is_file():  # a fifo would block the reader for ever
        raise ResultSchemaError(f"{path}: is not a regular file (a fifo, socket or device)")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ResultSchemaError(f"{path}: cannot read a benchmark result: {exc.strerror or exc}") from exc
    if size > MAX_RESULT_BYTES:
        raise ResultSchemaError(f"{path}: holds {size:,} bytes, more than any benchmark result "
                                f"({MAX_RESULT_BYTES >> 20} MiB at most): not a file this project wrote")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultSchemaError(f"{path}: cannot read a benchmark result: {getattr(exc, 'strerror', None) or exc}") from exc
    if not text.strip():
        raise ResultSchemaError(f"{path}: is empty (a write cut short, or a damaged disk)")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ResultSchemaError(f"{path}: is not valid JSON ({exc}): truncated or damaged") from exc
    except RecursionError as exc:
        raise ResultSchemaError(f"{path}: nests too deeply to be a benchmark result") from exc
    return point_from_dict(data, str(path))


def point_from_dict(data: Any, where: str) -> PointResult:
    """A ``PointResult`` from its JSON form (``where`` names it in errors)."""
    if not isinstance(data, dict):
        raise ResultSchemaError(f"{where}: a benchmark result is a JSON object, got {type(data).__name__}.")
    version = data.get("schema", 2)  # schema 2 wrote none
    if version != SCHEMA_VERSION:
        raise ResultSchemaError(
            f"{where}: schema {version!r} is not one this automodel-spec reads ({SCHEMA_VERSION}); "
            "it was written by another version: summarize it with that version, or measure the point again.")
    d = _check_keys(PointResult, data, where)
    if d["status"] not in STATUSES:
        raise ResultSchemaError(f"{where}: status {d['status']!r} is not one of {', '.join(STATUSES)}.")
    d["requested"] = SpecSettings(**_check_keys(SpecSettings, d.get("requested") or {}, f"{where}: requested"))
    if d.get("effective") is not None:
        d["effective"] = SpecSettings(**_check_keys(SpecSettings, d["effective"], f"{where}: effective"))
    d["levels"] = {str(k): _level(v, f"{where}: levels.{k}") for k, v in (d.get("levels") or {}).items()}
    if d.get("reference") is not None:
        d["reference"] = ReferenceSummary(**_check_keys(ReferenceSummary, d["reference"], f"{where}: reference"))
    return PointResult(**d)


def _level(data: Any, where: str) -> LevelResult:
    if not isinstance(data, dict):
        raise ResultSchemaError(f"{where}: a level is a JSON object.")
    d = _check_keys(LevelResult, data, where)
    d["by_category"] = {k: CategoryResult(**_check_keys(CategoryResult, v, f"{where}.by_category.{k}"))
                        for k, v in (d.get("by_category") or {}).items()}
    return LevelResult(**d)


def _check_keys(cls, data: dict, where: str) -> dict:
    """``data`` when its keys are ``cls``'s fields: unknown keys and missing required ones are refused."""
    if not isinstance(data, dict):
        raise ResultSchemaError(f"{where}: expected a JSON object for {cls.__name__}.")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ResultSchemaError(f"{where}: unknown key(s) {', '.join(unknown)} for {cls.__name__} (schema "
                                f"{SCHEMA_VERSION}); the file was written by another version or edited by hand.")
    required = [f.name for f in fields(cls) if _required(f)]
    missing = [n for n in required if n not in data]
    if missing:
        raise ResultSchemaError(f"{where}: missing key(s) {', '.join(missing)} for {cls.__name__}.")
    for f in fields(cls):
        if f.name in data:
            problem = _type_problem(str(f.type), data[f.name])
            if problem:
                raise ResultSchemaError(f"{where}: {f.name}={_short(data[f.name])} {problem} (the file was damaged "
                                        "or edited by hand).")
    return dict(data)


def _type_problem(annotation: str, value: Any) -> str | None:
    """Why ``value`` is not of a field's type (its annotation's text, as ``from __future__`` keeps it),
    or ``None`` when it is. A nested result (``SpecSettings``, ``dict[str, LevelResult]``) must be an object
    here; its own fields are checked where it is built."""
    kinds = [k.strip() for k in annotation.split("|")]
    if value is None:
        return None if "None" in kinds else "is null where a value is required"
    wanted = [k for k in kinds if k != "None"]
    for kind in wanted:
        if kind in ("int", "float") and isinstance(value, (int, float)) and not isinstance(value, bool) and \
                (kind == "float" or isinstance(value, int)):
            if isinstance(value, float) and not math.isfinite(value):
                return "is not a finite number"
            return None
        if kind == "bool" and isinstance(value, bool):
            return None
        if kind == "str" and isinstance(value, str):
            return None
        if kind.startswith("list[") and isinstance(value, list):
            item = kind[5:-1]
            if item == "Any" or all(_type_problem(item, v) is None and v is not None for v in value):
                return None
            return f"is not a list of {item}"
        if (kind.startswith("dict[") or kind[:1].isupper()) and kind != "Any" and isinstance(value, dict):
            return None
        if kind == "Any":
            return None
    return f"is not {' or '.join(_article(k) for k in wanted)}"


def _article(kind: str) -> str:
    if kind.startswith("dict[") or kind[:1].isupper():
        return "a JSON object"
    if kind.startswith("list["):
        return f"a list of {kind[5:-1]} values"
    return {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "a string"}.get(
        kind, f"a {kind}")


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _required(f) -> bool:
    from dataclasses import MISSING

    return f.default is MISSING and f.default_factory is MISSING


def split_server_settings(info: dict | None) -> tuple[dict | None, dict]:
    """``/server_info`` keys we record -> (effective ``SpecSettings`` as a dict, the other settings)."""
    if not info:
        return None, {}
    eff = {new: info.get(old) for old, new in INFO_SPEC.items() if old in info}
    if "adaptive" in eff:
        eff["adaptive"] = bool(eff["adaptive"])
    rest = {k: v for k, v in info.items() if k not in INFO_SPEC}
    return (eff if eff else None), rest


def json_safe(obj):
    """``obj`` with NaN and infinities as ``None``: JSON has no spelling for them."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_safe(v) for v in obj]
    return obj


def _i(v) -> str:
    return "-" if v is None else str(v)
