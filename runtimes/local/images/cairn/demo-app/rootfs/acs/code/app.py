"""cairn's demo app: a small HTTP service with knobs for every failure a release must handle.

Standard library only, so the same file runs as a local-runtime instance and inside the
Kubernetes test image. Every knob is an environment variable, so a test changes the app's
behaviour through configuration, exactly as a user would.

Endpoints:
    GET /healthz   200 "ok" while healthy (see DEMO_FAIL_HEALTH, DEMO_HEALTH_FILE)
    GET /version   the version this instance ships, as plain text
    GET /          a JSON line with version, hostname and pid
    GET /slow?ms=N answers after N milliseconds (open connections for drain tests)

Knobs:
    PORT                    listening port (default 8080)
    APP_VERSION             version string; else the VERSION file beside this one; else "dev"
    DEMO_START_DELAY_S      sleep before listening (slow start)
    DEMO_FAIL_HEALTH=1      /healthz always answers 500
    DEMO_HEALTH_FILE=PATH   /healthz answers 503 unless PATH exists (a dependency that comes back)
    DEMO_CRASH_AFTER_S      exit 1 after that many seconds
    DEMO_GROW_MB_PER_S      allocate this many MB every second (memory growth -> OOM)
    DEMO_SHUTDOWN_DELAY_S   on SIGTERM keep serving this long, then exit (slow shutdown)
    DEMO_LOG_FILE=PATH      also append each request line to PATH
"""

from __future__ import annotations

import http.server
import json
import os
import pathlib
import signal
import socket
import sys
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent


def _version() -> str:
    if os.environ.get("APP_VERSION"):
        return os.environ["APP_VERSION"]
    for candidate in (HERE / "VERSION", pathlib.Path.cwd() / "VERSION"):
        if candidate.is_file():
            return candidate.read_text().strip()
    return "dev"


VERSION = _version()
_log_file = os.environ.get("DEMO_LOG_FILE")
_hog: list[bytearray] = []


def log(line: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    text = f"{stamp} {line}"
    print(text, flush=True)
    if _log_file:
        with open(_log_file, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, status: int, body: str, content_type: str = "text/plain") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path == "/healthz":
            health_file = os.environ.get("DEMO_HEALTH_FILE")
            if os.environ.get("DEMO_FAIL_HEALTH") == "1":
                self._send(500, "unhealthy: DEMO_FAIL_HEALTH=1\n")
            elif health_file and not os.path.exists(health_file):
                self._send(503, f"unhealthy: {health_file} missing\n")
            else:
                self._send(200, "ok\n")
        elif path == "/version":
            self._send(200, VERSION + "\n")
        elif path == "/slow":
            params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
            time.sleep(int(params.get("ms", "1000")) / 1000)
            self._send(200, VERSION + "\n")
        elif path == "/":
            body = {"version": VERSION, "hostname": socket.gethostname(), "pid": os.getpid()}
            self._send(200, json.dumps(body) + "\n", "application/json")
        else:
            self._send(404, "not found\n")

    def log_message(self, format: str, *args: object) -> None:
        log(f"{self.address_string()} {format % args} version={VERSION}")


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _grow_memory(mb_per_s: float) -> None:
    while True:
        _hog.append(bytearray(os.urandom(1) * int(mb_per_s * 1024 * 1024)))
        time.sleep(1)


def main() -> None:
    port = int(os.environ.get("PORT", "8080"))
    delay = float(os.environ.get("DEMO_START_DELAY_S", "0"))
    if delay:
        log(f"slow start: sleeping {delay}s")
        time.sleep(delay)
    server = Server(("0.0.0.0", port), Handler)

    def on_term(signum: int, _frame: object) -> None:
        shutdown_delay = float(os.environ.get("DEMO_SHUTDOWN_DELAY_S", "0"))
        log(f"SIGTERM received, stopping in {shutdown_delay}s")

        def stop() -> None:
            time.sleep(shutdown_delay)
            server.shutdown()

        threading.Thread(target=stop, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    crash_after = os.environ.get("DEMO_CRASH_AFTER_S")
    if crash_after:
        threading.Timer(float(crash_after), lambda: (log("crashing on purpose"), os._exit(1))).start()
    grow = os.environ.get("DEMO_GROW_MB_PER_S")
    if grow:
        threading.Thread(target=_grow_memory, args=(float(grow),), daemon=True).start()
    log(f"demo app {VERSION} listening on :{port}")
    server.serve_forever(poll_interval=0.05)  # a prompt exit on SIGTERM keeps replacements fast
    log("stopped")
    sys.exit(0)


if __name__ == "__main__":
    main()
