//! Accounts and authentication.
//!
//! This foundation holds users, password hashing and the request guards. Until token sign-in
//! lands, [`AdminUser`] and [`AuthUser`] deny every request: a guard stubbed to *allow* would be
//! a hole, one stubbed to deny is only a missing feature.

pub mod password;
pub mod users;

use rocket::request::{FromRequest, Outcome};
use rocket::Request;

use crate::http::error::{fail_with, ApiError};

/// The authenticated user id of this request, if any, for the per-request audit entry.
#[derive(Debug, Clone, Default)]
pub struct CurrentActor(pub Option<String>);

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: String,
}

/// A signed-in administrator.
#[derive(Debug, Clone)]
pub struct AdminUser {
    pub id: String,
}

fn refuse(req: &Request<'_>) -> rocket::http::Status {
    let msg = if req.headers().get_one("Authorization").is_some() {
        "the access token is not valid"
    } else {
        "sign in first: this call needs a valid access token"
    };
    fail_with(req, ApiError::unauthenticated(msg))
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for AuthUser {
    type Error = ();

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ()> {
        Outcome::Error((refuse(req), ()))
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for AdminUser {
    type Error = ();

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ()> {
        Outcome::Error((refuse(req), ()))
    }
}
