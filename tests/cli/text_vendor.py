#!/usr/bin/env python3
"""A hostile SolarEdge v2 on loopback for test_text.sh: its one site's name
carries escape sequences (OSC title, clear screen, CR, BEL, a C1 CSI). Prints
its port on the first line, then serves until killed."""
import http.server
import json

NAME = "Evil\x1b]0;pwned\x07 \x1b[2J\rHome\x07\u009b31m"


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

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
