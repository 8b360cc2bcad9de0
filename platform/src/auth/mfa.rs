//! TOTP second factor (RFC 6238: SHA-1, 6 digits, 30 s) with ±1 step of skew, each time step
//! accepted once only, single-use recovery codes, and the short-lived `mfa_token` that binds
//! the password step to the code step.

use diesel::prelude::*;
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Builder, Secret};

use crate::crypto::{keyed_hash, random_token, seal};
use crate::db::schema::{mfa_challenges as mc, recovery_codes as rc, users};
use crate::db::DbConnection;
use crate::http::percent_encode as pct;

pub const ISSUER: &str = "SecCollab";
pub const STEP: u64 = 30;
pub const CHALLENGE_TTL_SECS: i64 = 300;
pub const CHALLENGE_MAX_ATTEMPTS: i32 = 5;
const RECOVERY_PURPOSE: &str = "recovery";
const CHALLENGE_PURPOSE: &str = "mfa_challenge";

fn totp(secret: &[u8]) -> totp_rs::Totp {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(0)
        .with_step_duration(STEP)
        .with_secret(Secret::from(secret.to_vec()))
        .build_noncompliant()
}

/// Seals a TOTP secret under the current master key, bound to the user.
pub fn seal_secret(keys: &crate::keys::Keys, user_id: &str, secret: &[u8]) -> String {
    seal(&keys.master, &format!("totp:{user_id}"), secret)
}

/// Opens a sealed TOTP secret (under the current master key, or one being rotated).
pub fn open_secret(keys: &crate::keys::Keys, user_id: &str, sealed: &str) -> Option<Vec<u8>> {
    keys.open_sealed(&format!("totp:{user_id}"), sealed)
}

/// A fresh 160-bit secret.
pub fn new_secret() -> Vec<u8> {
    let mut s = vec![0u8; 20];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut s);
    s
}

pub fn base32(secret: &[u8]) -> String {
    base32::encode(base32::Alphabet::Rfc4648 { padding: false }, secret)
}

pub fn otpauth_uri(secret: &[u8], account: &str) -> String {
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits=6&period={STEP}",
        pct(ISSUER),
        pct(account),
        base32(secret),
        pct(ISSUER)
    )
}

pub fn qr_svg(uri: &str) -> String {
    qrcode::QrCode::new(uri.as_bytes())
        .map(|c| c.render::<qrcode::render::svg::Color<'_>>().min_dimensions(200, 200).build())
        .unwrap_or_default()
}

/// The time step a code matches (current, previous or next), if any.
pub fn matching_step(secret: &[u8], code: &str, now_secs: u64) -> Option<i64> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let t = totp(secret);
    let step = now_secs / STEP;
    [step.saturating_sub(1), step, step + 1].into_iter().find_map(|s| {
        let expected = t.generate(s * STEP).to_string();
        bool::from(expected.as_bytes().ct_eq(code.as_bytes())).then_some(s as i64)
    })
}

/// Claims `step` for the user: succeeds only if no step at or after it was used before.
pub fn claim_step(conn: &mut DbConnection, user_id: &str, step: i64) -> QueryResult<bool> {
    let n = diesel::update(
        users::table
            .filter(users::id.eq(user_id))
            .filter(users::totp_last_step.is_null().or(users::totp_last_step.lt(step))),
    )
    .set(users::totp_last_step.eq(step))
    .execute(conn)?;
    Ok(n == 1)
}

fn normalize_recovery(code: &str) -> String {
    code.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_lowercase()
}

/// Replaces the user's recovery codes with 10 new ones, returned in clear once.
pub fn new_recovery_codes(conn: &mut DbConnection, master: &[u8; 32], user_id: &str) -> QueryResult<Vec<String>> {
    let codes: Vec<String> = (0..10)
        .map(|_| {
            let mut b = [0u8; 8];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
            let s = base32::encode(base32::Alphabet::Rfc4648 { padding: false }, &b).to_lowercase();
            format!("{}-{}", &s[..5], &s[5..10])
        })
        .collect();
    diesel::delete(rc::table.filter(rc::user_id.eq(user_id))).execute(conn)?;
    for c in &codes {
        diesel::insert_into(rc::table)
            .values((
                rc::code_hash.eq(keyed_hash(master, RECOVERY_PURPOSE, &normalize_recovery(c))),
                rc::user_id.eq(user_id),
            ))
            .execute(conn)?;
    }
    Ok(codes)
}

/// Spends a recovery code; true when it was valid and unused.
pub fn use_recovery_code(conn: &mut DbConnection, master: &[u8; 32], user_id: &str, code: &str) -> QueryResult<bool> {
    let norm = normalize_recovery(code);
    if norm.len() != 10 {
        return Ok(false);
    }
    let n = diesel::update(
        rc::table
            .filter(rc::code_hash.eq(keyed_hash(master, RECOVERY_PURPOSE, &norm)))
            .filter(rc::user_id.eq(user_id))
            .filter(rc::used_at.is_null()),
    )
    .set(rc::used_at.eq(crate::time::now_micros()))
    .execute(conn)?;
    Ok(n == 1)
}

pub fn clear(conn: &mut DbConnection, user_id: &str) -> QueryResult<()> {
    diesel::update(users::table.filter(users::id.eq(user_id)))
        .set((
            users::mfa_enabled.eq(false),
            users::totp_secret_enc.eq(None::<String>),
            users::totp_pending_enc.eq(None::<String>),
            users::updated_at.eq(crate::time::now_micros()),
        ))
        .execute(conn)?;
    diesel::delete(rc::table.filter(rc::user_id.eq(user_id))).execute(conn)?;
    Ok(())
}

/// Live challenges an account may hold at once; a new one ends the oldest beyond this. (Each
/// wrong code counts toward the account's lockout whichever challenge it came through; the cap
/// keeps an attacker with the password from holding many challenges open.)
pub const MAX_LIVE_CHALLENGES: i64 = 3;

/// Starts the code step of a sign-in; returns the `mfa_token`. At most
/// [`MAX_LIVE_CHALLENGES`] stay live per account: the oldest are ended.
pub fn new_challenge(conn: &mut DbConnection, master: &[u8; 32], user_id: &str) -> QueryResult<String> {
    let token = random_token(32);
    let now = crate::time::now_micros();
    crate::db::write_transaction(conn, |c| {
        diesel::delete(mc::table.filter(mc::user_id.eq(user_id)).filter(mc::expires_at.le(now))).execute(c)?;
        diesel::insert_into(mc::table)
            .values((
                mc::token_hash.eq(keyed_hash(master, CHALLENGE_PURPOSE, &token)),
                mc::user_id.eq(user_id),
                mc::expires_at.eq(now + CHALLENGE_TTL_SECS * 1_000_000),
            ))
            .execute(c)?;
        let live: Vec<(String, i64)> = mc::table
            .filter(mc::user_id.eq(user_id))
            .filter(mc::used.eq(false))
            .order((mc::expires_at.desc(), mc::token_hash.desc()))
            .select((mc::token_hash, mc::expires_at))
            .load(c)?;
        let mine = keyed_hash(master, CHALLENGE_PURPOSE, &token);
        let stale: Vec<String> =
            live.into_iter().map(|(h, _)| h).filter(|h| *h != mine).skip(MAX_LIVE_CHALLENGES as usize - 1).collect();
        if !stale.is_empty() {
            diesel::update(mc::table.filter(mc::token_hash.eq_any(&stale))).set(mc::used.eq(true)).execute(c)?;
        }
        Ok(token)
    })
}

/// The user of a live challenge (not expired, not used, attempts left).
pub fn challenge_user(conn: &mut DbConnection, master: &[u8; 32], token: &str) -> QueryResult<Option<String>> {
    mc::table
        .filter(mc::token_hash.eq(keyed_hash(master, CHALLENGE_PURPOSE, token)))
        .filter(mc::expires_at.gt(crate::time::now_micros()))
        .filter(mc::used.eq(false))
        .filter(mc::attempts.lt(CHALLENGE_MAX_ATTEMPTS))
        .select(mc::user_id)
        .first(conn)
        .optional()
}

pub fn challenge_failed(conn: &mut DbConnection, master: &[u8; 32], token: &str) -> QueryResult<()> {
    diesel::update(mc::table.filter(mc::token_hash.eq(keyed_hash(master, CHALLENGE_PURPOSE, token))))
        .set(mc::attempts.eq(mc::attempts + 1))
        .execute(conn)?;
    Ok(())
}

/// Marks the challenge used; false if another request used it first.
pub fn challenge_done(conn: &mut DbConnection, master: &[u8; 32], token: &str) -> QueryResult<bool> {
    let n = diesel::update(
        mc::table.filter(mc::token_hash.eq(keyed_hash(master, CHALLENGE_PURPOSE, token))).filter(mc::used.eq(false)),
    )
    .set(mc::used.eq(true))
    .execute(conn)?;
    Ok(n == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_vector_and_skew() {
        // RFC 6238 appendix B, SHA-1 secret "12345678901234567890", T = 59 s → 94287082 (8 digits);
        // the 6-digit code is its last six digits.
        let secret = b"12345678901234567890";
        assert_eq!(matching_step(secret, "287082", 59), Some(1));
        assert_eq!(matching_step(secret, "287082", 59 + 30), Some(1), "previous step accepted");
        assert_eq!(matching_step(secret, "287082", 59 + 90), None, "two steps late refused");
        assert_eq!(matching_step(secret, "28708", 59), None);
        assert!(otpauth_uri(secret, "a@b.c")
            .starts_with("otpauth://totp/SecCollab:a%40b.c?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"));
    }
}
