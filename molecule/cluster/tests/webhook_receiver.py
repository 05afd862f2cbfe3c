"""The lab's webhook receiver for Alertmanager (stdlib only): every POST body is appended
to a file as one JSON line, {"received": epoch seconds, "body": the notification}.

Copied to the monitoring host and run there as a transient unit by the alerting drill
(tests/test_4_faults.py):  python3 webhook_receiver.py ADDRESS PORT FILE"""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer


class Receiver(BaseHTTPRequestHandler):
    out = ""

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(self.out, "a", encoding="utf-8") as f:
            f.write(json.dumps({"received": time.time(), "body": json.loads(body)}) + "\n")
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    address, port, Receiver.out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    HTTPServer((address, port), Receiver).serve_forever()
