"""Launcher (the pipeline's last step): turn a prepared run into a running server, and serve in the foreground.

Takes the sections it uses (``sglang``, ``algorithm``) and the ``PreparedRun`` (the target, the draft and
the speculative setting as resolved), never the whole configuration.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from packaging.version import Version

from automodel_spec.config.schema import AlgorithmConfig, SGLangConfig
from automodel_spec.config.sglang_options import (
    INFO_ACCEPT_LENGTH,
    INFO_ALGORITHM,
    INFO_KEYS,
    INFO_NUM_DRAFT_TOKENS,
    INFO_NUM_STEPS,
    INFO_TOPK,
    OLDEST_RELEASE,
    SGLANG_INSTALL_HINT,
    applicable_release,
    known_releases,
)
from automodel_spec.errors import CheckpointError, ConfigError, MissingDependencyError
from automodel_spec.io.atomic_write import write_json_atomically
from automodel_spec.io.signals import Terminated, raise_terminated
from automodel_spec.prepare import PreparedRun
from automodel_spec.serve.command import build_launch_command, extra_args_warnings, format_command
from automodel_spec.serve.gpu_pool import check_pool_size, visible_gpus
from automodel_spec.serve.server import SGLangServer, pick_port

log = logging.getLogger(__name__)

TEST_PROMPT = "The quick brown fox jumps over the lazy dog. " * 2
@dataclass(frozen=True)
class SGLangRelease:
    """The SGLang release a command is built for.

    Attributes:
        release: the known release whose options the command uses.
        installed: the SGLang installed where the server runs (``None``: none found, or not readable).
        source: why this release: ``"installed"``, ``"sglang.release"`` or ``"newest known"``.
        note: a warning for the user when the command may not be what the serving SGLang takes.
    """

    release: str
    installed: str | None
    source: str
    note: str | None = None

    def describe(self) -> str:
        """One line for ``print_only`` and the start of a serve."""
        given = f"{self.installed} installed" if self.installed else "no SGLang found"
        return f"SGLang release: {self.release} ({self.source}; {given})"


_VERSION_PROBE = "import importlib.metadata as m\ntry: print(m.version('sglang'))\nexcept m.PackageNotFoundError: pass"


def installed_sglang(python: str | None) -> str | None:
    """The installed SGLang's version, read from package metadata (SGLang is never imported).

    ``python``: another interpreter (``sglang.python``), asked in a subprocess; ``None``: this one.
    ``None`` when there is no SGLang there or the interpreter does not answer.
    """
    if python is None:
        try:
            return importlib.metadata.version("sglang")
        except importlib.metadata.PackageNotFoundError:
            return None
    try:
        out = subprocess.run([python, "-c", _VERSION_PROBE], capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[-1].strip() if out.returncode == 0 and lines else None


def sglang_release(sglang: SGLangConfig) -> SGLangRelease:
    """The release to build the command for: ``sglang.release``, else the installed one, else the newest known.

    Raises:
        ConfigError: ``sglang.release`` (or the installed release) is not a release this tool knows
            how to build for (not a version, or older than the oldest recorded).
    """
    installed = installed_sglang(sglang.python)
    newest = known_releases()[-1]
    wanted, source = (sglang.release, "sglang.release") if sglang.release else (installed, "installed")
    if wanted is None:
        where = f"for sglang.python={sglang.python}" if sglang.python else "in this environment"
        return SGLangRelease(newest, None, "newest known", f"WARNING: no SGLang found {where}: the command is built "
                             f"for SGLang {newest}, the newest release this tool knows; set sglang.release=X.Y.Z "
                             f"to build it for another.")
    try:
        release, newer = applicable_release(wanted)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}.") from None
    note = None
    if newer:
        note = (f"WARNING: SGLang {wanted} ({source}) is newer than every release this tool knows; the command is "
                f"built for {release}, the newest known. A flag that release {wanted} removed makes the server "
                "exit at once: record its options with scripts/analysis/record_sglang_options.py.")
    return SGLangRelease(release, installed, source, note)


def release_warnings(sglang: SGLangConfig, release: SGLangRelease) -> list[str]:
    """What to say before a command built for ``release`` runs or is printed (empty: nothing)."""
    return ([release.note] if release.note else []) + extra_args_warnings(sglang, release.release)


def launch_command(sglang: SGLangConfig, algorithm: AlgorithmConfig, run: PreparedRun, port: int | None = None, *,
                   release: SGLangRelease | None = None) -> list[str]:
    """The server argv for a prepared run (``port``: the one picked when ``sglang.port`` is 0).

    ``release``: the release to build for (default: ``sglang_release(sglang)``).
    """
    release = release or sglang_release(sglang)
    _check_adaptive_start(sglang, algorithm, run, release.release)
    return build_launch_command(run.target, sglang, algorithm, run.spec, run.draft, release=release.release,
                                port=port, target_revision=run.target_revision)


def _check_adaptive_start(sglang: SGLangConfig, algorithm: AlgorithmConfig, run: PreparedRun, release: str) -> None:
    """Refuse an adaptive setting that ``release`` would die on at startup (``adaptive.startup_crash``)."""
    from automodel_spec.config.adaptive import read_adaptive_config, startup_crash

    spec = run.spec
    if not (algorithm.name and spec.adaptive):
        return
    config = read_adaptive_config(spec.adaptive_config) if spec.adaptive_config else None
    problem = startup_crash(spec.num_steps, config, release, cuda_graphs=not sglang.disable_cuda_graph)
    if problem:
        raise ConfigError(problem)


def open_server(sglang: SGLangConfig, algorithm: AlgorithmConfig, run: PreparedRun, log_dir: Path, *,
                echo: bool = False, log_name: str = "server.log", port: int | None = None,
                env: dict | None = None) -> SGLangServer:
    """A not-yet-started server for this run, on ``port`` or a checked (or freshly picked) one.

    ``env`` replaces the server's environment (default: ours).
    """
    release = check_sglang_installed(sglang, *required_sglang(algorithm, run))
    log.info("[automodel-spec] %s", release.describe())
    for warning in release_warnings(sglang, release):
        log.warning("[automodel-spec] %s", warning)
    port = pick_port(sglang.host, sglang.port) if port is None else port
    argv = launch_command(sglang, algorithm, run, port, release=release)
    host = sglang.host if sglang.host not in ("0.0.0.0", "::") else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return SGLangServer(argv, f"http://{host}:{port}", log_dir, ready_timeout_s=sglang.ready_timeout_s,
                        stop_timeout_s=sglang.stop_timeout_s, echo=echo, api_key=sglang.api_key,
                        log_name=log_name, env=env)


def required_sglang(algorithm: AlgorithmConfig, run: PreparedRun) -> tuple[str, str]:
    """The oldest SGLang that serves this run as configured, and what needs it."""
    from automodel_spec.config.adaptive import read_adaptive_config
    from automodel_spec.config.adaptive import required_sglang as adaptive_needs

    spec = run.spec
    need = (run.export.min_sglang if run.export else OLDEST_RELEASE, "this draft needs")
    if algorithm.name and spec.adaptive:
        config = read_adaptive_config(spec.adaptive_config) if spec.adaptive_config else None
        version = adaptive_needs(True, config)
        if Version(version) > Version(need[0]):
            need = (version, "spec.adaptive" + (f" with spec.adaptive_config={spec.adaptive_config}"
                                                 if config else "") + " needs")
    return need


def check_sglang_installed(sglang: SGLangConfig, min_version: str, needs: str = "this draft needs") -> SGLangRelease:
    """Before launching: SGLang must be installed, new enough, and the release the command is built for.

    With ``sglang.python`` (another interpreter) its SGLang is read there; one that does not answer
    says so itself when it starts. Returns the release to build the command for.

    Raises:
        MissingDependencyError: SGLang is not installed (exit code 2).
        CheckpointError: the installed SGLang is older than the draft (or setting) needs.
        ConfigError: ``sglang.release`` names another release than the installed one.
    """
    if sglang.python is None and importlib.util.find_spec("sglang") is None:
        raise MissingDependencyError("sglang", SGLANG_INSTALL_HINT, "launch the server")
    release = sglang_release(sglang)
    installed = release.installed
    if installed is None:
        check_release_serves(release, min_version, needs)
        return release
    if Version(installed) < Version(min_version):
        raise CheckpointError(
            f"{needs} SGLang >= {min_version}, but {installed} is installed: older releases would "
            f"{'skip or mis-shape part of it' if needs == 'this draft needs' else 'refuse it or ignore it'}. "
            f"Upgrade: pip install 'sglang>={min_version}'."
        )
    if sglang.release and Version(Version(sglang.release).base_version) != Version(Version(installed).base_version):
        raise ConfigError(f"sglang.release={sglang.release}, but SGLang {installed} is installed and would serve: a "
                          f"command built for {sglang.release} may not parse there. Drop sglang.release to build for "
                          f"the installed release (sglang.release is for print_only: another machine's command).")
    return release


def check_release_serves(release: SGLangRelease, min_version: str, needs: str = "this draft needs") -> None:
    """The release a command is built for must be one that serves this run (``print_only`` checks this alone).

    Raises:
        ConfigError: the release is older than ``min_version`` (what the draft or setting ``needs``).
    """
    if Version(release.release) < Version(min_version):
        raise ConfigError(f"{needs} SGLang >= {min_version}, but the command is built for SGLang {release.release} "
                          f"({release.source}), which would skip, mis-load or refuse it. Set sglang.release to "
                          f"{min_version} or later, or drop it to build for the installed release.")


def effective_settings(info: dict) -> dict:
    """The settings the server actually uses (it may change what was asked for)."""
    out = {k: info.get(k) for k in INFO_KEYS if k in info}
    states = info.get("internal_states") or [{}]
    if states and isinstance(states[0], dict) and INFO_ACCEPT_LENGTH in states[0]:
        out[INFO_ACCEPT_LENGTH] = states[0][INFO_ACCEPT_LENGTH]
    return out


def probe_generation(server: SGLangServer, skip_tokenizer_init: bool, max_new_tokens: int = 48) -> dict:
    """One short greedy generation; returns tokens, verify steps and accept length."""
    params = {"temperature": 0.0, "max_new_tokens": max_new_tokens, "ignore_eos": True}
    payload = {"input_ids": list(range(3, 35))} if skip_tokenizer_init else {"text": TEST_PROMPT}
    out = server.generate({**payload, "sampling_params": params}, timeout=300)
    meta = out.get("meta_info", {}) if isinstance(out, dict) else {}
    tokens = int(meta.get("completion_tokens") or 0)
    verify = int(meta.get("spec_verify_ct") or 0)
    return {"completion_tokens": tokens, "spec_verify_ct": verify,
            "accept_length": tokens / verify if verify else None}


def serve_foreground(sglang: SGLangConfig, algorithm: AlgorithmConfig, run: PreparedRun, log_dir: Path) -> int:
    """Serve until the server exits or we are interrupted; the server's exit code is ours.

    Ctrl-C and SIGTERM stop the server's whole process group before returning (130 / 143).
    """
    pool, source = visible_gpus()
    if pool is not None:  # a clear refusal now, not SGLang's failure minutes into loading the model
        what = f"sglang.tp_size={sglang.tp_size}" + (f" over sglang.nnodes={sglang.nnodes}" if sglang.nnodes > 1 else "")
        check_pool_size(pool, sglang.tp_size // sglang.nnodes, source, what)
    server = open_server(sglang, algorithm, run, log_dir, echo=True)
    log.info("[automodel-spec] launching: %s", format_command(server.argv))
    log.info("[automodel-spec] server log: %s", server.log_path)
    # SIGTERM unwinds like Ctrl-C whoever calls this (the recipes have installed the same handler already)
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        with server:
            if sglang.node_rank > 0:  # SGLang answers only a health check there; rank 0 serves
                log.info("[automodel-spec] node %d of %d is up in %.1fs; requests go to rank 0 "
                         "(sglang.dist_init_addr's host)", sglang.node_rank, sglang.nnodes, server.boot_s)
            else:
                _report_ready(algorithm, sglang.skip_tokenizer_init, server, log_dir)
            code = server.wait()
            log.info("[automodel-spec] server exited with code %s", code)
            return code
    except Terminated:
        log.info("[automodel-spec] SIGTERM: stopping the server")
        return 143
    except KeyboardInterrupt:
        log.info("\n[automodel-spec] interrupted: stopping the server")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _report_ready(algorithm: AlgorithmConfig, skip_tokenizer_init: bool, server: SGLangServer, log_dir: Path) -> None:
    info = server.server_info()
    settings = effective_settings(info)
    write_json_atomically(log_dir / "server_info.json", info)
    log.info("[automodel-spec] ready in %.1fs at %s", server.boot_s, server.base_url)
    if algorithm.name is None:
        log.info("[automodel-spec] speculation: off (algorithm=none)")
        return
    log.info("[automodel-spec] effective speculative settings: %s",
             ", ".join(f"{k}={settings.get(k)}" for k in (INFO_ALGORITHM, INFO_NUM_STEPS, INFO_TOPK, INFO_NUM_DRAFT_TOKENS)))
    try:
        result = probe_generation(server, skip_tokenizer_init)
    except Exception as exc:  # the server stays up; the user sees why the probe failed
        log.info("[automodel-spec] test generation failed: %s", exc)
        return
    settings["probe_generation"] = result
    write_json_atomically(log_dir / "effective_settings.json", settings)
    accept = result["accept_length"]
    shown = f"{accept:.2f}" if accept is not None else "n/a (no spec_verify_ct in meta_info)"
    log.info("[automodel-spec] test generation: %s tokens, accept length %s%s", result["completion_tokens"], shown,
             " -- about 1.0 means the draft is not helping" if accept is not None and accept < 1.2 else "")
