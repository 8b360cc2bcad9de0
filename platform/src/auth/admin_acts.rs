//! What an administrator or operator does to an account — disable, enable, unlock, reset MFA,
//! lift a re-verification hold — as one use case each, for the JSON API
//! (`/api/admin/users/{id}/…`), the console and the CLI (`seccollab user disable|enable`). It
//! knows no HTTP: the caller says who acts and from where ([`Actor`]), gets the account back or
//! an [`ActError`], and maps that once to its own answer. Every act is audited here, with the
//! same action whichever door it came through (`details.via` says which), and sessions it ends
//! or changes are dropped on every node at once (`AppState::sessions_revoked`).

use serde_json::json;

use super::users::{self, User, UserError};
use super::{mfa, sessions};
use crate::audit::{AuditAction, NewAuditEntry, Outcome};
use crate::db::DbError;
use crate::AppState;

/// Which front end an act came through (`details.via` in the audit entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Api,
    Console,
    Cli,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Api => "api",
            Via::Console => "console",
            Via::Cli => "cli",
        }
    }
}

/// Who acts, and from where. `user_id` is `None` for an operator at the host (the CLI).
#[derive(Debug, Clone)]
pub struct Actor {
    pub user_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub via: Via,
}

impl Actor {
    /// The operator at the host, through the CLI.
    pub fn cli() -> Self {
        Self { user_id: None, ip: None, user_agent: None, via: Via::Cli }
    }

    fn entry(&self, action: AuditAction, target: &User, details: serde_json::Value) -> NewAuditEntry {
        let mut details = details;
        if let Some(d) = details.as_object_mut() {
            d.insert("via".into(), json!(self.via.as_str()));
        }
        NewAuditEntry::new(action.as_str(), Outcome::Success)
            .client(self.ip.clone(), self.user_agent.clone())
            .actor(self.user_id.clone())
            .target("user", target.id.clone())
            .details(details)
    }
}

/// Why an act was not done.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error("no such user")]
    NotFound,
    /// An administrator may not disable their own account (they would lock themselves out).
    #[error("you cannot disable your own account")]
    SelfDisable,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<UserError> for ActError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::NotFound => ActError::NotFound,
            UserError::Db(e) => ActError::Db(e.into()),
            other => ActError::Db(DbError::Task(other.to_string())),
        }
    }
}

/// The account named by id (or, for the CLI, by e-mail).
async fn account(state: &AppState, id_or_email: &str) -> Result<User, ActError> {
    let key = id_or_email.to_string();
    state.db.run(move |c| users::find(c, &key).map_err(ActError::from)).await
}

/// Disables an account and ends every session of it at once (audited `admin.user_disable`).
pub async fn disable(state: &AppState, by: &Actor, id_or_email: &str) -> Result<User, ActError> {
    let u = account(state, id_or_email).await?;
    if by.user_id.as_deref() == Some(u.id.as_str()) {
        return Err(ActError::SelfDisable);
    }
    let uid = u.id.clone();
    let revoked = state
        .db
        .run(move |c| {
            crate::db::write_transaction(c, |c| {
                users::set_disabled(c, &uid, true)?;
                Ok::<_, UserError>(sessions::revoke_all(c, &uid, None, "disabled")?)
            })
            .map_err(ActError::from)
        })
        .await?;
    state.sessions_revoked(&revoked);
    state.audit.record(by.entry(AuditAction::AdminUserDisable, &u, json!({"sessions_revoked": revoked.len()}))).await;
    Ok(u)
}

/// Enables a disabled account, or reinstates one an automatic response suspended (the undo of
/// `suspend_account`); audited `admin.user_enable`. Holds for re-verification (`force_mfa`) are
/// a separate response with their own undo ([`clear_reverify`]).
pub async fn enable(state: &AppState, by: &Actor, id_or_email: &str) -> Result<User, ActError> {
    let u = account(state, id_or_email).await?;
    let uid = u.id.clone();
    state
        .db
        .run(move |c| crate::db::write_transaction(c, |c| users::set_disabled(c, &uid, false)).map_err(ActError::from))
        .await?;
    state
        .audit
        .record(by.entry(
            AuditAction::AdminUserEnable,
            &u,
            json!({"was_disabled": u.disabled, "was_suspended_by": u.suspended_reason}),
        ))
        .await;
    Ok(u)
}

/// Lifts a sign-in lock (audited `admin.user_unlock` with whether there was one).
pub async fn unlock(state: &AppState, by: &Actor, id_or_email: &str) -> Result<User, ActError> {
    let u = account(state, id_or_email).await?;
    let email = u.email.clone();
    let was_locked = state.db.q(move |c| crate::security::throttle::unlock(c, &email)).await?;
    state.audit.record(by.entry(AuditAction::AdminUserUnlock, &u, json!({"was_locked": was_locked}))).await;
    Ok(u)
}

/// Lifts the re-verification hold of every session of an account (the undo of `force_mfa`;
/// audited `admin.user_clear_reverify`).
pub async fn clear_reverify(state: &AppState, by: &Actor, id_or_email: &str) -> Result<User, ActError> {
    let u = account(state, id_or_email).await?;
    let uid = u.id.clone();
    let cleared = state.db.q(move |c| sessions::clear_reverify(c, &uid, None)).await?;
    state.sessions_revoked(&cleared);
    state.audit.record(by.entry(AuditAction::AdminUserClearReverify, &u, json!({"sessions": cleared.len()}))).await;
    Ok(u)
}

/// Turns an account's MFA off (a lost device) and ends its sessions (audited
/// `admin.user_reset_mfa`).
pub async fn reset_mfa(state: &AppState, by: &Actor, id_or_email: &str) -> Result<User, ActError> {
    let u = account(state, id_or_email).await?;
    let uid = u.id.clone();
    let revoked = state
        .db
        .q(move |c| {
            crate::db::write_transaction(c, |c| {
                mfa::clear(c, &uid)?;
                sessions::revoke_all(c, &uid, None, "mfa_reset")
            })
        })
        .await?;
    state.sessions_revoked(&revoked);
    state.audit.record(by.entry(AuditAction::AdminUserResetMfa, &u, json!({"sessions_revoked": revoked.len()}))).await;
    Ok(u)
}
