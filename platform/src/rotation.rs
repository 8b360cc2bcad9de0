//! `seccollab keys rotate`: replaces the master key-encryption key without touching content.
//!
//! 1. A new key is generated into `keys/master.key.next` (kept if it exists: a rerun resumes).
//! 2. Every file's data key is unwrapped under the key its `key_id` names and re-wrapped under
//!    the new key, and every TOTP secret is re-sealed, in batches; each row records the new key
//!    id as it goes, so an interrupted run picks up where it stopped.
//! 3. The old key is copied to `keys/retired/<id>.key` (old backups stay readable), then
//!    `master.key.next` atomically replaces `master.key`.
//!
//! A running server follows: it looks keys up by id and re-reads the key folder on a miss.
//! Restart it afterwards so new uploads are wrapped under the new key.

use std::fs;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

use diesel::prelude::*;

use crate::db::schema::{files, users};
use crate::db::DbConnection;
use crate::files::envelope;
use crate::keys::{self, Keys, MASTER_KEY_FILE, NEXT_MASTER_FILE, RETIRED_DIR};

struct Fail(String);

impl From<diesel::result::Error> for Fail {
    fn from(e: diesel::result::Error) -> Self {
        Fail(e.to_string())
    }
}

#[derive(Debug, Default)]
pub struct RotationReport {
    pub new_key_id: String,
    pub files: u64,
    pub totp_secrets: u64,
}

pub fn rotate(
    conn: &mut DbConnection,
    keys: &Keys,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RotationReport, String> {
    let dir = keys.dir().to_path_buf();
    let next = keys::load_or_create_key(&dir.join(NEXT_MASTER_FILE)).map_err(|e| e.to_string())?;
    let next_id = keys::key_id(&next);
    if next_id == keys.master_id {
        return Err("the next key equals the current one; remove master.key.next and retry".into());
    }
    let total: i64 =
        files::table.filter(files::key_id.ne(&next_id)).count().get_result(conn).map_err(|e| e.to_string())?;
    let mut report = RotationReport { new_key_id: next_id.clone(), ..Default::default() };
    loop {
        let batch: Vec<(String, String, String)> = files::table
            .filter(files::key_id.ne(&next_id))
            .order(files::id.asc())
            .limit(500)
            .select((files::id, files::wrapped_key, files::key_id))
            .load(conn)
            .map_err(|e| e.to_string())?;
        if batch.is_empty() {
            break;
        }
        crate::db::write_transaction(conn, |conn| {
            for (id, wrapped, kid) in &batch {
                let old = keys
                    .master_for(kid)
                    .ok_or_else(|| Fail(format!("file {id} is wrapped under unknown key {kid}")))?;
                let dek = envelope::unwrap_key(&old, id, wrapped)
                    .ok_or_else(|| Fail(format!("file {id}: data key does not unwrap")))?;
                diesel::update(files::table.find(id).filter(files::key_id.eq(kid)))
                    .set((files::wrapped_key.eq(envelope::wrap_key(&next, id, &dek)), files::key_id.eq(&next_id)))
                    .execute(conn)?;
            }
            Ok::<_, Fail>(())
        })
        .map_err(|f| f.0)?;
        report.files += batch.len() as u64;
        progress(report.files, total as u64);
    }
    // TOTP secrets: re-seal whatever does not open under the new key yet.
    let rows: Vec<(String, Option<String>, Option<String>)> = users::table
        .filter(users::totp_secret_enc.is_not_null().or(users::totp_pending_enc.is_not_null()))
        .select((users::id, users::totp_secret_enc, users::totp_pending_enc))
        .load(conn)
        .map_err(|e| e.to_string())?;
    for (uid, active, pending) in rows {
        let ctx = format!("totp:{uid}");
        let reseal = |v: &Option<String>| -> Result<Option<String>, String> {
            match v {
                None => Ok(None),
                Some(s) if crate::crypto::open(&next, &ctx, s).is_some() => Ok(Some(s.clone())),
                Some(s) => {
                    let plain =
                        keys.open_sealed(&ctx, s).ok_or_else(|| format!("user {uid}: TOTP secret does not open"))?;
                    Ok(Some(crate::crypto::seal(&next, &ctx, &plain)))
                }
            }
        };
        let (a, p) = (reseal(&active)?, reseal(&pending)?);
        if a != active || p != pending {
            diesel::update(users::table.find(&uid))
                .set((users::totp_secret_enc.eq(a), users::totp_pending_enc.eq(p)))
                .execute(conn)
                .map_err(|e| e.to_string())?;
            report.totp_secrets += 1;
        }
    }
    // Retire the old key (a copy first), then swap the new one in atomically.
    let retired = dir.join(RETIRED_DIR);
    fs::create_dir_all(&retired).map_err(|e| e.to_string())?;
    fs::set_permissions(&retired, fs::Permissions::from_mode(0o700)).map_err(|e| e.to_string())?;
    let old_path = retired.join(format!("{}.key", keys.master_id));
    if !old_path.exists() {
        let text = fs::read(dir.join(MASTER_KEY_FILE)).map_err(|e| e.to_string())?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&old_path)
            .map_err(|e| e.to_string())?;
        std::io::Write::write_all(&mut f, &text).map_err(|e| e.to_string())?;
        f.sync_all().map_err(|e| e.to_string())?;
    }
    fs::rename(dir.join(NEXT_MASTER_FILE), dir.join(MASTER_KEY_FILE)).map_err(|e| e.to_string())?;
    fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| e.to_string())?;
    Ok(report)
}
