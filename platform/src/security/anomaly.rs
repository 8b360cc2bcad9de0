//! Anomaly rules, evaluated continuously from the audit stream (`[anomaly]` in
//! `policies/security.toml`):
//!
//! | rule (alert kind) | fires when | subject |
//! |---|---|---|
//! | `credential_stuffing` | failed sign-ins for `threshold` distinct accounts from one IP within `window_secs` | the IP |
//! | `exfiltration` | `threshold` downloads by one user within `window_secs` | the user |
//! | `mass_sharing` | `threshold` share grants by one user within `window_secs` | the user |
//! | `admin_new_location` | an administrator signs in from an IP or user agent none of their sign-ins of the last `lookback_days` used | the admin |
//! | `refresh_token_reuse` | a spent refresh token comes back (the session is already revoked by then) | the user |
//!
//! Malware uploads (`malware_detected`) and integrity violations (`integrity_compromised`) are
//! raised where they are found (scanner, integrity check), not here.
//!
//! One task reads new audit entries every `poll_secs` (after a flush, by `seq`), keeps sliding
//! windows in memory and, at start, re-reads the longest window so a restart forgets nothing.
//! An alert carries its evidence (the audit entry ids) and is raised at most once per rule and
//! subject within `dedup_secs` (checked in the database, so a restart or a second node does not
//! repeat it). Each alert reaches admins live (`security_alert` event), by e-mail, through
//! notifier plugins, and in the alert list of the console and the API.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use diesel::prelude::*;
use serde_json::{json, Value};

use super::policy::AnomalyPolicy;
use crate::db::schema::{audit_log as al, security_alerts as sa, users};
use crate::db::DbConnection;
use crate::AppState;

/// At most this many evidence ids are kept in an alert.
const MAX_EVIDENCE: usize = 50;

/// One audit entry as the rules read it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = al)]
pub struct Seen {
    pub seq: i64,
    pub id: String,
    pub at: i64,
    pub actor_id: Option<String>,
    pub action: String,
    pub outcome: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub details: String,
}

/// What the rules decided to raise.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub kind: &'static str,
    pub severity: &'static str,
    pub subject: (&'static str, String),
    pub evidence: Vec<String>,
    pub summary: String,
}

/// The sliding windows of the count rules.
#[derive(Debug, Default)]
pub struct Windows {
    /// IP → (at, account, entry id) of failed sign-ins.
    failures: HashMap<String, VecDeque<(i64, String, String)>>,
    /// user → (at, entry id) of downloads.
    downloads: HashMap<String, VecDeque<(i64, String)>>,
    /// user → (at, entry id) of shares.
    shares: HashMap<String, VecDeque<(i64, String)>>,
}

fn trim<T>(q: &mut VecDeque<T>, at: impl Fn(&T) -> i64, since: i64) {
    while q.front().is_some_and(|e| at(e) < since) {
        q.pop_front();
    }
}

fn evidence<'a>(ids: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut v: Vec<String> = ids.cloned().collect();
    if v.len() > MAX_EVIDENCE {
        v.drain(..v.len() - MAX_EVIDENCE);
    }
    v
}

impl Windows {
    /// Feeds one entry to the count rules; returns what crossed a threshold.
    pub fn observe(&mut self, p: &AnomalyPolicy, e: &Seen) -> Vec<Finding> {
        let mut out = Vec::new();
        let sign_in = e.action == "auth.login" || e.action == "auth.mfa";
        if p.credential_stuffing.enabled && sign_in && e.outcome == "failure" {
            if let Some(ip) = &e.ip {
                let details: Value = serde_json::from_str(&e.details).unwrap_or(Value::Null);
                let account =
                    details["email"].as_str().map(str::to_string).or_else(|| e.actor_id.clone()).unwrap_or_default();
                let q = self.failures.entry(ip.clone()).or_default();
                q.push_back((e.at, account, e.id.clone()));
                trim(q, |x| x.0, e.at - p.credential_stuffing.window_secs as i64 * 1_000_000);
                let accounts: HashSet<&str> = q.iter().map(|x| x.1.as_str()).filter(|a| !a.is_empty()).collect();
                if accounts.len() >= p.credential_stuffing.threshold {
                    out.push(Finding {
                        kind: "credential_stuffing",
                        severity: "high",
                        subject: ("ip", ip.clone()),
                        evidence: evidence(q.iter().map(|x| &x.2)),
                        summary: format!(
                            "failed sign-ins for {} accounts from {ip} within {} s",
                            accounts.len(),
                            p.credential_stuffing.window_secs
                        ),
                    });
                }
            }
        }
        let mut count = |map: &mut HashMap<String, VecDeque<(i64, String)>>,
                         rule: &super::policy::CountRule,
                         kind: &'static str,
                         what: &str| {
            let Some(user) = &e.actor_id else { return };
            let q = map.entry(user.clone()).or_default();
            q.push_back((e.at, e.id.clone()));
            trim(q, |x| x.0, e.at - rule.window_secs as i64 * 1_000_000);
            if q.len() >= rule.threshold {
                out.push(Finding {
                    kind,
                    severity: "high",
                    subject: ("user", user.clone()),
                    evidence: evidence(q.iter().map(|x| &x.1)),
                    summary: format!("{} {what} by one user within {} s", q.len(), rule.window_secs),
                });
            }
        };
        if p.exfiltration.enabled && e.action == "file.download" && e.outcome == "success" {
            count(&mut self.downloads, &p.exfiltration, "exfiltration", "downloads");
        }
        if p.mass_sharing.enabled && e.action == "file.share" && e.outcome == "success" {
            count(&mut self.shares, &p.mass_sharing, "mass_sharing", "share grants");
        }
        if p.refresh_token_reuse.enabled && e.action == "security.refresh_token_reuse" {
            if let Some(user) = &e.actor_id {
                out.push(Finding {
                    kind: "refresh_token_reuse",
                    severity: "high",
                    subject: ("user", user.clone()),
                    evidence: vec![e.id.clone()],
                    summary: "a spent refresh token was presented again (stolen token?); the session was revoked"
                        .into(),
                });
            }
        }
        out
    }
}

/// Whether `e` is a completed sign-in (password without MFA, MFA step, provider, console).
fn is_sign_in_success(e: &Seen) -> bool {
    if e.outcome != "success" {
        return false;
    }
    match e.action.as_str() {
        "auth.mfa" | "admin.console_login" => true,
        // The password step of an MFA user is not a completed sign-in.
        "auth.login" => !e.details.contains("\"mfa_required\":true"),
        _ => false,
    }
}

/// `admin_new_location`: an admin's completed sign-in from an IP or user agent that none of
/// their completed sign-ins in the lookback used. The first sign-in ever is not an anomaly.
fn new_location(conn: &mut DbConnection, p: &AnomalyPolicy, e: &Seen) -> QueryResult<Option<Finding>> {
    if !p.admin_new_location.enabled || !is_sign_in_success(e) {
        return Ok(None);
    }
    let Some(uid) = &e.actor_id else { return Ok(None) };
    let admin = users::table.find(uid).select(users::role).first::<String>(conn).optional()?;
    if admin.as_deref() != Some("admin") {
        return Ok(None);
    }
    let since = e.at - p.admin_new_location.lookback_days as i64 * 86_400 * 1_000_000;
    let earlier: Vec<Seen> = crate::audit::actor_index::walk(conn, uid, Some(e.seq), 1000, |c, part, n| {
        part.apply(al::table.select(Seen::as_select()).into_boxed())
            .filter(al::actor_id.eq(uid))
            .filter(al::seq.lt(e.seq))
            .filter(al::at.ge(since))
            .filter(al::outcome.eq("success"))
            .filter(al::action.eq_any(["auth.login", "auth.mfa", "admin.console_login"]))
            .order(al::seq.desc())
            .limit(n)
            .load(c)
    })?;
    let earlier: Vec<&Seen> = earlier.iter().filter(|x| is_sign_in_success(x)).collect();
    if earlier.is_empty() {
        return Ok(None);
    }
    let ip_known = earlier.iter().any(|x| x.ip == e.ip);
    let ua_known = earlier.iter().any(|x| x.user_agent == e.user_agent);
    if ip_known && ua_known {
        return Ok(None);
    }
    let what = match (ip_known, ua_known) {
        (false, false) => "a new IP address and a new user agent",
        (false, true) => "a new IP address",
        _ => "a new user agent",
    };
    Ok(Some(Finding {
        kind: "admin_new_location",
        severity: "medium",
        subject: ("user", uid.clone()),
        evidence: vec![e.id.clone()],
        summary: format!(
            "administrator signed in from {what} (ip {}, user agent {})",
            e.ip.as_deref().unwrap_or("unknown"),
            e.user_agent.as_deref().unwrap_or("none")
        ),
    }))
}

/// Raises `f` unless an alert of the same kind about the same subject was raised within
/// `dedup_secs`; returns the alert id when raised.
pub fn raise(state: &AppState, conn: &mut DbConnection, p: &AnomalyPolicy, f: &Finding) -> QueryResult<Option<String>> {
    let since = crate::time::now_micros() - p.dedup_secs as i64 * 1_000_000;
    let recent: i64 = sa::table
        .filter(sa::kind.eq(f.kind))
        .filter(sa::subject_type.eq(f.subject.0))
        .filter(sa::subject_id.eq(&f.subject.1))
        .filter(sa::at.ge(since))
        .count()
        .get_result(conn)?;
    if recent > 0 {
        return Ok(None);
    }
    let details = json!({"summary": f.summary, "evidence": f.evidence, "rule": f.kind});
    let subject = Some((f.subject.0, f.subject.1.as_str()));
    let id = super::alerts::raise(conn, f.kind, f.severity, subject, &details)?;
    let ev = super::alerts::event(&id, f.kind, f.severity, subject, &details);
    super::alerts::announce(state, conn, ev);
    super::responses::respond(state, conn, f.kind, (f.subject.0, &f.subject.1), &id);
    Ok(Some(id))
}

/// Starts the evaluation task.
pub fn start(state: AppState) {
    let p = state.policy.anomaly.clone();
    tokio::spawn(async move {
        let longest = [p.credential_stuffing.window_secs, p.exfiltration.window_secs, p.mass_sharing.window_secs]
            .into_iter()
            .max()
            .unwrap_or(0) as i64;
        // Start with the longest window already seen, so a restart does not blind the rules.
        let since = crate::time::now_micros() - longest * 1_000_000;
        let mut cursor: Option<i64> = None;
        let mut windows = Windows::default();
        let mut tick = tokio::time::interval(Duration::from_secs(p.poll_secs.max(1)));
        loop {
            tick.tick().await;
            state.audit.flush().await;
            let (st, pol) = (state.clone(), p.clone());
            let mut w = std::mem::take(&mut windows);
            let result = tokio::task::spawn_blocking(move || {
                let r = evaluate(&st, &pol, &mut w, cursor, since);
                (w, r)
            })
            .await;
            match result {
                Ok((w, Ok(next))) => {
                    windows = w;
                    cursor = Some(next);
                }
                Ok((w, Err(e))) => {
                    windows = w;
                    tracing::error!(error = %e, "anomaly rules: reading the audit log failed; retrying");
                }
                Err(e) => tracing::error!(error = %e, "anomaly rules task failed"),
            }
        }
    });
}

/// Reads the entries after `cursor` (or from `since` on the first run), feeds the rules and
/// raises what they find; returns the new cursor.
fn evaluate(
    state: &AppState,
    p: &AnomalyPolicy,
    w: &mut Windows,
    cursor: Option<i64>,
    since: i64,
) -> Result<i64, String> {
    let mut conn = state.db.get().map_err(|e| e.to_string())?;
    let mut cursor = cursor;
    loop {
        let mut q = al::table.select(Seen::as_select()).order(al::seq.asc()).limit(1000).into_boxed();
        q = match cursor {
            Some(c) => q.filter(al::seq.gt(c)),
            None => q.filter(al::at.ge(since)),
        };
        let rows: Vec<Seen> = q.load(&mut *conn).map_err(|e| e.to_string())?;
        let Some(last) = rows.last().map(|r| r.seq) else {
            if cursor.is_none() {
                // Nothing in the window: start after whatever exists now.
                let max: Option<i64> =
                    al::table.select(diesel::dsl::max(al::seq)).first(&mut *conn).map_err(|e| e.to_string())?;
                return Ok(max.unwrap_or(0));
            }
            return Ok(cursor.unwrap_or(0));
        };
        for e in &rows {
            let mut found = w.observe(p, e);
            if let Some(f) = new_location(&mut conn, p, e).map_err(|e| e.to_string())? {
                found.push(f);
            }
            for f in found {
                raise(state, &mut conn, p, &f).map_err(|e| e.to_string())?;
            }
        }
        cursor = Some(last);
        if rows.len() < 1000 {
            return Ok(last);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(seq: i64, secs: i64, actor: &str, action: &str, outcome: &str, ip: &str, details: Value) -> Seen {
        Seen {
            seq,
            id: format!("e{seq}"),
            at: secs * 1_000_000,
            actor_id: (!actor.is_empty()).then(|| actor.to_string()),
            action: action.into(),
            outcome: outcome.into(),
            ip: Some(ip.into()),
            user_agent: None,
            details: details.to_string(),
        }
    }

    #[test]
    fn stuffing_counts_distinct_accounts_per_ip_within_the_window() {
        let mut p = AnomalyPolicy::default();
        p.credential_stuffing.threshold = 3;
        p.credential_stuffing.window_secs = 60;
        let mut w = Windows::default();
        let fail = |seq, secs, email: &str, ip: &str| {
            seen(seq, secs, "", "auth.login", "failure", ip, json!({"email": email}))
        };
        // The same account many times is not stuffing.
        for i in 0..5 {
            assert!(w.observe(&p, &fail(i, i, "a@x", "10.0.0.1")).is_empty());
        }
        assert!(w.observe(&p, &fail(10, 10, "b@x", "10.0.0.1")).is_empty());
        // Another IP does not add up.
        assert!(w.observe(&p, &fail(11, 11, "c@x", "10.0.0.2")).is_empty());
        let f = w.observe(&p, &fail(12, 12, "c@x", "10.0.0.1"));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kind, "credential_stuffing");
        assert_eq!(f[0].subject, ("ip", "10.0.0.1".to_string()));
        assert!(f[0].evidence.contains(&"e12".to_string()) && f[0].evidence.contains(&"e0".to_string()));
        // Outside the window the old failures no longer count.
        assert!(w.observe(&p, &fail(13, 200, "d@x", "10.0.0.1")).is_empty());
    }

    #[test]
    fn downloads_and_shares_count_per_user() {
        let mut p = AnomalyPolicy::default();
        p.exfiltration.threshold = 3;
        p.mass_sharing.threshold = 2;
        let mut w = Windows::default();
        let dl = |seq, user: &str| seen(seq, seq, user, "file.download", "success", "1.1.1.1", json!({}));
        assert!(w.observe(&p, &dl(1, "u1")).is_empty());
        assert!(w.observe(&p, &dl(2, "u2")).is_empty());
        assert!(w.observe(&p, &dl(3, "u1")).is_empty());
        let denied = seen(4, 4, "u1", "file.download", "denied", "1.1.1.1", json!({}));
        assert!(w.observe(&p, &denied).is_empty(), "refused downloads are not exfiltration");
        let f = w.observe(&p, &dl(5, "u1"));
        assert_eq!(f[0].kind, "exfiltration");
        assert_eq!(f[0].evidence, vec!["e1", "e3", "e5"]);
        let sh = |seq| seen(seq, seq, "u3", "file.share", "success", "1.1.1.1", json!({}));
        assert!(w.observe(&p, &sh(6)).is_empty());
        assert_eq!(w.observe(&p, &sh(7))[0].kind, "mass_sharing");
    }

    #[test]
    fn only_completed_sign_ins_count_for_new_locations() {
        let pw_step = seen(1, 1, "a", "auth.login", "success", "1.1.1.1", json!({"mfa_required": true}));
        assert!(!is_sign_in_success(&pw_step));
        assert!(is_sign_in_success(&seen(2, 2, "a", "auth.mfa", "success", "1.1.1.1", json!({}))));
        assert!(is_sign_in_success(&seen(
            3,
            3,
            "a",
            "auth.login",
            "success",
            "1.1.1.1",
            json!({"method": "password"})
        )));
        assert!(!is_sign_in_success(&seen(4, 4, "a", "auth.login", "failure", "1.1.1.1", json!({}))));
    }
}
