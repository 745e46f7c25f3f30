"""The built-in demo pair: a tiny Llama target and a drafter in the real Automodel layout.

Built locally on first use (a few MB, seconds on a CPU) and cached, so ``python recipes/serve.py``
with no arguments exercises the whole path (resolve, export, launch) without a download. The pair
uses the repeat construction (see ``synthetic``): speculation accepts every drafted token, so a
working setup shows an accept length of num_steps + 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from automodel_spec.demo import synthetic
from automodel_spec.export.eagle_layout import ARCHITECTURE as EAGLE_ARCH
from automodel_spec.export.sealed_dir import remove_dead_temp_dirs, write_sealed_dir

DEMO_VERSION = 1
DEMO_DRAFT_VOCAB = 320  # covers the 259 ids of the byte tokenizer, so every prompt token is "hot"


@dataclass(frozen=True)
class DemoPair:
    target: Path
    draft_run: Path

    def exists(self) -> bool:
        return (self.target / "config.json").is_file() and (self.draft_run / "LATEST").exists()


def demo_pair(cache_dir: Path, architecture: str | None) -> DemoPair:
    """Where the demo pair for this draft architecture lives (nothing is written)."""
    root = Path(cache_dir) / "demo" / f"v{DEMO_VERSION}"
    kind = "eagle" if architecture == EAGLE_ARCH else "eagle3"
    return DemoPair(target=root / "target", draft_run=root / f"{kind}-run")


def ensure_demo_pair(cache_dir: Path, architecture: str | None) -> DemoPair:
    """Build the demo pair if it is not there yet (each directory sealed: a crash leaves nothing behind,
    and what a killed build left is removed by the next one)."""
    pair = demo_pair(cache_dir, architecture)
    if not pair.exists():
        remove_dead_temp_dirs(pair.target.parent)
    if not (pair.target / "config.json").is_file():
        _build(pair.target, lambda d: synthetic.write_target(d, synthetic.TINY, repeat=True))
    if not (pair.draft_run / "LATEST").exists():
        if architecture == EAGLE_ARCH:
            _build(pair.draft_run, _write_eagle_run)
        else:
            _build(pair.draft_run, _write_eagle3_run)
    return pair


def _write_eagle3_run(run_dir: Path) -> None:
    shape = synthetic.TINY
    tensors = synthetic.eagle3_draft_tensors(shape, DEMO_DRAFT_VOCAB, repeat=True)
    synthetic.write_automodel_run(run_dir, synthetic.automodel_eagle3_config(shape, DEMO_DRAFT_VOCAB), tensors,
                                  selected_token_ids=list(range(DEMO_DRAFT_VOCAB)), vocab_size=shape.vocab_size)


def _write_eagle_run(run_dir: Path) -> None:
    shape = synthetic.TINY
    synthetic.write_automodel_run(run_dir, synthetic.automodel_eagle_config(shape),
                                  synthetic.eagle_draft_tensors(shape, repeat=True))


def _build(final: Path, fill) -> None:
    # No lock: two first runs may build the pair at once; the first to finish wins, the other's is dropped.
    write_sealed_dir(final, fill, keep_finished=True)
