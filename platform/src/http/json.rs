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
        let bytes = match data.open(limit.bytes()).into_bytes().await {
            Ok(b) if b.is_complete() => b.into_inner(),
            Ok(_) => {
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
