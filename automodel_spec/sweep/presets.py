"""The sweep's winners as something to deploy: ``spec`` presets the recipe reads, and SGLang's flags.

Written into ``SWEEP/presets/``:

- ``spec_preset/c<N>.yaml``: the winner at concurrency ``N`` (the setting whose tokens/s, relative to
  the best at each measured temperature, has the highest geometric mean over the temperatures; under
  ``bench.objective=goodput`` its goodput within the goals, among the settings that met them at every
  temperature: a concurrency where none did gets no preset, and the summary names it);
- ``spec_preset/r<R>.yaml``: the same for each open-loop level of ``R`` requests/s (``bench.request_rate``);
- ``spec_preset/best.yaml`` when one setting wins at every concurrency;
- ``spec_preset/adaptive.yaml`` and ``adaptive_config.json`` where the fastest *chain* changes with load:
  SGLang's adaptive mode with one candidate per batch size runs each load's chain (trees cannot be
  encoded: SGLang's adaptive mode is chains only);
- ``sglang_flags.txt``: the same settings as plain ``sglang.launch_server`` flags.

Server settings that differ between the sweep's points (``rows.varied_settings``, e.g. two attention
backends) go into each preset and its flags beside the speculative setting.

Use a preset with ``python recipes/serve.py --config-dir SWEEP/presets +spec_preset=c1 ...``
(``--config-dir`` adds the directory to Hydra's search path; the preset sets ``spec.*``).
"""

from __future__ import annotations

import math
from pathlib import Path

from automodel_spec.config.adaptive import write_adaptive_config
from automodel_spec.config.sglang_options import INFO_SERVER_SETTINGS, known_releases, spelling
from automodel_spec.io.atomic_write import write_text_atomically
from automodel_spec.sweep.ranking import GOODPUT, TOK_PER_S, score
from automodel_spec.sweep.rows import (
    is_auto,
    is_closed_loop,
    is_phase,
    setting_of,
    varied_settings,
)

PRESETS = "presets"


def winners_by_concurrency(rows: list[dict], chains_only: bool = False, objective: str = TOK_PER_S) -> dict[int, dict]:
    """Per concurrency (closed-loop levels), the row (any of its levels) of the winning setting (``winners``)."""
    return winners(rows, lambda r: r["concurrency"] if is_closed_loop(r) else None, chains_only, objective)


def winners_by_rate(rows: list[dict], objective: str = TOK_PER_S) -> dict[str, dict]:
    """Per request rate (open-loop levels, ``r<R>``), the row of the winning setting (``winners``)."""
    return winners(rows, lambda r: f"r{r['request_rate']:g}" if r.get("request_rate") is not None
                   and not is_phase(r) else None, False, objective)


def winners(rows: list[dict], load_of, chains_only: bool = False, objective: str = TOK_PER_S) -> dict:
    """Per load (``load_of(row)``; ``None``: not a level of this kind), the row of the setting with the best
    geometric mean over the temperatures measured at that load of its score relative to the best.

    The score is tokens/s, or under ``goodput`` the goodput within the goals, counted only for settings that
    met the goals at every temperature of that load: a load where none did has no winner (``infeasible``).
    """
    ok = [r for r in rows if r["status"] == "ok" and r.get("output_tok_per_s") and load_of(r) is not None
          and (setting_of(r)[0] is not None or r.get("requested_adaptive"))]
    if chains_only:
        ok = [r for r in ok if setting_of(r)[1] == 1 and not r.get("requested_adaptive")]
    out = {}
    for load in sorted({load_of(r) for r in ok}, key=_load_order):
        mine = [r for r in ok if load_of(r) == load]
        temps = sorted({r["temperature"] for r in mine})
        if objective == GOODPUT:  # every temperature within the goals, or the setting does not qualify here
            failing = {r["point"] for r in mine if not r.get("slo_met") or not r.get("goodput_rps")}
            mine = [r for r in mine if r["point"] not in failing]
        best = {t: max((score(r, objective) for r in mine if r["temperature"] == t), default=0.0) for t in temps}
        scores = {}
        for point in {r["point"] for r in mine}:
            at = {r["temperature"]: r for r in mine if r["point"] == point}
            if set(at) == set(temps) and all(best[t] > 0 for t in temps):
                scores[point] = (math.exp(sum(math.log(score(at[t], objective) / best[t]) for t in temps)
                                          / len(temps)), at[temps[0]])
        if scores:
            point = max(scores, key=lambda p: (scores[p][0], p))
            out[load] = {**scores[point][1], "relative_score": scores[point][0]}
    return out


def infeasible_loads(rows: list[dict], found: dict, load_of) -> list:
    """Loads measured (a setting ran there) where ``winners`` found none: no setting met the goals."""
    measured = {load_of(r) for r in rows if r["status"] == "ok" and load_of(r) is not None
                and (setting_of(r)[0] is not None or r.get("requested_adaptive"))}
    return sorted((m for m in measured if m not in found), key=_load_order)


def _load_order(load) -> float:
    """Concurrencies by number, rates (``r<R>``) by rate."""
    return float(load[1:]) if isinstance(load, str) else float(load)


def write_presets(sweep_dir: Path, rows: list[dict], objective: str = TOK_PER_S) -> list[str]:
    """Write the presets (module docstring); return summary.md's deploy section."""
    winners = winners_by_concurrency(rows, objective=objective)
    by_rate = winners_by_rate(rows, objective)
    if not winners and not by_rate:
        return []
    varied = varied_settings(rows)
    out = (Path(sweep_dir) / PRESETS).resolve()
    (out / "spec_preset").mkdir(parents=True, exist_ok=True)
    what = ("goodput within the service-level goals (`bench.objective=goodput`; only settings that met the goals "
            "at every temperature of a load compete)" if objective == GOODPUT else "tokens/s")
    lines = ["## Deploy", "",
             f"Winner per load (best geometric mean over the temperatures of {what} relative to each "
             "temperature's best; 1.00 = best at every temperature):", ""]
    flags = []
    for c, r in [*winners.items(), *by_rate.items()]:
        name, load = (f"c{c}", f"concurrency {c}") if isinstance(c, int) else (c, f"{c[1:]} requests/s")
        write_text_atomically(out / "spec_preset" / f"{name}.yaml", _preset_yaml(r, f"the winner at {load}", varied))
        flags.append(f"{load}: {' '.join(sglang_flags(r, varied))}")
        lines.append(f"- {load}: `{_label(r, varied)}` (score {r['relative_score']:.2f}): "
                     f"`python recipes/serve.py --config-dir {out} +spec_preset={name} ...`")
    closed_load = lambda r: r["concurrency"] if is_closed_loop(r) else None  # noqa: E731
    missing = infeasible_loads(rows, winners, closed_load) + infeasible_loads(
        rows, by_rate, lambda r: f"r{r['request_rate']:g}" if r.get("request_rate") is not None and not is_phase(r)
        else None)
    if missing:
        lines.append("- no setting met the goals at every temperature (infeasible, no preset): "
                     + ", ".join(f"concurrency {m}" if isinstance(m, int) else f"{m[1:]} requests/s" for m in missing))
    labels = {_label(r, varied) for r in winners.values()}
    lines.append("")
    if len(labels) == 1 and not missing:
        write_text_atomically(out / "spec_preset" / "best.yaml",
                              _preset_yaml(next(iter(winners.values())), "the winner at every concurrency", varied))
        lines.append(f"One setting wins at every concurrency: `{labels.pop()}` (`+spec_preset=best`).")
    elif len(labels) > 1:
        lines.append("The winner changes with load: " + ", ".join(f"c={c}: {_label(r, varied)}" for c, r in winners.items())
                     + ". One server runs one fixed setting.")
    chains = winners_by_concurrency(rows, chains_only=True, objective=objective)
    chain_steps = {c: setting_of(r)[0] for c, r in chains.items()}
    if len(set(chain_steps.values())) > 1:
        low = min(chain_steps)
        slots = {(1 if c == low else c): s for c, s in chain_steps.items()}
        cfg = write_adaptive_config(out / "adaptive_config.json", slots)
        algo = next(iter(chains.values())).get("algorithm") or "EAGLE3"
        write_text_atomically(out / "spec_preset" / "adaptive.yaml", _adaptive_yaml(slots[1], cfg))
        flags.append(f"adaptive ({'best' if objective == GOODPUT else 'fastest'} chain per load): --speculative-algorithm {algo} --speculative-num-steps "
                     f"{slots[1]} --speculative-eagle-topk 1 --speculative-num-draft-tokens {slots[1] + 1} "
                     f"--speculative-adaptive --speculative-adaptive-config {cfg}")
        trees = any(setting_of(r)[1] != 1 for r in winners.values())
        best = "chain with the most goodput within the goals" if objective == GOODPUT else "fastest chain"
        lines += ["", f"The {best} changes with load ({', '.join(f'c={c}: {s} steps' for c, s in chain_steps.items())}): "
                  f"`+spec_preset=adaptive` runs SGLang's adaptive mode with `{cfg}` (one candidate per batch size, "
                  "SGLang >= 0.5.13" + (", 0 steps needs 0.5.14" if 0 in slots.values() else "") + ")."
                  + (" Trees won at some load; adaptive mode encodes chains only, so it trades their gain for "
                     "switching: compare its measured point (spec.adaptive=true spec.adaptive_config=...) first."
                     if trees else "")]
    write_text_atomically(out / "sglang_flags.txt", "\n".join(flags) + "\n")
    lines += ["", f"Plain SGLang flags: `{out / 'sglang_flags.txt'}`. (`--config-dir` adds the presets to Hydra's "
              "search path; give it before the overrides.)", ""]
    return lines


def sglang_flags(row: dict, varied: list[str] = ()) -> list[str]:
    """The ``sglang.launch_server`` flags of a row's setting (what the server ran), with the ``varied``
    server settings."""
    algo = row.get("algorithm") or "EAGLE3"
    steps, topk, tokens = setting_of(row)
    out = ["--speculative-algorithm", algo]
    if steps is not None:
        out += ["--speculative-num-steps", str(steps), "--speculative-eagle-topk", str(topk),
                "--speculative-num-draft-tokens", str(tokens)]
    if row.get("requested_adaptive"):
        out.append("--speculative-adaptive")
        if row.get("requested_adaptive_config"):
            out += ["--speculative-adaptive-config", row["requested_adaptive_config"]]
    newest = known_releases()[-1]
    for c in varied:
        if row.get(c) is not None:
            out += [spelling(INFO_SERVER_SETTINGS[c], newest), str(row[c])]
    return out


def _preset_yaml(row: dict, what: str, varied: list[str]) -> str:
    steps, topk, tokens = setting_of(row)
    goodput = f", goodput {row['goodput_rps']:.2f} req/s within the goals" if row.get("slo_met") else ""
    body = [f"# @package _global_\n# {what}: {_label(row, varied)}, measured {row['output_tok_per_s']:.1f} tok/s{goodput} "
            f"at temperature {row['temperature']:g}; written by the sweep summary\n", "spec:\n"]
    if row.get("requested_adaptive"):
        body.append("  adaptive: true\n")
        if row.get("requested_adaptive_config"):
            body.append(f"  adaptive_config: {row['requested_adaptive_config']}\n")
    if steps is not None:
        body += [f"  num_steps: {steps}\n", f"  topk: {topk}\n", f"  num_draft_tokens: {tokens}\n"]
    server = [c for c in varied if row.get(c) is not None]
    if server:
        body += ["sglang:\n"] + [f"  {INFO_SERVER_SETTINGS[c].split('.', 1)[1]}: {row[c]}\n" for c in server]
    return "".join(body)


def _adaptive_yaml(start_steps: int, config: Path) -> str:
    return ("# @package _global_\n# SGLang's adaptive mode running the winning chain of each load (written by the "
            "sweep summary)\nspec:\n  adaptive: true\n"
            f"  adaptive_config: {config}\n  num_steps: {start_steps}\n  topk: 1\n"
            f"  num_draft_tokens: {start_steps + 1}\n")


def _label(row: dict, varied: list[str] = ()) -> str:
    steps, topk, tokens = setting_of(row)
    server = "".join(f", {row[c]}" for c in varied if row.get(c) is not None)
    if row.get("requested_adaptive"):
        return "adaptive" + (f" from {steps}/{topk}/{tokens}" if steps is not None else "") + server
    return f"{steps}/{topk}/{tokens}" + (" (SGLang's choice)" if is_auto(row) else "") + server
