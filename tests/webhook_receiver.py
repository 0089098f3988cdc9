"""A webhook receiver for the tests: a separate process speaking plain HTTP.

    python tests/webhook_receiver.py PORT LOG_FILE [STATUS]

Every POST is appended to LOG_FILE as one JSON line {path, headers, body}
and answered with STATUS (default 200). A request to /redirect is answered
302 (to check that the sender follows no redirect)."""
from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_lock = threading.Lock()


def main() -> None:
    port, log_path = int(sys.argv[1]), sys.argv[2]
    status = int(sys.argv[3]) if len(sys.argv) > 3 else 200

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 — http.server's name
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode()
            with _lock, open(log_path, "a") as fh:
                fh.write(json.dumps({"path": self.path, "headers": dict(self.headers.items()), "body": body}) + "\n")
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "http://127.0.0.1:1/elsewhere")
            else:
                self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
