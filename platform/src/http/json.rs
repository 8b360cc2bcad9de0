//! `JsonBody<T>`: a JSON request body with errors a person can act on.
//!
//! Unlike Rocket's `Json`, a malformed body answers 400 naming the problem (line, column, field),
//! a body over `server.max_json_bytes` answers 413, and another content type 415 — all in the
//! API's JSON error shape.

use rocket::data::{FromData, Outcome, ToByteUnit};
use rocket::http::Status;
use rocket::{Data, Request};
use serde::de::DeserializeOwned;

use super::error::{fail_with, ApiError};
use crate::AppState;

#[derive(Debug)]
pub struct JsonBody<T>(pub T);

#[rocket::async_trait]
impl<'r, T: DeserializeOwned> FromData<'r> for JsonBody<T> {
    type Error = ();

    async fn from_data(req: &'r Request<'_>, data: Data<'r>) -> Outcome<'r, Self> {
        if let Some(ct) = req.content_type() {
            if !ct.is_json() {
                let e = ApiError::new(
                    Status::UnsupportedMediaType,
                    "unsupported_media_type",
                    format!("send the body as application/json, not {ct}"),
                );
                return Outcome::Error((fail_with(req, e), ()));
            }
        }
        let limit = req.rocket().state::<AppState>().map(|s| s.config.server.max_json_bytes).unwrap_or(1024 * 1024);
        let bytes = match read_bounded(data, limit).await {
            Ok(Some(b)) => b,
            Ok(None) => {
                let e = ApiError::new(
                    Status::PayloadTooLarge,
                    "payload_too_large",
                    format!("the JSON body exceeds the limit of {limit} bytes"),
                );
                return Outcome::Error((fail_with(req, e), ()));
            }
            Err(e) => {
                let e = ApiError::invalid("body", format!("could not be read: {e}"));
                return Outcome::Error((fail_with(req, e), ()));
            }
        };
        match serde_json::from_slice::<T>(&bytes) {
            Ok(v) => Outcome::Success(JsonBody(v)),
            Err(e) => {
                let e = ApiError::new(
                    Status::BadRequest,
                    "invalid_json",
                    format!("the body is not valid for this call: {e}"),
                );
                Outcome::Error((fail_with(req, e), ()))
            }
        }
    }
}

/// How much of an oversized body is read and thrown away before answering 413. Answering while
/// the client is still sending makes the server close a socket with unread data, which the
/// kernel turns into a reset: most clients then report "connection reset" instead of the 413.
/// Reading (not keeping) a bounded tail lets them see the answer; beyond the bound the
/// connection is closed as before, so a huge body costs the server no more than this.
const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;

/// Reads at most `limit` bytes of the body. `Ok(None)` when the body is longer (the rest is
/// drained up to [`DRAIN_LIMIT`]).
async fn read_bounded(data: Data<'_>, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    use rocket::tokio::io::AsyncReadExt;
    let mut stream = data.open((limit + DRAIN_LIMIT).bytes());
    let mut body = Vec::new();
    (&mut stream).take(limit + 1).read_to_end(&mut body).await?;
    if body.len() as u64 <= limit {
        return Ok(Some(body));
    }
    drop(body);
    rocket::tokio::io::copy(&mut stream, &mut rocket::tokio::io::sink()).await?;
    Ok(None)
}
