"""A tiny web process for `switchyard serve --procfile examples/dynos-demo/Procfile --app demo`:
it binds $PORT, as every Heroku web process does, and says which dyno answered."""

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DYNO = os.environ.get("DYNO", "?")


class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"Hello from {DYNO}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        # One line per request on stdout: it reaches `heroku logs` as app[web.N].
        print(f"{self.command} {self.path} {args[1] if len(args) > 1 else ''}", flush=True)


if __name__ == "__main__":
    port = int(os.environ["PORT"])
    print(f"{DYNO} listening on port {port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Hello).serve_forever()
