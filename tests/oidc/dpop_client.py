"""A DPoP client nobody on the project wrote the crypto of: Authlib's JOSE makes keys,
RFC 7638 thumbprints and RFC 9449 proofs, and checks proofs ctr makes.

    dpop_client.py keygen --crv P-256          -> {"jwk": <private JWK>, "jkt": <thumbprint>}
    dpop_client.py proof --jwk J --htm POST --htu URL [--ath A]   -> the proof
    dpop_client.py verify --proof P            -> {"jkt": ..., "header": ..., "claims": ...}
"""

import argparse
import json
import sys
import time
import uuid
import warnings

warnings.simplefilter("ignore")  # authlib.jose's deprecation notice

from authlib.jose import JsonWebKey, jwt  # noqa: E402

ALGORITHMS = {"P-256": "ES256", "P-384": "ES384"}


def keygen(args):
    key = JsonWebKey.generate_key("EC", args.crv, is_private=True)
    print(json.dumps({"jwk": key.as_dict(is_private=True), "jkt": key.thumbprint()}))


def proof(args):
    key = JsonWebKey.import_key(json.loads(args.jwk))
    public = key.as_dict(is_private=False)
    public.pop("kid", None)
    header = {"typ": "dpop+jwt", "alg": ALGORITHMS[public["crv"]], "jwk": public}
    claims = {"jti": str(uuid.uuid4()), "htm": args.htm, "htu": args.htu, "iat": int(time.time())}
    if args.ath:
        claims["ath"] = args.ath
    print(jwt.encode(header, claims, key).decode())


def verify(args):
    header_part = args.proof.split(".")[0]
    padded = header_part + "=" * (-len(header_part) % 4)
    import base64

    header = json.loads(base64.urlsafe_b64decode(padded))
    if header.get("typ") != "dpop+jwt" or "d" in header["jwk"]:
        sys.exit("not a DPoP proof with a public key")
    key = JsonWebKey.import_key(header["jwk"])
    claims = jwt.decode(args.proof, key)  # raises on a bad signature
    print(json.dumps({"jkt": key.thumbprint(), "header": header, "claims": dict(claims)}))


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(required=True)
    p = sub.add_parser("keygen")
    p.add_argument("--crv", default="P-256", choices=sorted(ALGORITHMS))
    p.set_defaults(run=keygen)
    p = sub.add_parser("proof")
    p.add_argument("--jwk", required=True)
    p.add_argument("--htm", required=True)
    p.add_argument("--htu", required=True)
    p.add_argument("--ath")
    p.set_defaults(run=proof)
    p = sub.add_parser("verify")
    p.add_argument("--proof", required=True)
    p.set_defaults(run=verify)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
