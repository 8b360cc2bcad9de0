//! `/api/messages/*` (direct messages) and `/api/files/{id}/messages` (file discussions).

use std::sync::Arc;

use diesel::{QueryDsl, RunQueryDsl};
use rocket::http::Status;
use rocket::serde::json::Json;
use rocket::{get, post, routes, Route, State};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{MessageRow, MessageView};
use crate::auth::AuthUser;
use crate::events::{Event, EventData, Rows};
use crate::http::error::{ApiError, ApiResult};
use crate::http::json::JsonBody;
use crate::http::pagination::{self, decode_str_cursor, encode_str_cursor};
use crate::AppState;

pub fn routes() -> Vec<Route> {
    routes![send, conversation, conversations, mark_read, file_messages, post_file_message, super::media::upload]
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessageResponse {
    pub message: MessageView,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessageList {
    pub messages: Vec<MessageView>,
    /// For the conversation: pass as `before` for older messages; for a file discussion: pass
    /// as `cursor` for newer ones. `null` when there are no more.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    pub receiver_id: String,
    pub content: String,
    /// Only `text` here; media go through `POST /api/messages/upload`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

/// Checks message text against the configured limit.
pub fn check_content(state: &AppState, content: &str, allow_empty: bool) -> ApiResult<()> {
    let max = state.config.messages.max_content_chars;
    if !allow_empty && content.trim().is_empty() {
        return Err(ApiError::invalid("content", "must not be empty"));
    }
    if content.chars().count() > max {
        return Err(ApiError::invalid("content", format!("must be at most {max} characters")));
    }
    if content.contains('\0') {
        return Err(ApiError::invalid("content", "must not contain NUL characters"));
    }
    Ok(())
}

/// Takes one send from the user's rate budget.
pub fn rate(state: &AppState, user: &str) -> ApiResult<()> {
    state.send_limiter.take(user).map_err(|wait| ApiError {
        retry_after: Some(wait),
        ..ApiError::new(Status::TooManyRequests, "rate_limited", "you are sending messages too fast; slow down")
    })
}

/// Resolves a receiver: an enabled user other than the sender.
pub async fn receiver(state: &AppState, sender: &str, receiver_id: &str) -> ApiResult<()> {
    if receiver_id == sender {
        return Err(ApiError::invalid("receiver_id", "you cannot send a message to yourself"));
    }
    if !state.active_users.check(&state.db, receiver_id).await? {
        return Err(ApiError::new(Status::NotFound, "user_not_found", "no such user"));
    }
    Ok(())
}

/// Stores a direct message with its `new_message` events (receiver and the sender's other
/// devices) in one transaction. Returns the view as JSON text (serialised once, for the event
/// and for a WebSocket sender's answer).
pub async fn store_direct(state: &AppState, row: MessageRow, view: &MessageView) -> ApiResult<Arc<str>> {
    let to = vec![row.receiver_id.clone().unwrap_or_default(), row.sender_id.clone()];
    let insert: Rows = Box::new(move |c| crate::messages::insert(c, &row));
    let view_json = serde_json::to_string(view).map_err(|e| ApiError::internal("message view", e))?;
    let data: Arc<str> = format!(r#"{{"message":{view_json}}}"#).into();
    let ev = Event { to, name: "new_message", data: EventData::Text(data) };
    state.events.commit(Some(insert), vec![ev]).await.map_err(|e| {
        tracing::error!(error = %e, "message not stored");
        ApiError::unavailable("the message could not be stored; try again", 2)
    })?;
    Ok(view_json.into())
}

/// Checks, rate-limits and stores a text message from `sender`; the receiver and the sender's
/// devices get `new_message`. The HTTP `send` and the WebSocket's `send_message` both end here.
/// Returns the stored message's view and that view as JSON text.
pub async fn send_text(state: &AppState, sender: &str, req: SendRequest) -> ApiResult<(MessageView, Arc<str>)> {
    match req.kind.as_deref() {
        None | Some("text") => {}
        Some(_) => return Err(ApiError::invalid("type", "must be \"text\" (send media with /api/messages/upload)")),
    }
    check_content(state, &req.content, false)?;
    if req.receiver_id == sender {
        return Err(ApiError::invalid("receiver_id", "you cannot send a message to yourself"));
    }
    rate(state, sender)?;
    receiver(state, sender, &req.receiver_id).await?;
    let row = MessageRow {
        id: uuid::Uuid::now_v7().to_string(),
        sender_id: sender.to_string(),
        receiver_id: Some(req.receiver_id),
        file_id: None,
        content: req.content,
        kind: "text".into(),
        media_file_id: None,
        created_at: crate::time::now_micros(),
    };
    let view = MessageView::new(&row, None);
    let text = store_direct(state, row, &view).await?;
    Ok((view, text))
}

/// Sends a text message; the receiver gets `new_message`.
#[utoipa::path(post, path = "/api/messages/send", tag = "messages", request_body = SendRequest,
    responses((status = 201, body = MessageResponse), (status = 400), (status = 404), (status = 429)))]
#[post("/messages/send", data = "<req>")]
pub async fn send(
    state: &State<AppState>,
    user: AuthUser,
    req: JsonBody<SendRequest>,
) -> ApiResult<(Status, Json<MessageResponse>)> {
    let (view, _) = send_text(state, &user.id, req.0).await?;
    Ok((Status::Created, Json(MessageResponse { message: view })))
}

/// The caller's conversation with another user, oldest first (`before`: an earlier page's
/// `next_cursor`).
#[utoipa::path(get, path = "/api/messages/{user_id}", tag = "messages",
    params(("user_id" = String, Path), ("limit" = Option<i64>, Query), ("before" = Option<String>, Query)),
    responses((status = 200, body = MessageList), (status = 404)))]
#[get("/messages/<user_id>?<limit>&<before>")]
pub async fn conversation(
    state: &State<AppState>,
    user: AuthUser,
    user_id: &str,
    limit: Option<&str>,
    before: Option<&str>,
) -> ApiResult<Json<MessageList>> {
    let limit = pagination::parse_limit(limit)?;
    let before =
        decode_str_cursor(before).map_err(|_| ApiError::invalid("before", "is not a cursor this server issued"))?;
    let (me, other) = (user.id.clone(), user_id.to_string());
    let (rows, media) = state
        .db
        .q(move |c| {
            if !crate::db::schema::users::table.find(&other).count().get_result::<i64>(c).map(|n| n > 0)? {
                return Ok(None);
            }
            let rows = super::conversation(c, &me, &other, before.as_deref(), limit + 1)?;
            let media = super::media_of(c, &rows)?;
            Ok(Some((rows, media)))
        })
        .await?
        .ok_or_else(|| ApiError::new(Status::NotFound, "user_not_found", "no such user"))?;
    // Rows come oldest first; the extra one (if any) is the oldest and means "there is more".
    let mut rows = rows;
    let more = rows.len() as i64 > limit;
    if more {
        rows.remove(0);
    }
    let next_cursor = if more { rows.first().map(|r| encode_str_cursor(&r.id)) } else { None };
    let messages = rows.iter().map(|r| MessageView::new(r, media.get(&r.id).cloned())).collect();
    Ok(Json(MessageList { messages, next_cursor }))
}

fn file_not_found() -> ApiError {
    ApiError::new(Status::NotFound, "file_not_found", "no such file, or it is not shared with you")
}

/// A file's discussion, oldest first, for its owner and the users it is shared with.
#[utoipa::path(get, path = "/api/files/{file_id}/messages", tag = "messages",
    params(("file_id" = String, Path), ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = MessageList), (status = 404)))]
#[get("/files/<file_id>/messages?<limit>&<cursor>")]
pub async fn file_messages(
    state: &State<AppState>,
    user: AuthUser,
    file_id: &str,
    limit: Option<&str>,
    cursor: Option<&str>,
) -> ApiResult<Json<MessageList>> {
    let limit = pagination::parse_limit(limit)?;
    let after = decode_str_cursor(cursor)?;
    let (fid, uid) = (file_id.to_string(), user.id.clone());
    let rows = state
        .db
        .q(move |c| {
            if crate::files::visible(c, &fid, &uid)?.is_none() {
                return Ok(None);
            }
            super::file_messages(c, &fid, after.as_deref(), limit + 1).map(Some)
        })
        .await?
        .ok_or_else(file_not_found)?;
    let (rows, next_cursor) = pagination::split_page(rows, limit, |r| encode_str_cursor(&r.id));
    Ok(Json(MessageList { messages: rows.iter().map(|r| MessageView::new(r, None)).collect(), next_cursor }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileMessageRequest {
    pub content: String,
}

/// Posts to a file's discussion; everyone who can see the file gets `file_message_update`.
#[utoipa::path(post, path = "/api/files/{file_id}/messages", tag = "messages", params(("file_id" = String, Path)),
    request_body = FileMessageRequest,
    responses((status = 201, body = MessageResponse), (status = 400), (status = 404), (status = 429)))]
#[post("/files/<file_id>/messages", data = "<req>")]
pub async fn post_file_message(
    state: &State<AppState>,
    user: AuthUser,
    file_id: &str,
    req: JsonBody<FileMessageRequest>,
) -> ApiResult<(Status, Json<MessageResponse>)> {
    check_content(state, &req.0.content, false)?;
    rate(state, &user.id)?;
    let (fid, uid) = (file_id.to_string(), user.id.clone());
    let audience = state
        .db
        .q(move |c| {
            let Some((f, _)) = crate::files::visible(c, &fid, &uid)? else { return Ok(None) };
            let mut to = crate::files::audience(c, &f.id)?;
            to.push(f.owner_id);
            Ok(Some(to))
        })
        .await?
        .ok_or_else(file_not_found)?;
    let row = MessageRow {
        id: uuid::Uuid::now_v7().to_string(),
        sender_id: user.id.clone(),
        receiver_id: None,
        file_id: Some(file_id.to_string()),
        content: req.0.content,
        kind: "text".into(),
        media_file_id: None,
        created_at: crate::time::now_micros(),
    };
    let view = MessageView::new(&row, None);
    // The sender's access is re-checked inside the transaction: one revoked meanwhile posts
    // nothing.
    let (fid, uid) = (file_id.to_string(), user.id.clone());
    let insert: Rows = Box::new(move |c| {
        if crate::files::visible(c, &fid, &uid)?.is_none() {
            return Err(diesel::result::Error::NotFound);
        }
        crate::messages::insert(c, &row)
    });
    let ev =
        Event { to: audience, name: "file_message_update", data: json!({"file_id": file_id, "message": view}).into() };
    state.events.commit(Some(insert), vec![ev]).await.map_err(|e| {
        if e == crate::events::CommitError::Refused {
            return file_not_found();
        }
        tracing::error!(error = %e, "file message not stored");
        ApiError::unavailable("the message could not be stored; try again", 2)
    })?;
    Ok((Status::Created, Json(MessageResponse { message: view })))
}

/// One conversation in the list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationView {
    pub user: crate::auth::users::UserSummary,
    pub last_message: MessageView,
    /// Messages from `user` the caller has not marked read.
    pub unread: i64,
    /// `online`, `away` or `offline` as this node sees it.
    pub presence: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationList {
    pub conversations: Vec<ConversationView>,
}

/// The caller's direct conversations, the most recent first (up to `limit`, default 50, max
/// 200), with unread counts and presence.
#[utoipa::path(get, path = "/api/messages/conversations", tag = "messages",
    params(("limit" = Option<i64>, Query)), responses((status = 200, body = ConversationList)))]
#[get("/messages/conversations?<limit>")]
pub async fn conversations(
    state: &State<AppState>,
    user: AuthUser,
    limit: Option<&str>,
) -> ApiResult<Json<ConversationList>> {
    let limit = pagination::parse_limit(limit)? as usize;
    let me = user.id.clone();
    let rows = state.db.q(move |c| super::conversations(c, &me, limit)).await?;
    let conversations = rows
        .into_iter()
        .map(|r| {
            let (id, display_name, email) = r.peer;
            ConversationView {
                presence: state.hub.presence(&id).as_str().to_string(),
                user: crate::auth::users::UserSummary { id, email, display_name },
                last_message: MessageView::new(&r.last, None),
                unread: r.unread,
            }
        })
        .collect();
    Ok(Json(ConversationList { conversations }))
}

/// Marks the caller's conversation with `user_id` read (up to its newest message).
#[utoipa::path(post, path = "/api/messages/{user_id}/read", tag = "messages",
    params(("user_id" = String, Path)), responses((status = 204), (status = 404)))]
#[post("/messages/<user_id>/read")]
pub async fn mark_read(state: &State<AppState>, user: AuthUser, user_id: &str) -> ApiResult<Status> {
    let (me, other) = (user.id.clone(), user_id.to_string());
    let found = state
        .db
        .q(move |c| {
            if !crate::db::schema::users::table.find(&other).count().get_result::<i64>(c).map(|n| n > 0)? {
                return Ok(false);
            }
            super::mark_read(c, &me, &other).map(|()| true)
        })
        .await?;
    if !found {
        return Err(ApiError::new(Status::NotFound, "user_not_found", "no such user"));
    }
    Ok(Status::NoContent)
}
