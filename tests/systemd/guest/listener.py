#!/usr/bin/env python3
"""Notification listener inside the test VM: records every HTTP request as one JSON line."""
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

host, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]


class H(BaseHTTPRequestHandler):
    def _record(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode("utf-8", "replace") if n else ""
        rec = {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
        with open(out, "a") as f:
            f.write(json.dumps(rec) + "\n")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_POST = do_PUT = do_GET = _record

    def log_message(self, *a):
        pass


HTTPServer((host, port), H).serve_forever()
