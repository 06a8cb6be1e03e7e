"""A webhook receiver written with the Standard Webhooks reference library (PyPI
`standardwebhooks`), not with ctr's code: the interop check of the relay's deliveries.

    python standard_receiver.py CERT KEY SECRETS_FILE

Serves HTTPS on 127.0.0.1 (a port of its own, printed first as `listening PORT`). For every
POST it prints one JSON line: which of the secrets in SECRETS_FILE (one `whsec_` per line)
verify the delivery as it came, and whether the library rejects the same delivery with its body
tampered with, with a stale timestamp (signed properly, ten minutes old), and under a secret of
its own. It answers 204 when a secret verified the delivery, 400 otherwise.
"""

import base64
import datetime
import http.server
import json
import os
import ssl
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def rejected(webhook, body, headers):
    try:
        webhook.verify(body, headers)
    except WebhookVerificationError:
        return True
    return False


def check(secrets, body, headers):
    verified_with = [i for i, s in enumerate(secrets) if not rejected(Webhook(s), body, headers)]
    first = Webhook(secrets[0])
    tampered = body.replace(b'"order.', b'"ordxr.', 1) if b'"order.' in body else body + b" "
    stale_at = datetime.datetime.now(tz=datetime.timezone.utc) - datetime.timedelta(minutes=10)
    stale_headers = dict(headers)
    stale_headers["webhook-timestamp"] = str(int(stale_at.timestamp()))
    stale_headers["webhook-signature"] = first.sign(headers["webhook-id"], stale_at, body.decode())
    stranger = Webhook("whsec_" + base64.b64encode(os.urandom(32)).decode())
    return {
        "id": headers.get("webhook-id"),
        "type": json.loads(body).get("type"),
        "verified_with": verified_with,
        "tampered_rejected": all(rejected(Webhook(s), tampered, headers) for s in secrets),
        "stale_rejected": rejected(first, body, stale_headers),
        "wrong_secret_rejected": rejected(stranger, body, headers),
    }


def main():
    cert, key, secrets_file = sys.argv[1:4]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            with open(secrets_file) as f:
                secrets = [line.strip() for line in f if line.strip().startswith("whsec_")]
            seen = check(secrets, body, headers)
            print(json.dumps(seen), flush=True)
            self.send_response(204 if seen["verified_with"] else 400)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
