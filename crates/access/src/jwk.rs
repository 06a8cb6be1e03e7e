//! Reading public JWKs as other libraries write them.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};

/// `jwk` with its EC coordinates at the curve's full length. RFC 7518 wants them so; some
/// libraries (Authlib among them) drop leading zero bytes, about one P-256 key in a hundred,
/// and jsonwebtoken would read such a key as another point. Other key types are as they are.
/// `None` for a coordinate longer than the curve's, empty, or not base64url.
pub(crate) fn with_full_coordinates(jwk: &Jwk) -> Option<Jwk> {
    let mut full = jwk.clone();
    if let AlgorithmParameters::EllipticCurve(ec) = &mut full.algorithm {
        let len = match ec.curve {
            EllipticCurve::P256 => 32,
            EllipticCurve::P384 => 48,
            EllipticCurve::P521 => 66,
            _ => return None,
        };
        ec.x = field_element(&ec.x, len)?;
        ec.y = field_element(&ec.y, len)?;
    }
    Some(full)
}

fn field_element(value: &str, len: usize) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
    if bytes.is_empty() || bytes.len() > len {
        return None;
    }
    let mut full = vec![0; len - bytes.len()];
    full.extend(bytes);
    Some(URL_SAFE_NO_PAD.encode(full))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    fn ec(x: &[u8], y: &[u8]) -> Jwk {
        serde_json::from_value(serde_json::json!({
            "kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        }))
        .unwrap()
    }

    #[test]
    fn short_coordinates_are_padded_and_long_or_empty_ones_refused() {
        let full = with_full_coordinates(&ec(&[7; 31], &[9; 32])).unwrap();
        let AlgorithmParameters::EllipticCurve(params) = full.algorithm else {
            panic!("an EC key");
        };
        let x = URL_SAFE_NO_PAD.decode(params.x).unwrap();
        assert_eq!((x.len(), x[0], x[1]), (32, 0, 7));
        assert_eq!(URL_SAFE_NO_PAD.decode(params.y).unwrap(), [9; 32]);
        assert!(with_full_coordinates(&ec(&[7; 33], &[9; 32])).is_none());
        assert!(with_full_coordinates(&ec(&[], &[9; 32])).is_none());
    }
}
