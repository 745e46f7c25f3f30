#!/usr/bin/env -S python3 -S
# -S: without the site-packages, ~10 ms of CPU less a start (the suite starts hundreds of these, version probes
# included); stdlib only, but for FAKE_SGLANG_RELEASE (see RELEASE below)
"""A stand-in for ``python -m sglang.launch_server`` for CPU lifecycle tests (never proof of serving).

Invoked as ``fake_sglang.py -m sglang.launch_server --port P ...`` (set as ``sglang.python``). Like
SGLang it spawns a child process ("scheduler") and serves /health, /health_generate, /server_info,
/get_server_info, /flush_cache and /generate on 127.0.0.1. FAKE_SGLANG_MODE picks a behaviour:
  ok              ready after FAKE_SGLANG_BOOT_S seconds (default 0.05)
  crash           print a traceback-like line and exit 3 during boot
  killed          killed by SIGKILL during boot (as by the OOM killer while loading weights)
  hang            never become ready (health answers 503)
  stubborn_child  the child ignores SIGTERM (only SIGKILL stops it)
  lingering_child on SIGTERM the child's main thread exits at once while another thread runs on for
                  FAKE_SGLANG_LINGER_S seconds (default 1.5), as a dying multi-threaded scheduler's
                  last thread does while it releases the GPU memory (the child's output goes to
                  /dev/null, so only a check of the process itself can tell it is still there)
  exit_after      serve, then exit by itself with code 7 after FAKE_SGLANG_EXIT_AFTER_S seconds
FAKE_SGLANG_ACCEPT, when set (a probability), makes acceptance partial: each drafted position is accepted
with that probability until the first rejection (seeded by the prompt and temperature, so a re-run
repeats it), and a round takes 2 ms + FAKE_SGLANG_ROUND_STEP_MS (default 0.5) per step; the histogram and
counts follow.
FAKE_SGLANG_CRASH_IF, when set, is a substring of the argv: a server whose ``" ".join(sys.argv)``
contains it behaves like MODE crash (so one point of a sweep can crash), whatever FAKE_SGLANG_MODE says.
FAKE_SGLANG_FAIL makes /generate fail on purpose once FAKE_SGLANG_FAIL_AFTER requests (default 0, warm-up
included) were answered well, as a server failing during a benchmark does:
  die          the server kills itself with SIGKILL (as the OOM killer does) while answering
  cuda_oom     prints torch's "CUDA out of memory" and exits with code 1
  gpu_lost     prints CUDA's "unspecified launch failure" (a GPU fallen off the bus) and exits with code 1
  http500      answers HTTP 500
  html         answers 200 with an HTML page (a proxy's, or another program on the port)
  hang         never answers (the request times out)
  reset        closes the connection without an answer
  nan          meta_info.completion_tokens is NaN
  no_meta      an answer without meta_info
  text_tokens  meta_info.completion_tokens is a text
  zero_tokens  meta_info.completion_tokens is 0
FAKE_SGLANG_FAIL_IF, when set, is a substring of the argv: only a server whose argv contains it fails so.
FAKE_SGLANG_PIDFILE, when set, receives the pids of the server and its children.
FAKE_SGLANG_KV_TOKENS: the KV cache's size /server_info reports (``max_total_num_tokens``; default 1000000);
every prompt counts 8 tokens.
``--tp-size N`` (N > 1) spawns N children ("schedulers", one per GPU) and one more ("detokenizer"),
as SGLang does; each child, like the server, dies only when signalled (not with its parent), unless
FAKE_SGLANG_CHILDREN_DIE_WITH_PARENT is set: then, as SGLang's scheduler and detokenizer do
(``kill_itself_when_parent_died``), each child is sent SIGKILL when the server's process dies.
FAKE_SGLANG_BIND_FAIL_ONCE, when set, is a file: if it does not exist yet, the server creates it and
exits as SGLang does when its port is taken (the next server started binds normally).
FAKE_SGLANG_RELEASE, when set (e.g. 0.5.23), makes the server answer as that SGLang release does, from
what automodel_spec/data/sglang_options.json recorded of it: an argv option that release's parser would
refuse (unknown, or an ambiguous prefix) exits at once with code 2 as argparse does; endpoints it lacks
answer 404 (``/ready`` from 0.5.20, ``/get_load`` until 0.5.20); per-request histograms under its names
(``spec_accept_histogram`` until 0.5.20, ``spec_correct_drafts_histogram`` from 0.5.12); ``/server_info``
with ``launch_command`` from 0.5.20; ``/set_internal_state`` resets the accept counters on any key until
0.5.21 and only on ``speculative_accept_threshold_*`` keys later; ``/flush_cache`` resets them. Unset:
the project's GPU release (0.5.17) without the argv check. ``fake_sglang.py -c CODE`` (the launcher's
version probe, as to a python interpreter) prints the release it plays.
``/generate`` with ``"stream": true`` streams server-sent events (``stream_generate``: cumulative events,
a verify round's tokens each under speculation, ``data: [DONE]``); ``--max-running-requests N`` makes
at most N streamed requests run at once.
FAKE_SGLANG_RECORD, when set, is a file the server appends one JSON line to when it starts (before
it binds its port), one halfway through its boot when it prints SGLang's "Capture cuda graph begin"
(event "sized": its memory is in place), one when it is ready and one when it stops: pid, port, CUDA_VISIBLE_DEVICES, the
speculative algorithm (null without speculation) and the time (so a test can prove that two servers
never shared a GPU or a port at the same time); with FAKE_SGLANG_RECORD_REQUESTS=1 also one line per
/generate request it answers (event "generate", so a test can tell when a server was measured).
"""

import json
import os
import signal
import sys
import threading
import time


def arg(name, default=None):
    argv = sys.argv
    return argv[argv.index(name) + 1] if name in argv else default


CRASH_IF = os.environ.get("FAKE_SGLANG_CRASH_IF")
MODE = "crash" if CRASH_IF and CRASH_IF in " ".join(sys.argv) else os.environ.get("FAKE_SGLANG_MODE", "ok")
# 0.05 s by default: the health check (automodel_spec/serve/server.py) asks after 0.1 s, then 0.3 s, 0.7 s (each
# wait twice the last): a server that answers by 0.3 s of its start, its interpreter's and the launcher's
# wrapper's starts included, is seen then, not at 0.7 s (0.5 s and 0.2 s boots were), on each of the ~150
# servers the suite starts
BOOT_S = float(os.environ.get("FAKE_SGLANG_BOOT_S", "0.05"))
PORT = int(arg("--port", "30000"))
API_KEY = arg("--api-key")
STEPS = int(arg("--speculative-num-steps", "3"))
TOPK = int(arg("--speculative-eagle-topk", "1"))
TOKENS = int(arg("--speculative-num-draft-tokens", str(STEPS + 1)))
SPEC = arg("--speculative-algorithm")
TP = int(arg("--tp-size", "1"))
ACCEPT = float(os.environ["FAKE_SGLANG_ACCEPT"]) if os.environ.get("FAKE_SGLANG_ACCEPT") else None
# a verify round's time under partial acceptance: 2 ms, and this much more per drafting step
ROUND_S = 0.002 + float(os.environ.get("FAKE_SGLANG_ROUND_STEP_MS", "0.5")) / 1000 * STEPS
ADAPTIVE = "--speculative-adaptive" in sys.argv
RELEASE = os.environ.get("FAKE_SGLANG_RELEASE")
if RELEASE is not None:  # its recorded facts are automodel_spec's (and packaging's): the site-packages
    import site

    site.main()
FAIL_IF = os.environ.get("FAKE_SGLANG_FAIL_IF")
FAIL = os.environ.get("FAKE_SGLANG_FAIL") if not FAIL_IF or FAIL_IF in " ".join(sys.argv) else None
FAIL_AFTER = int(os.environ.get("FAKE_SGLANG_FAIL_AFTER", "0"))
ready = threading.Event()
served = {"verify": 0, "tokens": 0, "requests": 0}
served_lock = threading.Lock()


def release_facts():
    """What the release played answers (everything, as 0.5.17 does, when no release is set)."""
    if RELEASE is None:
        return {"endpoints": None, "meta_info_histograms": ["spec_accept_histogram", "spec_correct_drafts_histogram"],
                "accept_counters_reset": {"flush_cache": True, "set_internal_state": "any_key"}}
    from automodel_spec.config.sglang_options import release_facts as facts

    return facts(RELEASE)


FACTS = release_facts()


def check_argv():
    """Exit as the release's argparse would on an option it refuses."""
    from automodel_spec.config.sglang_options import option_problems

    problems = option_problems(sys.argv[3:], RELEASE)  # after "-m sglang.launch_server"
    if problems:
        print(f"launch_server.py: error: {problems[0]}", flush=True)
        sys.exit(2)


def _newer(version):
    """Whether the release played (0.5.17 when unset) is ``version`` or later."""
    return tuple(map(int, (RELEASE or "0.5.17").split("."))) >= tuple(map(int, version.split(".")))


def child_main(parent):
    if os.environ.get("FAKE_SGLANG_CHILDREN_DIE_WITH_PARENT"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG, as SGLang's children do
        if os.getppid() != parent:
            return
    if MODE == "stubborn_child":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if MODE == "lingering_child":
        signal.signal(signal.SIGTERM, _exit_main_thread_first)
    while True:
        time.sleep(1)


def _exit_main_thread_first(*_):
    linger = float(os.environ.get("FAKE_SGLANG_LINGER_S", "1.5"))
    threading.Thread(target=time.sleep, args=(linger,)).start()
    import ctypes

    ctypes.CDLL(None).pthread_exit(None)  # the main thread becomes a zombie; the process lives on


class Child:
    """A child of the server ("scheduler", "detokenizer"), forked rather than started as an interpreter of its
    own (~35 ms of CPU each, one or more per server start): it only waits for its signal. ``quiet``: its
    output goes to /dev/null."""

    def __init__(self, quiet):
        parent = os.getpid()
        self.pid = os.fork()
        if self.pid:
            return
        try:
            if quiet:
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, 1)
                os.dup2(null, 2)
            child_main(parent)
        except KeyboardInterrupt:  # as an interpreter of its own ends on SIGINT: the traceback, then the signal
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        os._exit(0)

    def terminate(self):
        self._signal(signal.SIGTERM)

    def kill(self):
        self._signal(signal.SIGKILL)

    def _signal(self, sig):
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass


# The launcher's version probe is an interpreter of its own (one or more per server start): it ends here,
# before the HTTP server's import (~25 ms of CPU), which only the server needs.
if __name__ == "__main__" and sys.argv[1:2] == ["-c"]:
    print(RELEASE or "0.5.17")
    sys.exit()

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402  (see above)


class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        print("fake-sglang:", fmt % args, flush=True)

    def _send(self, code, payload):
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorized(self):
        if API_KEY and self.headers.get("Authorization") != f"Bearer {API_KEY}":
            self._send(401, {"error": "unauthorized"})
            return False
        return True

    def _exists(self):
        endpoints = FACTS["endpoints"]
        if endpoints is not None and self.path not in endpoints:
            self._send(404, {"detail": "Not Found"})
            return False
        return True

    def do_GET(self):
        if not self._authorized() or not self._exists():
            return
        if self.path in ("/health", "/health_generate", "/ready"):
            self._send(200 if ready.is_set() else 503, {})
        elif self.path in ("/server_info", "/get_server_info"):
            accept = served["tokens"] / served["verify"] if served["verify"] else None
            info = {
                "speculative_algorithm": SPEC, "speculative_num_steps": STEPS if SPEC else None,
                "speculative_eagle_topk": TOPK if SPEC else None,
                "speculative_num_draft_tokens": TOKENS if SPEC else None, "api_key": API_KEY,
                "speculative_adaptive": ADAPTIVE, "speculative_adaptive_config": arg("--speculative-adaptive-config"),
                "internal_states": [{"avg_spec_accept_length": accept}], "version": RELEASE or "fake",
                "max_total_num_tokens": int(os.environ.get("FAKE_SGLANG_KV_TOKENS", "1000000")),
            }
            graphs = arg("--cuda-graph-max-bs-decode", arg("--cuda-graph-max-bs"))
            info["cuda_graph_max_bs_decode" if _newer("0.5.14") else "cuda_graph_max_bs"] = \
                int(graphs) if graphs else None
            if _newer("0.5.20"):  # what was asked for, beside the resolved values
                info["launch_command"] = " ".join(sys.argv)
            self._send(200, info)
        elif self.path == "/get_load":
            self._send(200, [{"dp_rank": 0, "num_reqs": 0}])
        else:
            self._send(404, {"error": self.path})

    def do_POST(self):
        if not self._authorized() or not self._exists():
            return
        length = int(self.headers.get("Content-Length") or 0)
        req = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/flush_cache":
            if FACTS["accept_counters_reset"]["flush_cache"]:
                served.update(verify=0, tokens=0)
            self._send(200, {})
        elif self.path == "/set_internal_state":
            keys = list((req.get("server_args") or {}).keys())
            rule = FACTS["accept_counters_reset"]["set_internal_state"]
            if keys and (rule == "any_key" or any(k.startswith("speculative_accept_threshold_") for k in keys)):
                served.update(verify=0, tokens=0)
            self._send(200, {"updated": True})
        elif self.path == "/generate":
            if os.environ.get("FAKE_SGLANG_RECORD_REQUESTS"):
                record("generate")
            with served_lock:
                served["requests"] += 1
                failing = FAIL is not None and served["requests"] > FAIL_AFTER
            if failing:  # streamed or not, a failing server answers as FAKE_SGLANG_FAIL says
                self._fail(FAIL)
                return
            if req.get("stream"):
                stream_generate(self, req)
                return
            n = int(req.get("sampling_params", {}).get("max_new_tokens", 16))
            if SPEC and ACCEPT is not None:
                verify, hist = _partial_acceptance(n, req)
                took = verify * ROUND_S
            else:
                verify = -(-n // (STEPS + 1)) if SPEC else 0
                hist = [0] * STEPS + [verify]  # every draft accepted: each round accepted all STEPS drafts
                # 1 ms per token; with FAKE_SGLANG_STEP_MS, that many ms per forward pass instead (one per
                # verify step with speculation, one per token without), so speed follows the accept length
                step_ms = os.environ.get("FAKE_SGLANG_STEP_MS")
                took = float(step_ms) / 1000 * (verify if SPEC else n) if step_ms else 0.001 * n
            time.sleep(took)
            served["verify"] += verify
            served["tokens"] += n
            meta = {"prompt_tokens": 8, "completion_tokens": n, "spec_verify_ct": verify, "e2e_latency": took}
            if SPEC:
                for name in FACTS["meta_info_histograms"]:
                    meta[name] = hist
            self._send(200, {"text": "x" * n, "output_ids": [5] * n, "meta_info": meta})
        else:
            self._send(404, {"error": self.path})


    def _fail(self, how):
        """Answer (or not) as FAKE_SGLANG_FAIL says."""
        meta = {"prompt_tokens": 8, "completion_tokens": 8, "spec_verify_ct": 2}
        if how == "die":
            print("fake-sglang: scheduler is using 79.1 GB of host memory (simulated)", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        elif how == "cuda_oom":
            print("fake-sglang: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (simulated)",
                  flush=True)
            os._exit(1)
        elif how == "gpu_lost":
            print("fake-sglang: RuntimeError: CUDA error: unspecified launch failure (simulated)", flush=True)
            os._exit(1)
        elif how == "http500":
            self._send(500, {"object": "error", "message": "Internal server error (simulated)"})
        elif how == "html":
            body = b"<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif how == "hang":
            time.sleep(3600)
        elif how == "reset":
            self.close_connection = True  # no status line: the client sees the connection closed
        elif how == "nan":
            body = json.dumps({"text": "x", "meta_info": {**meta, "completion_tokens": float("nan")}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif how == "no_meta":
            self._send(200, {"text": "x" * 8})
        elif how == "text_tokens":
            self._send(200, {"text": "x", "meta_info": {**meta, "completion_tokens": "eight"}})
        elif how == "zero_tokens":
            self._send(200, {"text": "", "meta_info": {**meta, "completion_tokens": 0}})
        else:
            raise SystemExit(f"FAKE_SGLANG_FAIL={how} is not a failure this fake knows")


# --- streaming (/generate with "stream": true) ----------------------------------------------------------
# At most --max-running-requests streamed requests are served at once (the others wait, as in SGLang's
# queue), so an open-loop load above the fake's capacity saturates it.
SLOTS = threading.Semaphore(int(arg("--max-running-requests"))) if arg("--max-running-requests") else None
INCREMENTAL = "--incremental-streaming-output" in sys.argv


def stream_generate(handler, req):
    """Answer a streamed /generate: one server-sent event per forward pass, then ``data: [DONE]``.

    Events are cumulative (the whole output so far) unless the server was started with
    --incremental-streaming-output (only the new tokens); under speculation one event carries a verify
    round's tokens. The time a non-streamed answer takes is spread over the events. With
    FAKE_SGLANG_STREAM_ERROR_AFTER=K the stream sends an ``{"error": ...}`` event after K events.
    """
    n = int(req.get("sampling_params", {}).get("max_new_tokens", 16))
    sizes, verify, hist, took = _stream_plan(n, req)
    if SLOTS is not None:
        SLOTS.acquire()
    try:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.end_headers()
        error_after = os.environ.get("FAKE_SGLANG_STREAM_ERROR_AFTER")
        done = 0
        for i, size in enumerate(sizes):
            if error_after is not None and i == int(error_after):
                _send_event(handler, {"error": {"message": "simulated scheduler error", "type": "fake", "code": 500}})
                break
            time.sleep(took / len(sizes))
            done += size
            ids = [5] * (size if INCREMENTAL else done)
            meta = {"prompt_tokens": 8, "completion_tokens": done, "spec_verify_ct": round(verify * done / n),
                    "e2e_latency": took}
            if done == n:
                meta.update(spec_verify_ct=verify, finish_reason={"type": "length", "length": n})
                if SPEC:
                    for name in FACTS["meta_info_histograms"]:
                        meta[name] = hist
            _send_event(handler, {"text": "x" * len(ids) if done == n or INCREMENTAL else None,
                                  "output_ids": ids, "meta_info": meta})
        handler.wfile.write(b"data: [DONE]\n\n")
        handler.wfile.flush()
    finally:
        if SLOTS is not None:
            SLOTS.release()
    served["verify"] += verify
    served["tokens"] += n


def _send_event(handler, payload):
    handler.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
    handler.wfile.flush()


def _stream_plan(n, req):
    """(tokens per event, verify rounds, histogram, seconds) of a streamed answer of ``n`` tokens, as the
    non-streamed answer counts them."""
    if SPEC and ACCEPT is not None:
        verify, hist = _partial_acceptance(n, req)
        sizes, left = [1], n - 1  # the first token comes from the prefill, then a verify round's tokens each
        for accepted in _accepted_per_round(n, req):
            sizes.append(min(accepted + 1, left))
            left -= sizes[-1]
        return [s for s in sizes if s > 0], verify, hist, verify * ROUND_S
    verify = -(-n // (STEPS + 1)) if SPEC else 0
    sizes = [min(STEPS + 1, n - i) for i in range(0, n, STEPS + 1)] if SPEC else [1] * n
    step_ms = os.environ.get("FAKE_SGLANG_STEP_MS")
    took = float(step_ms) / 1000 * (verify if SPEC else n) if step_ms else 0.001 * n
    return sizes, verify, [0] * STEPS + [verify], took


def _accepted_per_round(n, req):
    """The drafts accepted in each verify round, drawn as ``_partial_acceptance`` draws them."""
    import random

    seed = json.dumps([req.get("text"), req.get("input_ids"), req.get("sampling_params", {}).get("temperature")])
    rng = random.Random(seed)
    out, tokens = [], 1
    while tokens < n:
        k = 0
        while k < STEPS and rng.random() < ACCEPT:
            k += 1
        out.append(k)
        tokens += k + 1
    return out


def record(event):
    path = os.environ.get("FAKE_SGLANG_RECORD")
    if path:  # one short append per line: lines of concurrent servers do not interleave
        line = json.dumps({"event": event, "pid": os.getpid(), "port": PORT, "time": time.time(),
                           "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "algorithm": SPEC})
        with open(path, "a") as fh:
            fh.write(line + "\n")


def stop(children, code):
    for child in children:
        child.terminate()
    record("stop")
    os._exit(code)


def _partial_acceptance(n, req):
    """Verify rounds and their histogram for ``n`` tokens when each draft is accepted with ACCEPT."""
    import random

    seed = json.dumps([req.get("text"), req.get("input_ids"), req.get("sampling_params", {}).get("temperature")])
    rng = random.Random(seed)
    hist = [0] * (STEPS + 1)
    tokens, rounds = 1, 0  # the first token comes from the prefill
    while tokens < n:
        k = 0
        while k < STEPS and rng.random() < ACCEPT:
            k += 1
        hist[k] += 1
        tokens += k + 1
        rounds += 1
    return rounds, hist


def main():
    if RELEASE is not None:
        check_argv()
    record("start")
    print(f"fake-sglang: booting on port {PORT} (mode {MODE}); server_args api_key={API_KEY}", flush=True)
    # the lingering child writes nowhere: the end of the server's output must not be what stop() waits on
    quiet = MODE == "lingering_child"
    count = TP + 1 if TP > 1 else 1  # schedulers, plus a detokenizer beside several of them
    children = [Child(quiet) for _ in range(count)]
    pidfile = os.environ.get("FAKE_SGLANG_PIDFILE")
    if pidfile:
        with open(pidfile, "w") as fh:
            fh.write(" ".join(str(p) for p in (os.getpid(), *(c.pid for c in children))) + "\n")
    if MODE == "killed":
        time.sleep(BOOT_S / 2)
        print("fake-sglang: Load weight begin (simulated)", flush=True)
        for child in children:
            child.kill()
        os.kill(os.getpid(), signal.SIGKILL)
    if MODE == "crash":
        time.sleep(BOOT_S)
        print("fake-sglang: RuntimeError: CUDA out of memory (simulated)", flush=True)
        for child in children:
            child.kill()
        record("stop")
        sys.exit(3)
    try:
        once = os.environ.get("FAKE_SGLANG_BIND_FAIL_ONCE")
        if once and not os.path.exists(once):
            open(once, "w").close()
            raise OSError(98, "Address already in use")
        httpd = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    except OSError as exc:  # as SGLang's server does: the error in the log, then exit
        print(f"fake-sglang: ERROR: [Errno {exc.errno}] error while attempting to bind on address "
              f"('127.0.0.1', {PORT}): {exc.strerror.lower()}", flush=True)
        stop(children, 1)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    if MODE != "hang":
        # as SGLang: weights and memory pools first, then CUDA-graph capture (bench/placement.py waits for it)
        time.sleep(BOOT_S / 2)
        record("sized")
        print("fake-sglang: Capture cuda graph begin. This can take up to several minutes.", flush=True)
        time.sleep(BOOT_S / 2)
        ready.set()
        record("ready")
        print("fake-sglang: The server is fired up and ready to roll!", flush=True)
    if MODE == "exit_after":
        time.sleep(float(os.environ.get("FAKE_SGLANG_EXIT_AFTER_S", "1")))
        for child in children:
            child.kill()
        record("stop")
        os._exit(7)
    signal.signal(signal.SIGTERM, lambda *a: stop(children, 0))
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
