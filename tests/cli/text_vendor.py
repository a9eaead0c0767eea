#!/usr/bin/env python3
"""Hostile vendors on loopback for test_text.sh: SolarEdge v2, whose one site's
name carries escape sequences (OSC title, clear screen, CR, BEL, a C1 CSI), and
Solis, which refuses every request with such a message. Prints its port on the
first line, then serves until killed."""
import http.server
import json

NAME = "Evil\x1b]0;pwned\x07 \x1b[2J\rHome\x07\u009b31m"
MESSAGE = "Denied \x1b]0;pwned\x07\u009b2J\u202eevil"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/v2/sites") and self.headers.get("X-API-Key") == "hostilekey01":
            code, body = 200, {"sites": {"count": 1, "site": [{"siteId": 4242, "name": NAME}]}}
        else:
            code, body = 403, {"String": "Invalid token"}
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        data = json.dumps({"success": False, "code": "E9", "msg": MESSAGE}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
