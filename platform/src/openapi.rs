//! The OpenAPI document, built from the `#[utoipa::path]` annotations on the handlers.
//! A test checks that every mounted `/api` route is in it.

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "SecCollab API", description = "The HTTP contract of SecCollab (see API.md)."),
    paths(
        crate::system::health,
        crate::system::openapi,
        crate::audit::routes::logs,
        crate::audit::routes::verify,
    )
)]
pub struct ApiDoc;
