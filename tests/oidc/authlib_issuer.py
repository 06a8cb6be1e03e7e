"""An RFC 9068 issuer that nobody on the ctr project wrote: Authlib's authorization server
with its JWT access-token generator and the client-credentials grant, served over HTTPS
(TLS 1.3) with OpenID Connect discovery and a JWKS holding an ES256 and an RS256 key.

Test fixture only. Prints `READY <issuer URL>` once it listens, then serves until killed.

    python authlib_issuer.py --cert leaf.pem --key leaf.key [--port 0]

Clients (secret `fixture-secret`), each a customer whose `sub` is its client id:
    c_alice  ES256 tokens for audience `ctr`
    c_bob    RS256 tokens for audience `ctr`
    c_carol  ES256 tokens for audience `another-api` (a token not meant for ctr)
    c_dave   ES256 tokens for audience `ctr` that expire after 1 second
"""

import argparse
import ssl
import sys

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from flask import Flask, jsonify
from joserfc.jwk import ECKey, KeySet, RSAKey
from werkzeug.serving import make_server

SECRET = "fixture-secret"
SCOPES = ("orders:write orders:read coupons:confirm coupons:read points:confirm "
          "points:read payments:confirm payments:read")


class Client(ClientMixin):
    def __init__(self, client_id, alg, audience, expires_in=600):
        self.client_id, self.alg, self.audience, self.expires_in = (
            client_id, alg, audience, expires_in)

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return None

    def get_allowed_scope(self, scope):
        allowed = set(SCOPES.split())
        return " ".join(s for s in (scope or SCOPES).split() if s in allowed)

    def check_redirect_uri(self, redirect_uri):
        return False

    def check_client_secret(self, client_secret):
        return client_secret == SECRET

    def check_endpoint_auth_method(self, method, endpoint):
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type):
        return False

    def check_grant_type(self, grant_type):
        return grant_type == "client_credentials"


CLIENTS = {c.client_id: c for c in [
    Client("c_alice", "ES256", "ctr"),
    Client("c_bob", "RS256", "ctr"),
    Client("c_carol", "ES256", "another-api"),
    Client("c_dave", "ES256", "ctr", expires_in=1),
]}

KEYS = KeySet([
    ECKey.generate_key("P-256", parameters={"kid": "fixture-es256", "use": "sig", "alg": "ES256"}),
    RSAKey.generate_key(2048, parameters={"kid": "fixture-rs256", "use": "sig", "alg": "RS256"}),
])


class Generator(JWTBearerTokenGenerator):
    def get_jwks(self):
        return KEYS.as_dict(private=True)

    def get_audiences(self, client, user, scope):
        return client.audience

    def access_token_generator(self, client, grant_type, user, scope):
        # One generator, the algorithm of the client (the server is single-threaded).
        self.alg = client.alg
        return super().access_token_generator(client, grant_type, user, scope)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    app = Flask("authlib-issuer")
    server = AuthorizationServer(
        app,
        query_client=CLIENTS.get,
        save_token=lambda token, request: None,
    )
    server.register_grant(ClientCredentialsGrant)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(args.cert, args.key)
    http = make_server("127.0.0.1", args.port, app, ssl_context=context, threaded=False)
    issuer = f"https://127.0.0.1:{http.server_port}"
    server.register_token_generator(
        "default",
        Generator(issuer=issuer, expires_generator=lambda client, grant: client.expires_in),
    )

    @app.get("/.well-known/openid-configuration")
    def discovery():
        return jsonify({
            "issuer": issuer,
            "jwks_uri": f"{issuer}/jwks",
            "token_endpoint": f"{issuer}/token",
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256", "RS256"],
        })

    @app.get("/jwks")
    def jwks():
        return jsonify(KEYS.as_dict(private=False))

    @app.post("/token")
    def token():
        return server.create_token_response()

    print(f"READY {issuer}", flush=True)
    http.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
