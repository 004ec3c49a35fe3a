"""Webhook sink for the VM tests: appends "<method> <path> <body>" per request to a file."""

import http.server

LOG = "/var/lib/hook-sink/requests"


class Sink(http.server.BaseHTTPRequestHandler):
    def record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with open(LOG, "ab") as log:
            log.write(f"{self.command} {self.path} ".encode() + body.replace(b"\n", b" ") + b"\n")
        self.send_response(200)
        self.end_headers()

    do_GET = do_POST = do_PUT = record


http.server.HTTPServer(("127.0.0.1", 8080), Sink).serve_forever()
