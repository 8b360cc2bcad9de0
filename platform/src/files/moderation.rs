//! Moderation of held files: an administrator releases a file the scan held — `quarantined` (a
//! rule matched) or `error` (a scanner could not judge it: down, timed out, or unable to see a
//! file that large) — after checking it. One use case for the console's Files page and
//! `POST /api/admin/files/{id}/release`; it knows nothing of either.

use diesel::prelude::*;
use serde_json::json;

use super::FileRecord;
use crate::audit::{AuditAction, NewAuditEntry, Outcome};
use crate::db::schema::files;
use crate::AppState;

/// Why a file was not released.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("no such file")]
    NotFound,
    /// The file is not held (it is `clean` or `pending`, or a rescan judged it meanwhile).
    #[error("the file is not held (scan status {0})")]
    NotHeld(String),
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
}

/// Who acts, and from where, for the audit log.
#[derive(Debug, Clone)]
pub struct Moderator {
    pub user_id: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// Whether a file in this scan status is held and may be released.
pub fn is_held(scan_status: &str) -> bool {
    matches!(scan_status, "quarantined" | "error")
}

/// Releases a held file: its scan status becomes `clean` (only if it is still what was read,
/// so a rescan in between wins), the act is audited (`admin.file_release`, with the status
/// before) and the owner's clients are told. Returns the file as released.
pub async fn release(state: &AppState, by: &Moderator, file_id: &str) -> Result<FileRecord, ReleaseError> {
    let fid = file_id.to_string();
    let mut file = state.db.q(move |c| super::by_id(c, &fid)).await?.ok_or(ReleaseError::NotFound)?;
    if !is_held(&file.scan_status) {
        return Err(ReleaseError::NotHeld(file.scan_status));
    }
    let (fid, before) = (file.id.clone(), file.scan_status.clone());
    let changed = state
        .db
        .q(move |c| {
            crate::db::write_transaction(c, |c| {
                diesel::update(files::table.find(&fid).filter(files::scan_status.eq(&before)))
                    .set(files::scan_status.eq("clean"))
                    .execute(c)
            })
        })
        .await?;
    if changed == 0 {
        let fid = file.id.clone();
        let now = state.db.q(move |c| super::by_id(c, &fid)).await?.ok_or(ReleaseError::NotFound)?;
        return Err(ReleaseError::NotHeld(now.scan_status));
    }
    state
        .audit
        .record(
            NewAuditEntry::new(AuditAction::AdminFileRelease.as_str(), Outcome::Success)
                .client(by.ip.clone(), by.user_agent.clone())
                .actor(Some(by.user_id.clone()))
                .target("file", file.id.clone())
                .details(json!({"scan_status_before": file.scan_status, "owner_id": file.owner_id})),
        )
        .await;
    state
        .events
        .publish_to(
            std::slice::from_ref(&file.owner_id),
            "file_update",
            json!({"file_id": file.id, "change": "released", "scan_status": "clean"}),
        )
        .await;
    file.scan_status = "clean".into();
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::is_held;

    #[test]
    fn only_quarantined_and_failed_scans_are_held() {
        assert!(is_held("quarantined") && is_held("error"));
        assert!(!is_held("clean") && !is_held("pending") && !is_held(""));
    }
}
