"""A receiver of wsq's webhooks, verified with the ``standardwebhooks`` package.

    WSQ_WEBHOOK_SECRET=whsec_... python webhook_receiver.py [port]

Answers 204 to a request whose signature verifies (and whose timestamp is within five minutes),
400 to any other; prints each event's type and webhook-id, once per webhook-id (a retry of an
event already handled is answered 204 and not handled again). Standard library plus
``pip install standardwebhooks``.
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError

MAX_BODY = 1024 * 1024
SEEN_IDS = 10_000  # the webhook-ids remembered for dedup

verifier = Webhook(os.environ["WSQ_WEBHOOK_SECRET"])
seen: OrderedDict[str, None] = OrderedDict()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_BODY:
            self._answer(413)
            return
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            event = verifier.verify(body, headers)
        except WebhookVerificationError as exc:
            print(f"refused: {exc}", file=sys.stderr, flush=True)
            self._answer(400)
            return
        msg_id = headers["webhook-id"]
        if msg_id not in seen:
            seen[msg_id] = None
            if len(seen) > SEEN_IDS:
                seen.popitem(last=False)
            print(f"{event['type']} {msg_id}", flush=True)
        self._answer(204)

    def _answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
