//! The OpenAPI document, built from the `#[utoipa::path]` annotations on the handlers.
//! A test checks that every mounted `/api` route is in it.

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "SecCollab API",
        description = "The HTTP contract of SecCollab (see API.md)."
    ),
    paths(
        crate::system::health,
        crate::system::openapi,
        crate::audit::routes::logs,
        crate::audit::routes::verify,
        crate::auth::routes::register,
        crate::auth::routes::login,
        crate::auth::routes::verify_mfa,
        crate::auth::routes::refresh,
        crate::auth::routes::logout,
        crate::auth::routes::me,
        crate::auth::routes::change_password,
        crate::auth::routes::mfa_setup,
        crate::auth::routes::mfa_enable,
        crate::auth::routes::mfa_disable,
        crate::auth::routes::list_users,
        crate::auth::routes::my_sessions,
        crate::auth::routes::revoke_my_session,
        crate::auth::routes::get_user,
        crate::auth::routes::reverify,
        crate::auth::admin_routes::list,
        crate::auth::admin_routes::create,
        crate::auth::admin_routes::unlock,
        crate::auth::admin_routes::disable,
        crate::auth::admin_routes::enable,
        crate::auth::admin_routes::clear_reverify,
        crate::auth::admin_routes::reset_mfa,
        crate::auth::admin_routes::create_invite,
        crate::files::routes::upload,
        crate::files::routes::list,
        crate::files::routes::shared,
        crate::files::routes::get_file,
        crate::files::routes::delete_file,
        crate::files::routes::share,
        crate::files::routes::unshare,
        crate::files::routes::list_shares,
        crate::files::routes::download,
        crate::files::routes::integrity_check,
        crate::messages::routes::send,
        crate::messages::routes::conversation,
        crate::messages::routes::conversations,
        crate::messages::routes::mark_read,
        crate::messages::routes::file_messages,
        crate::messages::routes::post_file_message,
        crate::messages::media::upload,
        crate::schedules::routes::create,
        crate::schedules::routes::list,
        crate::schedules::routes::get_one,
        crate::schedules::routes::update,
        crate::schedules::routes::respond,
        crate::schedules::routes::cancel,
        crate::schedules::routes::ics,
        crate::notify::routes::list,
        crate::notify::routes::read_one,
        crate::notify::routes::read_all,
        crate::notify::routes::get_prefs,
        crate::notify::routes::put_prefs,
        crate::notify::routes::outbox,
        crate::notify::routes::retry,
        crate::security::alerts::list,
        crate::security::alerts::ack,
        crate::security::responses::list_blocks,
        crate::security::responses::lift_block,
        crate::security::responses::list_held,
        crate::security::scan_routes::security_scan,
        crate::security::scan_routes::reload,
        crate::security::scan_routes::release,
        crate::plugins::routes::list,
        crate::auth::oauth::providers,
        crate::auth::oauth::login,
        crate::auth::oauth::link_start,
        crate::auth::oauth::callback,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// Declares the bearer scheme every protected call uses.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every mounted `/api` route appears in the OpenAPI document with its method.
    #[test]
    fn every_api_route_is_documented() {
        let doc = ApiDoc::openapi();
        let mut missing = Vec::new();
        for route in crate::api_routes() {
            let path = format!("/api{}", route.uri.path()).trim_end_matches('/').to_string();
            let path: String = path
                .split('/')
                .map(|seg| match seg.strip_prefix('<').and_then(|s| s.strip_suffix('>')) {
                    Some(name) => format!("{{{}}}", name.trim_end_matches("..")),
                    None => seg.to_string(),
                })
                .collect::<Vec<_>>()
                .join("/");
            let method = route.method.as_str().to_lowercase();
            let documented = doc.paths.paths.get(&path).is_some_and(|item| {
                let json = serde_json::to_value(item).unwrap_or_default();
                json.get(&method).is_some()
            });
            if !documented {
                missing.push(format!("{method} {path}"));
            }
        }
        assert!(missing.is_empty(), "routes missing from /api/openapi.json: {missing:?}");
    }
}
