//! The one check of a user's secrets, for every caller: the sign-in's password and second-factor
//! steps (API, web UI, console), changing the password, turning MFA off, and re-verification.
//!
//! Each check first asks the lockout (`security::throttle`): while the account is locked, or
//! the address must back off, the answer is [`SecretError::Locked`] / [`SecretError::Backoff`]
//! **even for the right secret**. A wrong secret is audited (`action`, `reason`) and counted
//! toward the account's one lockout, whichever caller checked it. Only a complete sign-in
//! ([`signed_in`]) clears the account's counter, never a correct password that still leads to
//! a second-factor step, so fresh challenges never buy fresh guesses.

use serde_json::json;

use super::mfa;
use super::users::User;
use crate::audit::{AuditAction, NewAuditEntry, Outcome};
use crate::http::{ApiError, ApiResult, ClientInfo};
use crate::security::throttle::{self, Verdict};
use crate::AppState;

/// Why a secret was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretError {
    /// The account is locked for this many more seconds (423).
    Locked(u64),
    /// The caller's address must wait this many more seconds (429).
    Backoff(u64),
    /// The secret is wrong (counted).
    Wrong,
}

/// Which second factor answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondFactor {
    Totp,
    RecoveryCode,
}

impl SecondFactor {
    pub fn as_str(self) -> &'static str {
        match self {
            SecondFactor::Totp => "totp",
            SecondFactor::RecoveryCode => "recovery_code",
        }
    }
}

/// Which second factors a check accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// A current TOTP code or an unused recovery code (sign-in, re-verification).
    CodeOrRecovery,
    /// A current TOTP code only (turning MFA off).
    TotpOnly,
}

/// 423 `account_locked` with `Retry-After`.
pub fn locked(secs: u64) -> ApiError {
    ApiError {
        retry_after: Some(secs),
        ..ApiError::new(
            rocket::http::Status::Locked,
            "account_locked",
            format!("too many failed sign-ins; this account is locked for {secs} s"),
        )
    }
}

/// 429 `rate_limited` with `Retry-After`.
pub fn backoff(secs: u64) -> ApiError {
    ApiError {
        retry_after: Some(secs),
        ..ApiError::new(
            rocket::http::Status::TooManyRequests,
            "rate_limited",
            format!("too many failed sign-ins from your address; wait {secs} s"),
        )
    }
}

impl SecretError {
    /// The answer to give: locked and back-off as they are, a wrong secret as `wrong`.
    pub fn answer(self, wrong: impl FnOnce() -> ApiError) -> ApiError {
        match self {
            SecretError::Locked(s) => locked(s),
            SecretError::Backoff(s) => backoff(s),
            SecretError::Wrong => wrong(),
        }
    }
}

/// Result of a check: `Ok`, a refusal, or a failure of the database or hashing pool.
pub type Checked<T> = ApiResult<Result<T, SecretError>>;

fn entry(action: AuditAction, outcome: Outcome, client: &ClientInfo) -> NewAuditEntry {
    NewAuditEntry::new(action.as_str(), outcome).client(client.ip_string(), client.user_agent.clone())
}

/// May a secret of account `email` be checked now, from this client?
pub async fn gate(state: &AppState, email: &str, client: &ClientInfo) -> Checked<()> {
    let (policy, email, ip) = (state.policy.lockout.clone(), email.to_string(), client.ip_string());
    let verdict = state
        .db
        .run(move |c| {
            throttle::check(c, &policy, &email, ip.as_deref(), crate::time::now_micros()).map_err(ApiError::from)
        })
        .await?;
    Ok(match verdict {
        Verdict::Allowed => Ok(()),
        Verdict::AccountLocked(s) => Err(SecretError::Locked(s)),
        Verdict::IpBackoff(s) => Err(SecretError::Backoff(s)),
    })
}

/// Counts a failed secret of account `email` (known or not) toward its lockout and the
/// address's back-off; audits a resulting lock. The lock's length when this failure locked it.
pub async fn count_failure(
    state: &AppState,
    email: &str,
    client: &ClientInfo,
    actor: Option<String>,
) -> ApiResult<Option<u64>> {
    let policy = state.policy.lockout.clone();
    let (email2, ip) = (email.to_string(), client.ip_string());
    let locked = state
        .db
        .run(move |c| {
            throttle::record_failure(c, &policy, &email2, ip.as_deref(), crate::time::now_micros())
                .map_err(ApiError::from)
        })
        .await?;
    if let Some(secs) = locked {
        state
            .audit
            .record(entry(AuditAction::SecurityAccountLocked, Outcome::Denied, client).actor(actor).details(json!({
                "email": email, "lock_secs": secs, "reason": "too many failed sign-ins",
            })))
            .await;
    }
    Ok(locked)
}

/// Audits a wrong secret of a known user as `action` and counts it.
async fn wrong(state: &AppState, client: &ClientInfo, user: &User, action: AuditAction, reason: &str) -> Checked<()> {
    state
        .audit
        .record(entry(action, Outcome::Failure, client).actor(Some(user.id.clone())).details(json!({"reason": reason})))
        .await;
    Ok(Err(match count_failure(state, &user.email, client, Some(user.id.clone())).await? {
        Some(secs) => SecretError::Locked(secs),
        None => SecretError::Wrong,
    }))
}

/// Checks `user`'s own password (outside the sign-in: password change, MFA off,
/// re-verification), under the lockout.
pub async fn check_password(
    state: &AppState,
    client: &ClientInfo,
    user: &User,
    password: String,
    action: AuditAction,
) -> Checked<()> {
    if let Err(e) = gate(state, &user.email, client).await? {
        return Ok(Err(e));
    }
    let phc = user.password_hash.clone().filter(|_| password.chars().count() <= 1024);
    if state.hasher.verify(password, phc).await?.ok {
        return Ok(Ok(()));
    }
    wrong(state, client, user, action, "wrong_password").await
}

/// Checks a second factor of `user` under the lockout: a TOTP code (each time step once only)
/// or, where accepted, an unused recovery code (spent here).
pub async fn check_second_factor(
    state: &AppState,
    client: &ClientInfo,
    user: &User,
    code: String,
    accept: Accept,
    action: AuditAction,
) -> Checked<SecondFactor> {
    if let Err(e) = gate(state, &user.email, client).await? {
        return Ok(Err(e));
    }
    if let Some(f) = match_second_factor(state, user, code, accept).await? {
        return Ok(Ok(f));
    }
    wrong(state, client, user, action, "invalid_mfa_code").await.map(|r| r.map(|()| SecondFactor::Totp))
}

/// Which second factor `code` is, if any (spending what matched).
async fn match_second_factor(
    state: &AppState,
    user: &User,
    code: String,
    accept: Accept,
) -> ApiResult<Option<SecondFactor>> {
    let secret = user.totp_secret_enc.as_deref().and_then(|s| mfa::open_secret(&state.keys, &user.id, s));
    let (uid, master) = (user.id.clone(), state.keys.hash_key);
    Ok(state
        .db
        .q(move |c| {
            let now = (crate::time::now_micros() / 1_000_000) as u64;
            if let Some(step) = secret.as_deref().and_then(|s| mfa::matching_step(s, &code, now)) {
                return Ok(mfa::claim_step(c, &uid, step)?.then_some(SecondFactor::Totp));
            }
            if accept == Accept::TotpOnly {
                return Ok(None);
            }
            Ok(mfa::use_recovery_code(c, &master, &uid, &code)?.then_some(SecondFactor::RecoveryCode))
        })
        .await?)
}

/// A complete sign-in of account `email` (or a completed re-verification): its failure
/// counter is cleared.
pub async fn signed_in(state: &AppState, email: &str) -> ApiResult<()> {
    let email = email.to_string();
    state.db.run(move |c| throttle::record_success(c, &email).map_err(ApiError::from)).await
}
