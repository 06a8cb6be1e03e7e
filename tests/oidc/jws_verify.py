"""Verifies a compact JWS against a JWKS with Authlib's JOSE, a library nobody on the project
wrote: `jws_verify.py JWKS_JSON TOKEN` prints the header and claims as JSON, or exits 1.
"""

import base64
import json
import sys
import warnings

warnings.simplefilter("ignore")  # authlib.jose's deprecation notice

from authlib.jose import JsonWebKey, jwt  # noqa: E402


def main():
    jwks, token = json.loads(sys.argv[1]), sys.argv[2]
    head = token.split(".")[0]
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    keys = JsonWebKey.import_key_set(jwks)
    key = keys.find_by_kid(header["kid"])
    try:
        claims = jwt.decode(token, key)
    except Exception as error:  # noqa: BLE001 - any failure is a refusal
        sys.exit(f"refused: {error}")
    print(json.dumps({"header": header, "claims": dict(claims)}))


if __name__ == "__main__":
    main()
