#!/usr/bin/env python3
"""Rebuild (or check) the fixtures that real producer packages write: tests/fixtures/producers/<producer>/.

Each producer's generator (scripts/producer_fixtures/<producer>_fixtures.py) runs with the Python of a
virtual environment that has that producer installed; the project's own environment never gets them.

    # use existing venvs: one flag each, or one directory holding am/, sf/, sp/ (or automodel/, ...)
    python scripts/make_producer_fixtures.py --venv-automodel /tmp/prod/am
    AUTOMODEL_SPEC_PRODUCER_VENVS=/tmp/prod python scripts/make_producer_fixtures.py --only automodel

    # create the missing venvs (under AUTOMODEL_SPEC_PRODUCER_VENVS, else /tmp/automodel-spec-producers)
    python scripts/make_producer_fixtures.py --setup

    # rebuild into a temp dir and compare sha256 with the committed files (exit 1 on a real difference)
    python scripts/make_producer_fixtures.py --check

A build replaces tests/fixtures/producers/<producer>/ in one rename, so a failed run leaves the committed
fixtures as they were. A producer whose generator script does not exist yet is skipped with a note.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "producers"
VENVS_ENV = "AUTOMODEL_SPEC_PRODUCER_VENVS"
DEFAULT_VENV_ROOT = Path("/tmp/automodel-spec-producers")


@dataclass(frozen=True)
class Producer:
    """A package whose own code writes fixtures.

    Attributes:
        name: the key used by ``--only`` and the fixture directory name.
        short: the venv's directory name under ``$AUTOMODEL_SPEC_PRODUCER_VENVS``.
        requirement: the pinned pip requirement; the venv must have exactly this version.
        script: the generator, relative to the repository root.
    """

    name: str
    short: str
    requirement: str
    script: str

    @property
    def dist(self) -> str:
        return self.requirement.split("==")[0]

    @property
    def version(self) -> str:
        return self.requirement.split("==")[1]


PRODUCERS = {
    p.name: p
    for p in (
        Producer("automodel", "am", "nemo-automodel==0.7.0", "scripts/producer_fixtures/automodel_fixtures.py"),
        Producer("specforge", "sf", "specforge==0.2.0", "scripts/producer_fixtures/specforge_fixtures.py"),
        Producer("speculators", "sp", "speculators==0.9.0", "scripts/producer_fixtures/speculators_fixtures.py"),
    )
}


class DriverError(Exception):
    """A problem the user fixes (a missing venv, a wrong version, a failed generator)."""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = args.only or list(PRODUCERS)
    failures = 0
    for name in names:
        producer = PRODUCERS[name]
        if not (REPO / producer.script).is_file():
            if args.only:
                print(f"[{name}] {producer.script} does not exist", file=sys.stderr)
                failures += 1
            else:
                print(f"[{name}] skipped: {producer.script} is not written yet")
            continue
        try:
            python = resolve_python(producer, getattr(args, f"venv_{name}"), args.setup, args.setup_python)
            failures += check(producer, python) if args.check else build(producer, python)
        except DriverError as exc:
            print(f"[{name}] {exc}", file=sys.stderr)
            failures += 1
    return 1 if failures else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=sorted(PRODUCERS), help="this producer only (repeatable)")
    ap.add_argument("--check", action="store_true",
                    help="rebuild into a temp dir and compare with the committed fixtures; change nothing")
    ap.add_argument("--setup", action="store_true", help="create a missing venv and pip install the producer")
    ap.add_argument("--setup-python", default=sys.executable,
                    help="interpreter for --setup venvs (default: this one)")
    for p in PRODUCERS.values():
        ap.add_argument(f"--venv-{p.name}", type=Path, metavar="PATH", help=f"venv with {p.requirement}")
    return ap.parse_args(argv)


# ---------------------------------------------------------------------------------------------- venvs


def resolve_python(producer: Producer, flag: Path | None, setup: bool, setup_python: str) -> Path:
    """The producer venv's Python: ``--venv-<name>``, else ``$AUTOMODEL_SPEC_PRODUCER_VENVS/<short|name>``.

    Raises:
        DriverError: no venv (and no ``--setup``), or the venv holds another version of the producer.
    """
    venv = flag or _venv_from_root(producer)
    if venv is None or not _python_of(venv).is_file():
        if not setup:
            raise DriverError(missing_venv_message(producer, venv))
        venv = venv or (Path(os.environ.get(VENVS_ENV) or DEFAULT_VENV_ROOT) / producer.short)
        create_venv(producer, venv, setup_python)
    python = _python_of(venv)
    installed = _installed_version(python, producer.dist)
    if installed != producer.version:
        raise DriverError(
            f"{venv}: {producer.dist} is {installed or 'not installed'}, the fixtures pin {producer.version}. "
            f"Fix: {python} -m pip install '{producer.requirement}'"
        )
    return python


def _venv_from_root(producer: Producer) -> Path | None:
    root = os.environ.get(VENVS_ENV)
    if not root:
        return None
    for sub in (producer.short, producer.name):
        if _python_of(Path(root) / sub).is_file():
            return Path(root) / sub
    return Path(root) / producer.short


def _python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


def missing_venv_message(producer: Producer, venv: Path | None) -> str:
    where = f"no Python at {_python_of(venv)}" if venv else "no venv given"
    return (
        f"{where}. Pass --venv-{producer.name} PATH, or set {VENVS_ENV}=DIR holding {producer.short}/, "
        f"or add --setup to create one. By hand: python3 -m venv PATH && "
        f"PATH/bin/pip install '{producer.requirement}'"
    )


def create_venv(producer: Producer, venv: Path, setup_python: str) -> None:
    """``-m venv`` + pip, so the machine's pip configuration (find-links, indexes, constraints) applies."""
    print(f"[{producer.name}] creating {venv} with {producer.requirement}", flush=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = [[setup_python, "-m", "venv", str(venv)],
             [str(_python_of(venv)), "-m", "pip", "install", producer.requirement]]
    for cmd in steps:
        if subprocess.call(cmd) != 0:
            raise DriverError(f"setup failed: {' '.join(cmd)}")


def _installed_version(python: Path, dist: str) -> str | None:
    code = f"import importlib.metadata as m\ntry: print(m.version({dist!r}))\nexcept m.PackageNotFoundError: pass"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return out.stdout.strip() or None


# ---------------------------------------------------------------------------------------------- build / check


def generate(producer: Producer, python: Path, out: Path) -> None:
    """Run the producer's generator with its venv's Python, writing into ``out``."""
    cmd = [str(python), str(REPO / producer.script), "--out", str(out)]
    print(f"[{producer.name}] {' '.join(cmd)}", flush=True)
    if subprocess.call(cmd, cwd=REPO) != 0:
        raise DriverError(f"the generator failed: {' '.join(cmd)}")


def build(producer: Producer, python: Path) -> int:
    """Generate next to the destination, then swap it in with renames (same filesystem)."""
    FIXTURES.mkdir(parents=True, exist_ok=True)
    dest = FIXTURES / producer.name
    tmp = Path(tempfile.mkdtemp(prefix=f".{producer.name}-new-", dir=FIXTURES))
    try:
        generate(producer, python, tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the committed directory is not
        old = None
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{producer.name}-old-", dir=FIXTURES))
            os.rename(dest, old / producer.name)
        os.rename(tmp, dest)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    print(f"[{producer.name}] wrote {dest.relative_to(REPO)}")
    return 0


def check(producer: Producer, python: Path) -> int:
    """Rebuild into a temp dir and compare every file's sha256 (and every symlink's target).

    Returns 1 when a file the committed manifest calls deterministic differs, or a file is missing or extra.
    """
    committed = FIXTURES / producer.name
    if not committed.is_dir():
        raise DriverError(f"nothing committed at {committed.relative_to(REPO)} to check against; build it first")
    with tempfile.TemporaryDirectory(prefix=f"{producer.name}-check-") as tmp:
        fresh = Path(tmp) / producer.name
        generate(producer, python, fresh)
        old, new = tree_digest(committed), tree_digest(fresh)
        env_change = manifest_env_change(committed / "manifest.json", fresh / "manifest.json")
    allowed = nondeterministic_paths(committed / "manifest.json")
    bad = 0
    if env_change is not None:
        # The manifest records the producer's environment; only a change elsewhere in it is a difference.
        new.pop("manifest.json", None)
        old.pop("manifest.json", None)
        if env_change:
            print(f"[{producer.name}] note: environment differs from the committed manifest: {env_change}")
    for rel in sorted(set(old) | set(new)):
        if old.get(rel) == new.get(rel):
            continue
        what = "missing from the rebuild" if rel not in new else "new in the rebuild" if rel not in old else "differs"
        expected = rel in allowed and rel in old and rel in new
        print(f"[{producer.name}] {rel}: {what}{' (marked nondeterministic)' if expected else ''}")
        bad += 0 if expected else 1
    print(f"[{producer.name}] check: {len(old)} committed files, {bad} unexpected difference(s)")
    return 1 if bad else 0


def manifest_env_change(committed: Path, fresh: Path) -> str | None:
    """``None`` when the manifests differ beyond ``environment`` (or one is missing); else the version
    changes in ``environment`` as text (empty when none)."""
    if not committed.is_file() or not fresh.is_file():
        return None
    old, new = json.loads(committed.read_text()), json.loads(fresh.read_text())
    old_env, new_env = old.pop("environment", {}), new.pop("environment", {})
    if old != new:
        return None
    changed = sorted(k for k in set(old_env) | set(new_env) if old_env.get(k) != new_env.get(k))
    return ", ".join(f"{k} {old_env.get(k)} -> {new_env.get(k)}" for k in changed)


def tree_digest(root: Path) -> dict[str, str]:
    """``{relative path: sha256 or 'symlink -> target'}`` for everything under ``root``."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = f"symlink -> {os.readlink(path)}"
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def nondeterministic_paths(manifest: Path) -> set[str]:
    """Files the committed manifest says may differ run to run, as paths relative to the producer dir.

    A fixture with ``deterministic: false`` and no list allows every file under it.
    """
    if not manifest.is_file():
        return set()
    allowed: set[str] = set()
    fixtures = json.loads(manifest.read_text()).get("fixtures", [])
    for fx in fixtures:
        base = fx.get("path") or fx.get("name", "")
        listed = fx.get("nondeterministic_files") or []
        allowed.update(f"{base}/{rel}" for rel in listed)
        if fx.get("deterministic") is False and not listed:
            allowed.update(f"{base}/{f['path']}" for f in fx.get("files", []) if "path" in f)
    return allowed


if __name__ == "__main__":
    sys.exit(main())
