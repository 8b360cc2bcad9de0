//! `POST /api/messages/upload`: a message carrying a file. The file goes through the same
//! pipeline as any upload (type policy, encryption, scanning; downloads wait for a clean scan)
//! and belongs to the sender; the receiver is granted `download` on it in the same transaction
//! that stores the message.

use rocket::data::Data;
use rocket::http::{ContentType, Status};
use rocket::serde::json::Json;
use rocket::{post, State};

use super::routes::{check_content, rate, receiver, MessageResponse};
use super::{MediaView, MessageRow, MessageView};
use crate::auth::AuthUser;
use crate::events::{Event, Rows};
use crate::files::routes::{receive_upload, ContentLength, UploadForm};
use crate::http::{ApiError, ApiResult, ClientInfo};
use crate::AppState;

/// The message type a file's (detected) content type makes.
pub fn kind_of(mime: &str) -> &'static str {
    if mime.starts_with("image/") {
        "image"
    } else if mime.starts_with("video/") {
        "video"
    } else {
        "file"
    }
}

/// Sends a file as a message; the receiver gets `new_message` and may download the file.
#[utoipa::path(post, path = "/api/messages/upload", tag = "messages",
    request_body(content_type = "multipart/form-data", description = "`file`, `receiver_id`, optional `content`"),
    responses((status = 201, body = MessageResponse), (status = 400), (status = 404), (status = 413), (status = 415), (status = 429)))]
#[post("/messages/upload", data = "<data>")]
pub async fn upload(
    state: &State<AppState>,
    client: ClientInfo,
    user: AuthUser,
    ct: Option<&ContentType>,
    content_length: ContentLength,
    data: Data<'_>,
) -> ApiResult<(Status, Json<MessageResponse>)> {
    rate(state, &user.id)?;
    let (st, sender) = (state.inner().clone(), user.id.clone());
    let check = move |form: &UploadForm| -> futures_util::future::BoxFuture<'static, ApiResult<()>> {
        let receiver_id = form.fields.get("receiver_id").cloned();
        let content = form.fields.get("content").cloned().unwrap_or_default();
        Box::pin(async move {
            let Some(r) = receiver_id.filter(|r| !r.is_empty()) else {
                return Err(ApiError::invalid("receiver_id", "is required"));
            };
            check_content(&st, &content, true)?;
            receiver(&st, &sender, &r).await
        })
    };
    let accepted = ["receiver_id", "content"];
    let (file, form) = receive_upload(state, &client, &user, ct, content_length, data, &accepted, check).await?;
    let receiver_id = form.fields.get("receiver_id").cloned().unwrap_or_default();
    let row = MessageRow {
        id: uuid::Uuid::now_v7().to_string(),
        sender_id: user.id.clone(),
        receiver_id: Some(receiver_id.clone()),
        file_id: None,
        content: form.fields.get("content").cloned().unwrap_or_default(),
        kind: kind_of(&file.mime_type).into(),
        media_file_id: Some(file.id.clone()),
        created_at: crate::time::now_micros(),
    };
    let media = MediaView {
        file_id: file.id.clone(),
        name: file.name.clone(),
        mime_type: file.mime_type.clone(),
        size: file.size,
    };
    let view = MessageView::new(&row, Some(media));
    let (fid, rid, by) = (file.id.clone(), receiver_id.clone(), user.id.clone());
    let rows: Rows = Box::new(move |c| {
        match crate::files::share_in(c, &fid, &by, std::slice::from_ref(&rid), "download", None)? {
            Ok(_) => {}
            Err(_) => return Err(diesel::result::Error::NotFound), // receiver disabled meanwhile
        }
        crate::messages::insert(c, &row)
    });
    let to = vec![receiver_id, user.id.clone()];
    let ev = Event { to, name: "new_message", data: serde_json::json!({"message": view}).into() };
    if let Err(e) = state.events.commit(Some(rows), vec![ev]).await {
        tracing::error!(error = %e, "media message not stored");
        // The message did not happen: the file must not linger as a stray upload.
        let (fid, key, storage) = (file.id.clone(), file.storage_key.clone(), state.storage.clone());
        let _ = state
            .db
            .q(move |c| {
                use diesel::{QueryDsl, RunQueryDsl};
                diesel::delete(crate::db::schema::files::table.find(&fid)).execute(c)
            })
            .await;
        let _ = tokio::task::spawn_blocking(move || storage.delete(&key)).await;
        return Err(ApiError::unavailable("the message could not be stored; try again", 2));
    }
    Ok((Status::Created, Json(MessageResponse { message: view })))
}
