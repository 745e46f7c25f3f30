#!/usr/bin/env python3
"""Record each SGLang release's server options into ``automodel_spec/data/sglang_options.json``.

    python scripts/analysis/record_sglang_options.py                 # every release 0.5.9 .. 0.5.23
    python scripts/analysis/record_sglang_options.py --releases 0.5.17 0.5.23 --keep /tmp/sgl-wheels

For each release: ``pip download --no-deps sglang==X`` into a temporary directory (nothing is
installed), unpack the wheel there, and run that release's own argument parser
(``ServerArgs.add_cli_args``) in a fresh interpreter whose third-party imports (torch, triton,
transformers, ...) are stand-ins: SGLang's modules are real, and an SGLang module that fails on a
stand-in becomes one itself unless the parser is defined there (``server_args``, ``arg_groups``:
those must load for real). So flags that SGLang adds in loops, helpers or its dataclass-field
machinery are all found, as argparse holds them. A static read of the same files cross-checks the
parser's list both ways, and the script fails otherwise: each option the parser holds is a ``--flag``
literal there, an annotated field or a field's ``--no-`` form, and each ``--flag`` literal there is an
option the parser holds (none was registered only on hardware or settings the CPU run lacks).

Beside the options it records what the benchmark and launcher depend on, read in the release's
source: the HTTP endpoints, the per-request histogram names in ``meta_info``, and what resets the
accept-length counters (``/flush_cache``; ``/set_internal_state`` with any key or only the
``speculative_accept_threshold_*`` keys).

Needs network access to PyPI and ``msgspec`` importable (SGLang 0.5.20+ builds ServerArgs on it);
CI never runs it: the tests read the committed data file.
"""

from __future__ import annotations

import argparse
import ast
import importlib.abc
import importlib.machinery
import json
import re
import subprocess
import sys
import tempfile
import types
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "automodel_spec" / "data" / "sglang_options.json"
RELEASES = [f"0.5.{i}" for i in range(9, 24)]
ENDPOINTS = ("/health", "/health_generate", "/ready", "/server_info", "/get_server_info", "/flush_cache",
             "/set_internal_state", "/get_load", "/generate")
HISTOGRAMS = ("spec_accept_histogram", "spec_correct_drafts_histogram")
_FLAG = re.compile(r"^--[a-z0-9][a-z0-9-]*$")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--releases", nargs="+", default=RELEASES)
    ap.add_argument("--keep", type=Path, help="keep the wheels and unpacked trees here (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        records = {r: record_release(r, work) for r in args.releases}
    write_data(records, args.out)
    counts = ", ".join(f"{r} ({len(rec['options'])} options)" for r, rec in records.items())
    print(f"wrote {args.out}: {counts}")
    return 0


def record_release(release: str, work: Path) -> dict:
    """The options and behaviours of one release, from its wheel."""
    tree = work / release
    if not (tree / "sglang").is_dir():
        wheels = work / "wheels"
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"sglang=={release}",
                        "-d", str(wheels)], check=True)
        wheel = next(wheels.glob(f"sglang-{release}-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(tree, [n for n in zf.namelist() if n.startswith("sglang/")])
    probe = subprocess.run([sys.executable, __file__, "--probe", str(tree), *sys.path],
                           capture_output=True, text=True)
    if probe.returncode:
        raise SystemExit(f"SGLang {release}: its parser did not run:\n{probe.stderr[-3000:]}")
    parsed = json.loads(probe.stdout.splitlines()[-1])
    options = set(parsed["options"]) - {"--help"}
    literals, fields = static_names(tree)
    unexplained = sorted(o for o in options if o not in literals | fields
                         and "--" + o.removeprefix("--no-") not in fields)
    if unexplained:
        raise SystemExit(f"SGLang {release}: the parser holds options no static read explains: {unexplained}")
    missed = sorted(literals - options)  # a flag registered only on some hardware or environment
    if missed:
        raise SystemExit(f"SGLang {release}: flags in the parser's source that the parser run did not register: "
                         f"{missed}")
    print(f"SGLang {release}: {len(options)} options (every --flag literal of the parser's files among them); "
          f"stand-ins for {len(parsed['stubbed'])} SGLang modules")
    return {"options": sorted(options), **behaviours(tree)}


def static_names(tree: Path) -> tuple[set[str], set[str]]:
    """The parser's files read statically: every ``--flag`` literal, and every annotated field as ``--field-name``."""
    srt = tree / "sglang" / "srt"
    files = [srt / "server_args.py", *sorted((srt / "arg_groups").rglob("*.py"))]
    literals, fields = set(), set()
    for path in files:
        if not path.is_file():
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and _FLAG.match(node.value):
                literals.add(node.value)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                fields.add("--" + node.target.id.replace("_", "-"))
    return literals, fields


def behaviours(tree: Path) -> dict:
    """What the launcher and the benchmark rely on, read in the release's source."""
    srt = tree / "sglang" / "srt"
    http = (srt / "entrypoints" / "http_server.py").read_text()
    routes = set(re.findall(r'@app\.(?:get|post|put|api_route)\(\s*"(/[A-Za-z0-9_/]+)"', http))
    managers = "\n".join(p.read_text() for p in sorted((srt / "managers").rglob("*.py")))
    everywhere = "\n".join(p.read_text() for p in sorted(srt.rglob("*.py")))
    histograms = [h for h in HISTOGRAMS if re.search(rf'meta_info\[\s*"{h}"\s*\]', managers)]
    threshold_only = "def _apply_accept_threshold" in managers
    # /flush_cache calls reset_metrics() (when idle), and reset_metrics zeroes the accept-length totals
    bodies = re.findall(r"\n(\s*)def reset_metrics\(self[^)]*\)[^:]*:(.*?)(?=\n\1(?:def |@)|\Z)", everywhere, re.S)
    flush = re.search(r"def flush_cache\(self[^)]*\)[^:]*:(.*?)\n    def ", managers, re.S)
    flush_resets = any("spec_total_num_" in body for _, body in bodies) and bool(
        flush and "reset_metrics()" in flush.group(1))
    return {
        "endpoints": sorted(e for e in ENDPOINTS if e in routes),
        "meta_info_histograms": histograms,
        "accept_counters_reset": {
            "flush_cache": flush_resets,
            "set_internal_state": "speculative_accept_threshold_keys" if threshold_only else "any_key",
        },
    }


def write_data(records: dict, out: Path) -> None:
    """The data file: the first release's options in full, each later one as added / removed."""
    releases, previous = {}, None
    for release in sorted(records, key=lambda r: tuple(int(p) for p in r.split("."))):
        rec = dict(records[release])
        options = rec.pop("options")
        if previous is None:
            rec = {"options": options, **rec}
        else:
            rec = {"added": sorted(set(options) - set(previous)), "removed": sorted(set(previous) - set(options)),
                   **rec}
        releases[release] = rec
        previous = options
    doc = {"about": "SGLang server options (argparse option strings) and behaviours, per release; written by "
                    "scripts/analysis/record_sglang_options.py from each release's wheel (its own parser, run on the CPU). "
                    "The first release lists its options; each later one what it added and removed.",
           "releases": releases}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")


# ---- the probe: run in a fresh interpreter (--probe TREE PATH...) -----------------------------------
# third-party packages the parser needs for real (msgspec: 0.5.20+ builds ServerArgs on it)
REAL = {"msgspec", "packaging", "typing_extensions"}


class _Meta(type):
    def __getattr__(cls, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _stub_class(name)

    def __getitem__(cls, item):
        return cls

    def __call__(cls, *args, **kwargs):
        if len(args) == 1 and not kwargs and callable(args[0]) and not isinstance(args[0], _Stub):
            return args[0]  # a decorator
        return type.__call__(cls)

    def __bool__(cls):
        return False

    def __or__(cls, other):
        return cls

    __ror__ = __or__

    def __iter__(cls):
        return iter(())

    def __len__(cls):
        return 0

    def __mro_entries__(cls, bases):
        return (cls,)


class _Stub(metaclass=_Meta):
    def __init__(self, *a, **k):
        pass

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _stub_class(name)()

    def __call__(self, *args, **kwargs):
        if len(args) == 1 and not kwargs and callable(args[0]):
            return args[0]
        return _Stub()

    def __bool__(self):
        return False

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0

    def __getitem__(self, item):
        return _Stub()

    def __int__(self):
        return 0

    def __index__(self):
        return 0

    def __float__(self):
        return 0.0

    def __str__(self):
        return ""

    def __eq__(self, other):
        return False

    def __hash__(self):
        return id(self)

    def __lt__(self, other):
        return False

    __gt__ = __le__ = __ge__ = __lt__

    def __add__(self, other):
        return self

    __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __add__


def _stub_class(name):
    return _Meta(str(name), (_Stub,), {})


class _StubModule(types.ModuleType):
    def __init__(self, name):
        super().__init__(name)
        self.__path__ = []
        self.__version__ = "0.0.0"

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        value = _stub_class(name)
        setattr(self, name, value)
        return value


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        top = fullname.split(".")[0]
        if top in sys.stdlib_module_names or top in REAL:
            return None
        if top == "sglang":
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is None or spec.loader is None or fullname.startswith(ESSENTIAL):
                return spec
            spec.loader = _Tolerant(spec.loader)
            return spec
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec):
        return _StubModule(spec.name)

    def exec_module(self, module):
        pass


# the parser's own modules: never stood in for
ESSENTIAL = ("sglang.srt.server_args", "sglang.srt.arg_groups")
STUBBED = []


class _Tolerant(importlib.abc.Loader):
    """Runs an sglang module; one that fails on the stubs becomes a stub itself (not one the parser is in)."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        try:
            self.loader.exec_module(module)
        except Exception as exc:
            STUBBED.append(f"{module.__name__}: {type(exc).__name__}: {exc}"[:200])
            module.__class__ = _StubModule
            module.__path__ = getattr(module, "__path__", [])


def probe(paths: list[str]) -> None:
    """Print the options of the release unpacked at ``paths[0]``, as its own parser holds them."""
    sys.path[:] = paths + [p for p in sys.path if p not in paths]
    sys.meta_path.insert(0, _Finder())
    from sglang.srt.server_args import ServerArgs

    parser = argparse.ArgumentParser()
    ServerArgs.add_cli_args(parser)
    options = sorted(o for o in parser._option_string_actions if o.startswith("--"))
    print(json.dumps({"options": options, "stubbed": STUBBED}))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--probe"]:
        probe(sys.argv[2:])
    else:
        sys.exit(main())
