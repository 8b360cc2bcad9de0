//! Access tokens: short-lived JWTs signed with HS256 (the only algorithm accepted), carrying
//! `iss`, `aud`, `sub`, `exp`, `iat`, `jti` and `sid`. Every claim is required and checked.

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

pub const ISSUER: &str = "seccollab";
pub const AUDIENCE: &str = "seccollab-api";
const ALGORITHM: Algorithm = Algorithm::HS256;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub sid: String,
}

/// Signs an access token for `user_id` in session `sid`.
pub fn issue(key: &[u8; 32], user_id: &str, sid: &str, ttl_secs: u64) -> String {
    let now = crate::time::now_micros() / 1_000_000;
    let claims = Claims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: user_id.into(),
        exp: now + ttl_secs as i64,
        iat: now,
        jti: uuid::Uuid::now_v7().to_string(),
        sid: sid.into(),
    };
    encode(&Header::new(ALGORITHM), &claims, &EncodingKey::from_secret(key)).expect("HS256 signing")
}

/// Validates signature, algorithm, issuer, audience and expiry.
pub fn validate(key: &[u8; 32], token: &str) -> Option<Claims> {
    let mut v = Validation::new(ALGORITHM);
    v.algorithms = vec![ALGORITHM];
    v.set_issuer(&[ISSUER]);
    v.set_audience(&[AUDIENCE]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    v.leeway = 5;
    v.validate_exp = true;
    decode::<Claims>(token, &DecodingKey::from_secret(key), &v).ok().map(|d| d.claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    const KEY: [u8; 32] = [9; 32];

    #[test]
    fn round_trip_and_attacks() {
        let t = issue(&KEY, "u1", "s1", 60);
        let c = validate(&KEY, &t).expect("valid");
        assert_eq!((c.sub.as_str(), c.sid.as_str()), ("u1", "s1"));
        assert!(validate(&[1; 32], &t).is_none(), "other key");
        let parts: Vec<&str> = t.split('.').collect();
        // alg: none with the same claims and no signature.
        let none = format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#), parts[1]);
        assert!(validate(&KEY, &none).is_none());
        // Tampered payload.
        let mut payload = URL_SAFE_NO_PAD.decode(parts[1]).unwrap();
        let s = String::from_utf8(payload.clone()).unwrap().replace("u1", "u2");
        payload = s.into_bytes();
        let forged = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(payload), parts[2]);
        assert!(validate(&KEY, &forged).is_none());
        // Expired.
        let old = issue(&KEY, "u1", "s1", 0);
        let mut c = validate(&KEY, &old).unwrap();
        c.exp -= 3600;
        let expired = encode(&Header::new(ALGORITHM), &c, &EncodingKey::from_secret(&KEY)).unwrap();
        assert!(validate(&KEY, &expired).is_none());
        // Another algorithm with the same key.
        let hs512 = encode(&Header::new(Algorithm::HS512), &c, &EncodingKey::from_secret(&KEY)).unwrap();
        assert!(validate(&KEY, &hs512).is_none());
    }
}
