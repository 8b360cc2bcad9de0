//! `/api/schedules*`: create, list, get, change, answer, cancel, iCalendar.

use std::collections::HashMap;

use diesel::prelude::*;
use rocket::http::{ContentType, Header, Status};
use rocket::response::{self, Responder, Response};
use rocket::serde::json::Json;
use rocket::{delete, get, patch, post, routes, Request, Route, State};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Full, ParticipantRow, Role, ScheduleRow, ScheduleView};
use crate::audit::Outcome;
use crate::auth::routes::entry;
use crate::auth::AuthUser;
use crate::db::schema::{schedule_participants as sp, schedules as sc};
use crate::events::{CommitError, Rows};
use crate::http::client::ClientInfo;
use crate::http::error::{ApiError, ApiResult};
use crate::http::json::JsonBody;
use crate::http::pagination::{self, decode_str_cursor, encode_str_cursor};
use crate::notify::email::{one_line, MeetingHtml, MeetingText, OutboxRow};
use crate::notify::{Delivery, Person, Prefs};
use crate::AppState;
use askama::Template;

pub fn routes() -> Vec<Route> {
    routes![create, list, get_one, update, respond, cancel, ics]
}

pub const MAX_TITLE: usize = 200;
pub const MAX_DESCRIPTION: usize = 5000;
pub const MAX_PARTICIPANTS: usize = 200;
const MAX_DURATION_MICROS: i64 = 31 * 86_400 * 1_000_000;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScheduleResponse {
    pub schedule: ScheduleView,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScheduleList {
    /// By start time.
    pub schedules: Vec<ScheduleView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    /// RFC 3339 with an offset; stored and returned in UTC.
    pub start_time: String,
    pub end_time: String,
    /// User ids, not including the creator.
    pub participants: Vec<String>,
    /// `email` and/or `in_app`; both when absent.
    #[serde(default)]
    pub notify_via: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    pub title: Option<String>,
    pub description: Option<String>,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RespondRequest {
    /// `accepted` or `declined`.
    pub status: String,
}

/// Title: control characters (CR/LF included) become spaces, whitespace collapses; 1–200 chars.
fn clean_title(s: &str) -> ApiResult<String> {
    let t = one_line(s, MAX_TITLE + 1);
    if t.is_empty() {
        return Err(ApiError::invalid("title", "must not be empty"));
    }
    if t.chars().count() > MAX_TITLE {
        return Err(ApiError::invalid("title", format!("must be at most {MAX_TITLE} characters")));
    }
    Ok(t)
}

/// Description: line breaks kept (CRLF → LF), other control characters refused; ≤ 5000 chars.
fn clean_description(s: &str) -> ApiResult<String> {
    let d = s.replace("\r\n", "\n");
    if d.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(ApiError::invalid("description", "must not contain control characters"));
    }
    if d.chars().count() > MAX_DESCRIPTION {
        return Err(ApiError::invalid("description", format!("must be at most {MAX_DESCRIPTION} characters")));
    }
    Ok(d.trim().to_string())
}

fn parse_time(field: &str, s: &str) -> ApiResult<i64> {
    crate::time::parse_rfc3339_micros(s.trim()).ok_or_else(|| {
        ApiError::invalid(field, "must be an RFC 3339 time with an offset, e.g. 2026-12-01T09:00:00+01:00")
    })
}

fn check_span(start: i64, end: i64) -> ApiResult<()> {
    if end <= start {
        return Err(ApiError::invalid("end_time", "must be after start_time"));
    }
    if end - start > MAX_DURATION_MICROS {
        return Err(ApiError::invalid("end_time", "a meeting may last at most 31 days"));
    }
    Ok(())
}

fn not_found() -> ApiError {
    ApiError::new(Status::NotFound, "schedule_not_found", "no such meeting, or you are not part of it")
}

fn cancelled_conflict() -> ApiError {
    ApiError::new(Status::Conflict, "schedule_cancelled", "the meeting is cancelled")
}

fn unavailable(e: CommitError) -> ApiError {
    tracing::error!(error = %e, "meeting change not stored");
    ApiError::unavailable("the change could not be stored; try again", 2)
}

/// Loads a meeting the caller may see (creator or participant).
async fn visible(state: &AppState, id: &str, me: &str) -> ApiResult<Full> {
    let id2 = id.to_string();
    let full = state.db.q(move |c| super::load(c, &id2)).await?.ok_or_else(not_found)?;
    if full.role(me) == Role::None {
        return Err(not_found());
    }
    Ok(full)
}

/// Kind of meeting e-mail.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mail {
    Invitation,
    Update,
    Cancellation,
}

/// Renders the e-mail about `full` for `to`, with the `.ics` attached.
fn meeting_mail(state: &AppState, full: &Full, to: &Person, kind: Mail, ics: &str) -> Result<OutboxRow, askama::Error> {
    let r = &full.row;
    let organizer = full.name(&r.creator_id);
    let participants: Vec<String> = full.participants.iter().map(|p| full.name(&p.user_id)).collect();
    let participants = participants.join(", ");
    let when = super::when(r.start_time, r.end_time);
    let link = format!("{}/meetings/{}", state.config.public_url(), r.id);
    let (subject, heading, intro, method, event_kind) = match kind {
        Mail::Invitation => (
            format!("Invitation: {} — {when}", r.title),
            "You are invited to a meeting",
            format!("{organizer} invites you to this meeting."),
            "REQUEST",
            "meeting_invitation",
        ),
        Mail::Update => (
            format!("Updated invitation: {} — {when}", r.title),
            "A meeting you are invited to changed",
            format!("{organizer} changed this meeting. Please check the details and answer again if the time moved."),
            "REQUEST",
            "meeting_updated",
        ),
        Mail::Cancellation => (
            format!("Cancelled: {} — {when}", r.title),
            "Meeting cancelled",
            format!("{organizer} cancelled this meeting."),
            "CANCEL",
            "meeting_cancelled",
        ),
    };
    let cancelled = kind == Mail::Cancellation;
    let args = (heading, intro.as_str(), r.title.as_str(), when.as_str(), organizer.as_str());
    let text = MeetingText {
        heading: args.0,
        intro: args.1,
        title: args.2,
        when: args.3,
        organizer: args.4,
        participants: &participants,
        description: &r.description,
        link: &link,
        cancelled,
    }
    .render()?;
    let html = MeetingHtml {
        heading: args.0,
        intro: args.1,
        title: args.2,
        when: args.3,
        organizer: args.4,
        participants: &participants,
        description: &r.description,
        link: &link,
        cancelled,
    }
    .render()?;
    Ok(OutboxRow::new(&state.config, to, event_kind, &subject, text, html).with_ics(ics.to_string(), method))
}

/// Notices for the participants `to` about `full`: the event (each gets their own view), an
/// in-app notification and an e-mail where their preferences (and `channels`) allow.
#[allow(clippy::too_many_arguments)]
fn notify_participants(
    state: &AppState,
    d: &mut Delivery,
    full: &Full,
    to: &[String],
    prefs: &HashMap<String, Prefs>,
    channels: (bool, bool),
    event: &'static str,
    mail: Option<Mail>,
    note: (&str, String),
) {
    let (in_app, email) = channels;
    let ics = if email && mail.is_some() && state.mailer.enabled() {
        Some(full.ics(&state.config.public_url()))
    } else {
        None
    };
    let when = super::when(full.row.start_time, full.row.end_time);
    for uid in to {
        let pref = prefs.get(uid).copied().unwrap_or_default();
        let mut data = json!({"schedule": full.view(uid)});
        if event == "meeting_invitation" && note.0 == "meeting_updated" {
            data["updated"] = json!(true);
        }
        if in_app || event != "meeting_invitation" {
            d.event(vec![uid.clone()], event, data);
        }
        if in_app && pref.in_app {
            d.notify(uid, note.0, note.1.clone(), when.clone(), json!({"schedule_id": full.row.id}));
        }
        if let (Some(kind), Some(ics), true) = (mail, &ics, pref.email) {
            if let Some(p) = full.people.get(uid).filter(|p| !p.disabled) {
                match meeting_mail(state, full, p, kind, ics) {
                    Ok(row) => d.email(row),
                    Err(e) => tracing::error!(error = %e, "meeting e-mail not rendered"),
                }
            }
        }
    }
}

/// Records a successful act on meeting `id` by `user`.
async fn audit(
    state: &AppState,
    client: &ClientInfo,
    user: &AuthUser,
    action: &str,
    id: &str,
    details: serde_json::Value,
) {
    let e = entry(action, Outcome::Success, client).actor(Some(user.id.clone())).target("schedule", id.to_string());
    state.audit.record(e.details(details)).await;
}

async fn prefs(state: &AppState, ids: Vec<String>) -> ApiResult<HashMap<String, Prefs>> {
    Ok(state.db.q(move |c| crate::notify::prefs_of(c, &ids)).await?)
}

/// Creates a meeting; each participant is `pending` and is invited on the chosen channels.
#[utoipa::path(post, path = "/api/schedules", tag = "schedules", request_body = CreateRequest,
    responses((status = 201, body = ScheduleResponse), (status = 400)))]
#[post("/schedules", data = "<body>")]
pub async fn create(
    state: &State<AppState>,
    client: ClientInfo,
    user: AuthUser,
    body: JsonBody<CreateRequest>,
) -> ApiResult<(Status, Json<ScheduleResponse>)> {
    let req = body.0;
    let title = clean_title(&req.title)?;
    let description = clean_description(req.description.as_deref().unwrap_or(""))?;
    let start = parse_time("start_time", &req.start_time)?;
    let end = parse_time("end_time", &req.end_time)?;
    check_span(start, end)?;
    if req.participants.is_empty() || req.participants.len() > MAX_PARTICIPANTS {
        return Err(ApiError::invalid("participants", format!("must name 1 to {MAX_PARTICIPANTS} users")));
    }
    let mut seen = std::collections::HashSet::new();
    for p in &req.participants {
        if p == &user.id {
            return Err(ApiError::invalid("participants", "must not include yourself: you organize the meeting"));
        }
        if !seen.insert(p.as_str()) {
            return Err(ApiError::invalid("participants", format!("lists {p} twice")));
        }
    }
    let channels = req.notify_via.clone().unwrap_or_else(|| vec!["email".into(), "in_app".into()]);
    let mut chosen = std::collections::HashSet::new();
    for ch in &channels {
        if ch != "email" && ch != "in_app" {
            return Err(ApiError::invalid("notify_via", format!("unknown channel {ch:?} (use \"email\", \"in_app\")")));
        }
        if !chosen.insert(ch.as_str()) {
            return Err(ApiError::invalid("notify_via", format!("lists {ch} twice")));
        }
    }
    let mut ids = req.participants.clone();
    ids.push(user.id.clone());
    let ids2 = ids.clone();
    let (people, prefs) =
        state.db.q(move |c| Ok((crate::notify::people(c, &ids2)?, crate::notify::prefs_of(c, &ids2)?))).await?;
    for p in &req.participants {
        if people.get(p).is_none_or(|p| p.disabled) {
            return Err(ApiError::invalid("participants", format!("no such user: {p}")));
        }
    }
    let now = crate::time::now_micros();
    let row = ScheduleRow {
        id: uuid::Uuid::now_v7().to_string(),
        creator_id: user.id.clone(),
        title,
        description,
        start_time: start,
        end_time: end,
        status: "scheduled".into(),
        sequence: 0,
        created_at: now,
        updated_at: now,
    };
    let parts: Vec<ParticipantRow> = req
        .participants
        .iter()
        .map(|p| ParticipantRow {
            schedule_id: row.id.clone(),
            user_id: p.clone(),
            status: "pending".into(),
            responded_at: None,
        })
        .collect();
    let full = Full { row: row.clone(), participants: parts.clone(), people };
    let mut d = Delivery::default();
    let organizer = full.name(&user.id);
    notify_participants(
        state,
        &mut d,
        &full,
        &req.participants,
        &prefs,
        (chosen.contains("in_app"), chosen.contains("email")),
        "meeting_invitation",
        Some(Mail::Invitation),
        ("meeting_invitation", format!("{organizer} invited you to “{}”", row.title)),
    );
    let emails = d.emails.len();
    let extra: Rows = Box::new(move |c| {
        diesel::insert_into(sc::table).values(&row).execute(c)?;
        for p in &parts {
            diesel::insert_into(sp::table).values(p).execute(c)?;
        }
        Ok(())
    });
    crate::notify::commit(state, d, Some(extra)).await.map_err(unavailable)?;
    audit(
        state,
        &client,
        &user,
        "schedule.create",
        &full.row.id,
        json!({
            "participants": req.participants, "notify_via": channels, "emails_queued": emails,
            "start_time": crate::time::micros_to_rfc3339(start),
        }),
    )
    .await;
    Ok((Status::Created, Json(ScheduleResponse { schedule: full.view(&user.id) })))
}

/// Meetings the caller created or takes part in, by start time (`from`/`to`: RFC 3339 window).
#[utoipa::path(get, path = "/api/schedules", tag = "schedules",
    params(("from" = Option<String>, Query), ("to" = Option<String>, Query), ("limit" = Option<i64>, Query),
        ("cursor" = Option<String>, Query)),
    responses((status = 200, body = ScheduleList), (status = 400)))]
#[get("/schedules?<from>&<to>&<limit>&<cursor>")]
pub async fn list(
    state: &State<AppState>,
    user: AuthUser,
    from: Option<&str>,
    to: Option<&str>,
    limit: Option<&str>,
    cursor: Option<&str>,
) -> ApiResult<Json<ScheduleList>> {
    let from = from.map(|s| parse_time("from", s)).transpose()?;
    let to = to.map(|s| parse_time("to", s)).transpose()?;
    let limit = pagination::parse_limit(limit)?;
    let after = match decode_str_cursor(cursor)? {
        None => None,
        Some(s) => {
            let (a, b) =
                s.split_once('|').ok_or_else(|| ApiError::invalid("cursor", "is not a cursor this server issued"))?;
            let a: i64 = a.parse().map_err(|_| ApiError::invalid("cursor", "is not a cursor this server issued"))?;
            Some((a, b.to_string()))
        }
    };
    let me = user.id.clone();
    let rows = state.db.q(move |c| super::list_for(c, &me, after, from, to, limit + 1)).await?;
    let (rows, next_cursor) =
        pagination::split_page(rows, limit, |f| encode_str_cursor(&format!("{}|{}", f.row.start_time, f.row.id)));
    Ok(Json(ScheduleList { schedules: rows.iter().map(|f| f.view(&user.id)).collect(), next_cursor }))
}

/// One meeting, for its creator and participants.
#[utoipa::path(get, path = "/api/schedules/{id}", tag = "schedules", params(("id" = String, Path)),
    responses((status = 200, body = ScheduleResponse), (status = 404)))]
#[get("/schedules/<id>")]
pub async fn get_one(state: &State<AppState>, user: AuthUser, id: &str) -> ApiResult<Json<ScheduleResponse>> {
    let full = visible(state, id, &user.id).await?;
    Ok(Json(ScheduleResponse { schedule: full.view(&user.id) }))
}

/// Changes title, description or time (creator only). A new time or title bumps the iCalendar
/// SEQUENCE and re-invites the participants (a new time also resets their answers to `pending`).
#[utoipa::path(patch, path = "/api/schedules/{id}", tag = "schedules", params(("id" = String, Path)),
    request_body = UpdateRequest,
    responses((status = 200, body = ScheduleResponse), (status = 400), (status = 403), (status = 404), (status = 409)))]
#[patch("/schedules/<id>", data = "<body>")]
pub async fn update(
    state: &State<AppState>,
    client: ClientInfo,
    user: AuthUser,
    id: &str,
    body: JsonBody<UpdateRequest>,
) -> ApiResult<Json<ScheduleResponse>> {
    let req = body.0;
    if req.title.is_none() && req.description.is_none() && req.start_time.is_none() && req.end_time.is_none() {
        return Err(ApiError::invalid("body", "name at least one of title, description, start_time, end_time"));
    }
    let title = req.title.as_deref().map(clean_title).transpose()?;
    let description = req.description.as_deref().map(clean_description).transpose()?;
    let start = req.start_time.as_deref().map(|s| parse_time("start_time", s)).transpose()?;
    let end = req.end_time.as_deref().map(|s| parse_time("end_time", s)).transpose()?;
    let mut full = visible(state, id, &user.id).await?;
    if full.role(&user.id) != Role::Creator {
        return Err(ApiError::forbidden("only the organizer can change the meeting"));
    }
    if full.row.status == "cancelled" {
        return Err(cancelled_conflict());
    }
    let old = full.row.clone();
    let mut r = old.clone();
    if let Some(t) = title {
        r.title = t;
    }
    if let Some(dsc) = description {
        r.description = dsc;
    }
    r.start_time = start.unwrap_or(r.start_time);
    r.end_time = end.unwrap_or(r.end_time);
    check_span(r.start_time, r.end_time)?;
    let time_changed = r.start_time != old.start_time || r.end_time != old.end_time;
    let title_changed = r.title != old.title;
    let mut changed = Vec::new();
    if title_changed {
        changed.push("title");
    }
    if r.description != old.description {
        changed.push("description");
    }
    if time_changed {
        changed.push("time");
    }
    if changed.is_empty() {
        return Ok(Json(ScheduleResponse { schedule: full.view(&user.id) }));
    }
    r.sequence += 1;
    r.updated_at = crate::time::now_micros();
    if time_changed {
        for p in &mut full.participants {
            p.status = "pending".into();
            p.responded_at = None;
        }
    }
    full.row = r.clone();
    let to = full.participant_ids();
    let prefs = prefs(state, to.clone()).await?;
    let mut d = Delivery::default();
    let renotify = time_changed || title_changed;
    let organizer = full.name(&user.id);
    notify_participants(
        state,
        &mut d,
        &full,
        &to,
        &prefs,
        (true, renotify),
        "meeting_invitation",
        renotify.then_some(Mail::Update),
        ("meeting_updated", format!("{organizer} changed “{}”", r.title)),
    );
    if !renotify {
        d.notifications.clear();
        d.events.retain(|e| e.name != "notification");
    }
    let old_seq = old.sequence;
    let extra: Rows = Box::new(move |c| {
        let n =
            diesel::update(sc::table.find(&r.id).filter(sc::status.eq("scheduled")).filter(sc::sequence.eq(old_seq)))
                .set((
                    sc::title.eq(&r.title),
                    sc::description.eq(&r.description),
                    sc::start_time.eq(r.start_time),
                    sc::end_time.eq(r.end_time),
                    sc::sequence.eq(r.sequence),
                    sc::updated_at.eq(r.updated_at),
                ))
                .execute(c)?;
        if n == 0 {
            return Err(diesel::result::Error::NotFound); // changed or cancelled meanwhile
        }
        if time_changed {
            diesel::update(sp::table.filter(sp::schedule_id.eq(&r.id)))
                .set((sp::status.eq("pending"), sp::responded_at.eq(None::<i64>)))
                .execute(c)?;
        }
        Ok(())
    });
    crate::notify::commit(state, d, Some(extra)).await.map_err(|e| match e {
        CommitError::Refused => {
            ApiError::new(Status::Conflict, "conflict", "the meeting changed meanwhile; reload it and try again")
        }
        e => unavailable(e),
    })?;
    audit(
        state,
        &client,
        &user,
        "schedule.update",
        &full.row.id,
        json!({"changed": changed, "sequence": full.row.sequence}),
    )
    .await;
    Ok(Json(ScheduleResponse { schedule: full.view(&user.id) }))
}

/// A participant accepts or declines; the creator gets `schedule_response`.
#[utoipa::path(post, path = "/api/schedules/{id}/respond", tag = "schedules", params(("id" = String, Path)),
    request_body = RespondRequest,
    responses((status = 200, body = ScheduleResponse), (status = 400), (status = 403), (status = 404), (status = 409)))]
#[post("/schedules/<id>/respond", data = "<body>")]
pub async fn respond(
    state: &State<AppState>,
    client: ClientInfo,
    user: AuthUser,
    id: &str,
    body: JsonBody<RespondRequest>,
) -> ApiResult<Json<ScheduleResponse>> {
    let status = body.0.status;
    if status != "accepted" && status != "declined" {
        return Err(ApiError::invalid("status", "must be \"accepted\" or \"declined\""));
    }
    let mut full = visible(state, id, &user.id).await?;
    if full.role(&user.id) == Role::Creator {
        return Err(ApiError::forbidden("the organizer does not answer their own meeting; only participants do"));
    }
    if full.row.status == "cancelled" {
        return Err(cancelled_conflict());
    }
    let now = crate::time::now_micros();
    for p in &mut full.participants {
        if p.user_id == user.id {
            p.status = status.clone();
            p.responded_at = Some(now);
        }
    }
    let creator = full.row.creator_id.clone();
    let prefs = prefs(state, vec![creator.clone()]).await?;
    let mut d = Delivery::default();
    let me = full.name(&user.id);
    d.event(
        vec![creator.clone()],
        "schedule_response",
        json!({
            "schedule_id": full.row.id, "user_id": user.id, "display_name": me, "status": status,
            "schedule": full.view(&creator),
        }),
    );
    if prefs.get(&creator).copied().unwrap_or_default().in_app {
        d.notify(
            &creator,
            "schedule_response",
            format!("{me} {} “{}”", if status == "accepted" { "accepted" } else { "declined" }, full.row.title),
            super::when(full.row.start_time, full.row.end_time),
            json!({"schedule_id": full.row.id, "user_id": user.id, "status": status}),
        );
    }
    let (sid, uid, st) = (full.row.id.clone(), user.id.clone(), status.clone());
    let extra: Rows = Box::new(move |c| {
        let live: i64 = sc::table.find(&sid).filter(sc::status.eq("scheduled")).count().get_result(c)?;
        if live == 0 {
            return Err(diesel::result::Error::NotFound); // cancelled meanwhile
        }
        let n = diesel::update(sp::table.find((&sid, &uid)))
            .set((sp::status.eq(&st), sp::responded_at.eq(now)))
            .execute(c)?;
        if n == 0 {
            return Err(diesel::result::Error::NotFound);
        }
        Ok(())
    });
    crate::notify::commit(state, d, Some(extra)).await.map_err(|e| match e {
        CommitError::Refused => cancelled_conflict(),
        e => unavailable(e),
    })?;
    audit(state, &client, &user, "schedule.respond", &full.row.id, json!({"status": status})).await;
    Ok(Json(ScheduleResponse { schedule: full.view(&user.id) }))
}

/// Cancels a meeting (creator only): marked `cancelled`, never deleted; participants get
/// `meeting_cancelled` and a cancellation e-mail with `METHOD:CANCEL`.
#[utoipa::path(delete, path = "/api/schedules/{id}", tag = "schedules", params(("id" = String, Path)),
    responses((status = 204), (status = 403), (status = 404)))]
#[delete("/schedules/<id>")]
pub async fn cancel(state: &State<AppState>, client: ClientInfo, user: AuthUser, id: &str) -> ApiResult<Status> {
    let mut full = visible(state, id, &user.id).await?;
    if full.role(&user.id) != Role::Creator {
        return Err(ApiError::forbidden("only the organizer can cancel the meeting"));
    }
    if full.row.status == "cancelled" {
        return Ok(Status::NoContent);
    }
    let old_seq = full.row.sequence;
    full.row.status = "cancelled".into();
    full.row.sequence += 1;
    full.row.updated_at = crate::time::now_micros();
    let to = full.participant_ids();
    let prefs = prefs(state, to.clone()).await?;
    let mut d = Delivery::default();
    let organizer = full.name(&user.id);
    notify_participants(
        state,
        &mut d,
        &full,
        &to,
        &prefs,
        (true, true),
        "meeting_cancelled",
        Some(Mail::Cancellation),
        ("meeting_cancelled", format!("{organizer} cancelled “{}”", full.row.title)),
    );
    let r = full.row.clone();
    let extra: Rows = Box::new(move |c| {
        let n =
            diesel::update(sc::table.find(&r.id).filter(sc::status.eq("scheduled")).filter(sc::sequence.eq(old_seq)))
                .set((sc::status.eq("cancelled"), sc::sequence.eq(r.sequence), sc::updated_at.eq(r.updated_at)))
                .execute(c)?;
        if n == 0 {
            return Err(diesel::result::Error::NotFound);
        }
        Ok(())
    });
    match crate::notify::commit(state, d, Some(extra)).await {
        Ok(()) => {}
        // Cancelled (or changed) meanwhile: a second cancel is a no-op; a change, a conflict.
        Err(CommitError::Refused) => {
            let now = visible(state, id, &user.id).await?;
            if now.row.status == "cancelled" {
                return Ok(Status::NoContent);
            }
            return Err(ApiError::new(Status::Conflict, "conflict", "the meeting changed meanwhile; try again"));
        }
        Err(e) => return Err(unavailable(e)),
    }
    audit(state, &client, &user, "schedule.cancel", &full.row.id, json!({"participants": to.len()})).await;
    Ok(Status::NoContent)
}

/// An iCalendar file.
pub struct Ics {
    body: String,
    filename: String,
}

impl<'r> Responder<'r, 'static> for Ics {
    fn respond_to(self, _: &'r Request<'_>) -> response::Result<'static> {
        Response::build()
            .header(ContentType::new("text", "calendar").with_params(("charset", "utf-8")))
            .header(Header::new("Content-Disposition", format!("attachment; filename=\"{}\"", self.filename)))
            .header(Header::new("Cache-Control", "no-store"))
            .sized_body(self.body.len(), std::io::Cursor::new(self.body))
            .ok()
    }
}

/// The meeting as iCalendar (RFC 5545): `METHOD:REQUEST`, or `METHOD:CANCEL` once cancelled.
#[utoipa::path(get, path = "/api/schedules/{id}/ics", tag = "schedules", params(("id" = String, Path)),
    responses((status = 200, content_type = "text/calendar", body = String), (status = 404)))]
#[get("/schedules/<id>/ics")]
pub async fn ics(state: &State<AppState>, user: AuthUser, id: &str) -> ApiResult<Ics> {
    let full = visible(state, id, &user.id).await?;
    let filename = format!(
        "meeting-{}.ics",
        full.row.id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect::<String>()
    );
    Ok(Ics { body: full.ics(&state.config.public_url()), filename })
}
