//! Notifications: in-app notifications, per-user channel preferences, and the durable e-mail
//! outbox (see [`email`]).
//!
//! An action that notifies (a meeting invitation, a file share) builds a [`Delivery`]: the
//! in-app notification rows, the outbox rows (rendered e-mails) and the WebSocket events. All of
//! it is stored in **one transaction** of the event writer together with the action's own rows,
//! so either the meeting exists and every notice about it is recorded, or nothing is. E-mail is
//! then sent by the delivery workers, never on the request path.

pub mod email;
pub mod routes;

use std::collections::HashMap;

use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::db::schema::{notification_preferences as np, notifications as nt, users};
use crate::db::DbConnection;
use crate::events::{Event, Rows};
use crate::AppState;

/// One in-app notification as stored.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = nt)]
pub struct NotificationRow {
    pub id: String,
    pub user_id: String,
    pub kind: String,
    pub title: String,
    pub body: String,
    pub data: String,
    pub created_at: i64,
    pub read_at: Option<i64>,
}

/// An in-app notification as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NotificationView {
    pub id: String,
    /// `meeting_invitation`, `meeting_updated`, `meeting_cancelled`, `schedule_response`,
    /// `file_share`, `email_failed`.
    pub kind: String,
    pub title: String,
    pub body: String,
    /// What the notification is about, e.g. `{"schedule_id": ...}` or `{"file_id": ...}`.
    #[schema(value_type = Object)]
    pub data: Value,
    pub created_at: String,
    pub read: bool,
    pub read_at: Option<String>,
}

impl From<&NotificationRow> for NotificationView {
    fn from(r: &NotificationRow) -> Self {
        Self {
            id: r.id.clone(),
            kind: r.kind.clone(),
            title: r.title.clone(),
            body: r.body.clone(),
            data: serde_json::from_str(&r.data).unwrap_or(Value::Null),
            created_at: crate::time::micros_to_rfc3339(r.created_at),
            read: r.read_at.is_some(),
            read_at: r.read_at.map(crate::time::micros_to_rfc3339),
        }
    }
}

/// The channels a user wants notifications on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Prefs {
    pub email: bool,
    pub in_app: bool,
}

impl Default for Prefs {
    fn default() -> Self {
        Self { email: true, in_app: true }
    }
}

/// Preferences of `ids` (defaults for users who never set any).
pub fn prefs_of(c: &mut DbConnection, ids: &[String]) -> QueryResult<HashMap<String, Prefs>> {
    let rows: Vec<(String, bool, bool)> =
        np::table.filter(np::user_id.eq_any(ids)).select((np::user_id, np::email, np::in_app)).load(c)?;
    let mut out: HashMap<String, Prefs> = ids.iter().map(|i| (i.clone(), Prefs::default())).collect();
    for (id, email, in_app) in rows {
        out.insert(id, Prefs { email, in_app });
    }
    Ok(out)
}

/// A user as a notice names them.
#[derive(Debug, Clone, Queryable)]
pub struct Person {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub disabled: bool,
}

/// The accounts among `ids` that exist.
pub fn people(c: &mut DbConnection, ids: &[String]) -> QueryResult<HashMap<String, Person>> {
    let rows: Vec<Person> = users::table
        .filter(users::id.eq_any(ids))
        .select((users::id, users::email, users::display_name, users::disabled))
        .load(c)?;
    Ok(rows.into_iter().map(|p| (p.id.clone(), p)).collect())
}

/// Everything one action stores and announces: notification rows, e-mails, events.
#[derive(Default)]
pub struct Delivery {
    pub notifications: Vec<NotificationRow>,
    pub emails: Vec<email::OutboxRow>,
    pub events: Vec<Event>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("notifications", &self.notifications.len())
            .field("emails", &self.emails.len())
            .field("events", &self.events.len())
            .finish()
    }
}

impl Delivery {
    /// An in-app notification for `user_id`, pushed live as `notification`.
    pub fn notify(&mut self, user_id: &str, kind: &str, title: String, body: String, data: Value) {
        let row = NotificationRow {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: user_id.to_string(),
            kind: kind.to_string(),
            title,
            body,
            data: data.to_string(),
            created_at: crate::time::now_micros(),
            read_at: None,
        };
        let view = NotificationView::from(&row);
        self.events.push(Event {
            to: vec![user_id.to_string()],
            name: "notification",
            data: json!({ "notification": view }).into(),
        });
        self.notifications.push(row);
    }

    pub fn event(&mut self, to: Vec<String>, name: &'static str, data: Value) {
        if !to.is_empty() {
            self.events.push(Event { to, name, data: data.into() });
        }
    }

    pub fn email(&mut self, row: email::OutboxRow) {
        self.emails.push(row);
    }

    /// The rows to write (the action's own `extra` first) and the events to deliver.
    fn into_job(self, extra: Option<Rows>) -> (Rows, Vec<Event>) {
        let (notes, mails) = (self.notifications, self.emails);
        let rows: Rows = Box::new(move |c| {
            if let Some(extra) = &extra {
                extra(c)?;
            }
            insert_notifications(c, &notes)?;
            email::insert(c, &mails)
        });
        (rows, self.events)
    }
}

fn insert_notifications(c: &mut DbConnection, rows: &[NotificationRow]) -> QueryResult<()> {
    for chunk in rows.chunks(200) {
        // Batch inserts are dispatched per backend: MultiConnection cannot express them.
        let insert = diesel::insert_into(nt::table).values(chunk);
        match c {
            DbConnection::Sqlite(c) => insert.execute(c)?,
            DbConnection::Pg(c) => insert.execute(c)?,
        };
    }
    Ok(())
}

pub use crate::events::CommitError as NotStored;

/// Stores the action's `extra` rows with everything in `d` in one transaction, delivers the
/// events, and wakes the e-mail workers. Returns once committed.
pub async fn commit(state: &AppState, d: Delivery, extra: Option<Rows>) -> Result<(), NotStored> {
    let has_mail = !d.emails.is_empty();
    // Notifier plugins (webhook, ...) get the in-app notifications once they are stored.
    let for_plugins: Vec<seccollab_plugin_api::Outbound> = d.notifications.iter().map(plugin_message).collect();
    let (rows, events) = d.into_job(extra);
    state.events.commit(Some(rows), events).await?;
    if has_mail {
        state.mailer.wake();
    }
    for m in &for_plugins {
        state.plugin_notify.send(m);
    }
    Ok(())
}

/// An in-app notification as notifier plugins receive it.
fn plugin_message(n: &NotificationRow) -> seccollab_plugin_api::Outbound {
    seccollab_plugin_api::Outbound {
        id: n.id.clone(),
        kind: n.kind.clone(),
        user_id: Some(n.user_id.clone()),
        address: String::new(),
        display_name: String::new(),
        subject: n.title.clone(),
        text: n.body.clone(),
        html: None,
        attachments: vec![],
    }
}

/// Notifies the users a file was just shared with (in-app and/or e-mail per their preferences),
/// together with the `file_share` event.
pub async fn file_shared(
    state: &AppState,
    file: &crate::files::FileView,
    by: &str,
    to: &[String],
    permissions: &str,
) -> Result<(), NotStored> {
    let mut ids = to.to_vec();
    ids.push(by.to_string());
    let (fid, ids2) = (file.id.clone(), ids.clone());
    let (people, prefs) = state
        .db
        .q(move |c| Ok((people(c, &ids2)?, prefs_of(c, &ids2)?)))
        .await
        .map_err(|e| NotStored::Failed(e.to_string()))?;
    let sharer = people.get(by).map(|p| p.display_name.clone()).unwrap_or_else(|| "Someone".into());
    let mut d = Delivery::default();
    d.event(to.to_vec(), "file_share", json!({"file": file, "shared_by": by, "permissions": permissions}));
    let title = format!("{sharer} shared “{}” with you", file.name);
    let body = format!("You can {} it.", if permissions == "download" { "view and download" } else { "view" });
    for uid in to {
        let pref = prefs.get(uid).copied().unwrap_or_default();
        if pref.in_app {
            d.notify(uid, "file_share", title.clone(), body.clone(), json!({"file_id": fid, "shared_by": by}));
        }
        if let (true, Some(p)) = (pref.email && state.mailer.enabled(), people.get(uid)) {
            if !p.disabled {
                let link = format!("{}/files/{}", state.config.public_url(), fid);
                match email::notice(&state.config, p, "file_share", &title, &body, &link) {
                    Ok(row) => d.email(row),
                    Err(e) => tracing::error!(error = %e, "file-share e-mail not rendered"),
                }
            }
        }
    }
    commit(state, d, None).await
}

/// Tells a user a sign-in provider was linked to their account: in the app and by e-mail
/// (whatever their preferences: a security notice), so a link they did not make is noticed.
pub async fn provider_linked(state: &AppState, user_id: &str, provider: &str) -> Result<(), NotStored> {
    let ids = vec![user_id.to_string()];
    let people = state.db.q(move |c| people(c, &ids)).await.map_err(|e| NotStored::Failed(e.to_string()))?;
    let mut d = Delivery::default();
    let title = format!("Sign-in with {provider} was linked to your account");
    let body = format!(
        "You can now sign in with {provider}. If this was not you, change your password and remove the link, or tell an administrator."
    );
    d.notify(user_id, "provider_linked", title.clone(), body.clone(), json!({"provider": provider}));
    if let (true, Some(p)) = (state.mailer.enabled(), people.get(user_id)) {
        if !p.disabled {
            let link = format!("{}/account", state.config.public_url());
            match email::notice(&state.config, p, "provider_linked", &title, &body, &link) {
                Ok(row) => d.email(row),
                Err(e) => tracing::error!(error = %e, "provider-link e-mail not rendered"),
            }
        }
    }
    commit(state, d, None).await
}
