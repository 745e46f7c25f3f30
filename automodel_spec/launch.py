"""Launcher: turn a prepared run into a running server, and serve in the foreground."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from automodel_spec.command import build_launch_command, format_command
from automodel_spec.config import ServeConfig
from automodel_spec.gpu_pool import check_pool_size, visible_gpus
from automodel_spec.prepare import PreparedRun, check_sglang_installed
from automodel_spec.server import SGLangServer, pick_port

TEST_PROMPT = "The quick brown fox jumps over the lazy dog. " * 2
_EFFECTIVE_KEYS = ("speculative_algorithm", "speculative_num_steps", "speculative_eagle_topk",
                   "speculative_num_draft_tokens", "speculative_draft_model_path", "max_running_requests",
                   "attention_backend", "tp_size", "mem_fraction_static", "cuda_graph_max_bs",
                   "speculative_adaptive", "speculative_adaptive_config")


def launch_command(cfg: ServeConfig, run: PreparedRun, port: int | None = None) -> list[str]:
    """The server argv for a prepared run."""
    return build_launch_command(run.target, cfg.sglang, cfg.algorithm, cfg.spec, run.draft, port=port,
                                target_revision=cfg.target.revision)


def open_server(cfg: ServeConfig, run: PreparedRun, log_dir: Path, *, echo: bool = False,
                log_name: str = "server.log", port: int | None = None, env: dict | None = None) -> SGLangServer:
    """A not-yet-started server for this run, on ``port`` or a checked (or freshly picked) one.

    ``env`` replaces the server's environment (default: ours).
    """
    check_sglang_installed(cfg.sglang.python, *required_sglang(cfg, run))
    port = pick_port(cfg.sglang.host, cfg.sglang.port) if port is None else port
    argv = launch_command(cfg, run, port)
    host = cfg.sglang.host if cfg.sglang.host not in ("0.0.0.0", "::") else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return SGLangServer(argv, f"http://{host}:{port}", log_dir, ready_timeout_s=cfg.sglang.ready_timeout_s,
                        stop_timeout_s=cfg.sglang.stop_timeout_s, echo=echo, api_key=cfg.sglang.api_key,
                        log_name=log_name, env=env)


def required_sglang(cfg: ServeConfig, run: PreparedRun) -> tuple[str, str]:
    """The oldest SGLang that serves this run as configured, and what needs it."""
    from packaging.version import Version

    from automodel_spec.adaptive import read_adaptive_config
    from automodel_spec.adaptive import required_sglang as adaptive_needs

    need = (run.export.min_sglang if run.export else "0.5.9", "this draft needs")
    if cfg.algorithm.name and cfg.spec.adaptive:
        config = read_adaptive_config(cfg.spec.adaptive_config) if cfg.spec.adaptive_config else None
        version = adaptive_needs(True, config)
        if Version(version) > Version(need[0]):
            need = (version, "spec.adaptive" + (f" with spec.adaptive_config={cfg.spec.adaptive_config}"
                                                 if config else "") + " needs")
    return need


def effective_settings(info: dict) -> dict:
    """The settings the server actually uses (it may change what was asked for)."""
    out = {k: info.get(k) for k in _EFFECTIVE_KEYS if k in info}
    states = info.get("internal_states") or [{}]
    if states and isinstance(states[0], dict) and "avg_spec_accept_length" in states[0]:
        out["avg_spec_accept_length"] = states[0]["avg_spec_accept_length"]
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


def serve_foreground(cfg: ServeConfig, run: PreparedRun, log_dir: Path) -> int:
    """Serve until the server exits or we are interrupted; the server's exit code is ours.

    Ctrl-C and SIGTERM stop the server's whole process group before returning (130 / 143).
    """
    pool, source = visible_gpus()
    if pool is not None:  # a clear refusal now, not SGLang's failure minutes into loading the model
        sg = cfg.sglang
        what = f"sglang.tp_size={sg.tp_size}" + (f" over sglang.nnodes={sg.nnodes}" if sg.nnodes > 1 else "")
        check_pool_size(pool, sg.tp_size // sg.nnodes, source, what)
    server = open_server(cfg, run, log_dir, echo=True)
    print(f"[automodel-spec] launching: {format_command(server.argv)}", flush=True)
    print(f"[automodel-spec] server log: {server.log_path}", flush=True)
    previous = signal.signal(signal.SIGTERM, _raise_sigterm)
    try:
        with server:
            if cfg.sglang.node_rank > 0:  # SGLang answers only a health check there; rank 0 serves
                print(f"[automodel-spec] node {cfg.sglang.node_rank} of {cfg.sglang.nnodes} is up in "
                      f"{server.boot_s:.1f}s; requests go to rank 0 (sglang.dist_init_addr's host)", flush=True)
            else:
                _report_ready(cfg, server, log_dir)
            code = server.wait()
            print(f"[automodel-spec] server exited with code {code}", flush=True)
            return code
    except KeyboardInterrupt:
        print("\n[automodel-spec] interrupted: stopping the server", flush=True)
        return 130
    except _SigTerm:
        print("[automodel-spec] SIGTERM: stopping the server", flush=True)
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)


def _report_ready(cfg: ServeConfig, server: SGLangServer, log_dir: Path) -> None:
    info = server.server_info()
    settings = effective_settings(info)
    (log_dir / "server_info.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    print(f"[automodel-spec] ready in {server.boot_s:.1f}s at {server.base_url}", flush=True)
    if cfg.algorithm.name is None:
        print("[automodel-spec] speculation: off (algorithm=none)", flush=True)
        return
    print("[automodel-spec] effective speculative settings: "
          + ", ".join(f"{k}={settings.get(k)}" for k in _EFFECTIVE_KEYS[:4]), flush=True)
    try:
        result = probe_generation(server, cfg.sglang.skip_tokenizer_init)
    except Exception as exc:  # the server stays up; the user sees why the probe failed
        print(f"[automodel-spec] test generation failed: {exc}", flush=True)
        return
    settings["probe_generation"] = result
    (log_dir / "effective_settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    accept = result["accept_length"]
    shown = f"{accept:.2f}" if accept is not None else "n/a (no spec_verify_ct in meta_info)"
    print(f"[automodel-spec] test generation: {result['completion_tokens']} tokens, accept length {shown}"
          + (" -- about 1.0 means the draft is not helping" if accept is not None and accept < 1.2 else ""),
          flush=True)


class _SigTerm(Exception):
    pass


def _raise_sigterm(signum, frame):
    raise _SigTerm()
