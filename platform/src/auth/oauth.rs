//! Sign-in through OAuth-provider plugins (OpenID Connect): `GET /api/auth/providers`,
//! `GET /api/auth/login/{provider}` and `GET /api/auth/callback/{provider}`.
//!
//! The host owns the security of the flow; the plugin only speaks to the provider:
//! * `state` (256 random bits) is single-use, expires after ten minutes, and is bound to the
//!   browser that started the sign-in by a random secret in an HttpOnly cookie (only its keyed
//!   hash is stored), so a link or a code captured elsewhere is useless;
//! * the `nonce` and the PKCE verifier (S256) are made here and never leave the server except
//!   as the nonce in the request and the challenge; the plugin checks the ID token's nonce,
//!   issuer, audience, signature and expiry;
//! * an identity is linked by the ID token's (`iss`, `sub`). On first sign-in a new account is
//!   made when registration is open; an existing account with the same **verified** e-mail is
//!   linked automatically only when it has no password and is not an administrator's, or when
//!   its e-mail domain is on the provider's allow-list (`auth.oidc_link_domains`; never an
//!   administrator's). Otherwise the answer is 409 `link_required`: the owner signs in and
//!   links the provider from their own session (`GET /api/auth/link/{provider}`, the account
//!   page), and is told of every new link in the app and by e-mail. An unverified e-mail never
//!   links to an existing account.
//!
//! Accounts with MFA still need their second factor: the callback answers `mfa_required` as
//! password sign-in does.

use diesel::prelude::*;
use rocket::http::{Cookie, CookieJar, SameSite, Status};
use rocket::response::Redirect;
use rocket::serde::json::Json;
use rocket::{get, State};
use seccollab_plugin_api::{AuthorizationRequest, CodeExchange, OAuthError, OAuthIdentity};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::mfa;
use super::routes::{entry, start_session};
use super::users::{self, Role, User, UserView};
use crate::audit::Outcome;
use crate::config::Registration;
use crate::db::schema::{oauth_identities as oi, oauth_logins as ol};
use crate::http::{ApiError, ApiResult, ClientInfo};
use crate::AppState;

const COOKIE: &str = "seccollab_oauth";
const COOKIE_PATH: &str = "/api/auth/callback";
const LOGIN_TTL_SECS: i64 = 600;
/// Sign-ins in progress at once (each is a row for ten minutes): anonymous requests must not
/// be able to grow the table without bound.
const MAX_PENDING: i64 = 10_000;

/// What is stored of the browser-binding secret: a keyed hash, like every bearer secret.
fn binding_hash(state: &AppState, binding: &str) -> String {
    crate::crypto::keyed_hash(&state.keys.hash_key, "oauth-binding", binding)
}

fn unknown_provider(name: &str) -> ApiError {
    ApiError::new(Status::NotFound, "unknown_provider", format!("no sign-in provider `{name}` is configured"))
}

fn redirect_uri(state: &AppState, provider: &str) -> String {
    format!("{}/api/auth/callback/{provider}", state.config.public_url())
}

/// A sign-in provider as the sign-in page shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProviderView {
    /// The `{provider}` in the login path.
    pub name: String,
    /// What the sign-in button says.
    pub display_name: String,
    pub login_url: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProviderList {
    pub providers: Vec<ProviderView>,
}

/// The configured sign-in providers (OAuth-provider plugins); public.
#[utoipa::path(get, path = "/api/auth/providers", tag = "auth", responses((status = 200, body = ProviderList)))]
#[get("/auth/providers")]
pub async fn providers(state: &State<AppState>) -> Json<ProviderList> {
    let providers = state
        .plugins
        .oauth
        .iter()
        .map(|p| ProviderView {
            name: p.name().to_string(),
            display_name: p.display_name().to_string(),
            login_url: format!("/api/auth/login/{}", p.name()),
        })
        .collect();
    Json(ProviderList { providers })
}

/// Starts a sign-in: binds a fresh `state`, `nonce` and PKCE verifier to this browser and
/// redirects (303) to the provider.
#[utoipa::path(get, path = "/api/auth/login/{provider}", tag = "auth", params(("provider" = String, Path)),
    responses((status = 303, description = "to the provider"), (status = 404, description = "unknown_provider"),
              (status = 503, description = "provider_unavailable")))]
#[get("/auth/login/<provider>")]
pub async fn login(
    state: &State<AppState>,
    client: ClientInfo,
    jar: &CookieJar<'_>,
    provider: &str,
) -> ApiResult<Redirect> {
    start(state, &client, jar, provider, None).await
}

/// Links a provider to the signed-in account: the same flow as a sign-in, and the identity the
/// provider names is linked to this account (409 `identity_in_use` when it is another's).
#[utoipa::path(get, path = "/api/auth/link/{provider}", tag = "auth", params(("provider" = String, Path)),
    responses((status = 303, description = "to the provider"), (status = 401), (status = 404, description = "unknown_provider")))]
#[get("/auth/link/<provider>")]
pub async fn link_start(
    state: &State<AppState>,
    client: ClientInfo,
    user: super::AuthUser,
    jar: &CookieJar<'_>,
    provider: &str,
) -> ApiResult<Redirect> {
    start(state, &client, jar, provider, Some(user.id)).await
}

/// Binds a fresh `state`, `nonce` and PKCE verifier to this browser (and, to link, to the
/// signed-in user) and redirects to the provider.
async fn start(
    state: &AppState,
    client: &ClientInfo,
    jar: &CookieJar<'_>,
    provider: &str,
    link_user: Option<String>,
) -> ApiResult<Redirect> {
    let p = state.plugins.oauth_provider(provider).ok_or_else(|| unknown_provider(provider))?;
    use crate::crypto::random_token;
    let (st, nonce, verifier, binding) = (random_token(32), random_token(32), random_token(48), random_token(32));
    let req = AuthorizationRequest {
        redirect_uri: redirect_uri(state, provider),
        state: st.clone(),
        nonce: nonce.clone(),
        pkce_challenge: {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
        },
    };
    let url = tokio::task::spawn_blocking(move || p.authorization_url(&req))
        .await
        .map_err(|e| ApiError::internal("oauth", e))?
        .map_err(oauth_error)?;
    let now = crate::time::now_micros();
    let (name, bh) = (provider.to_string(), binding_hash(state, &binding));
    let stored = state
        .db
        .q(move |c| {
            diesel::delete(ol::table.filter(ol::expires_at.lt(now))).execute(c)?;
            let pending: i64 = ol::table.count().get_result(c)?;
            if pending >= MAX_PENDING {
                return Ok(false);
            }
            diesel::insert_into(ol::table)
                .values((
                    ol::state.eq(&st),
                    ol::provider.eq(&name),
                    ol::nonce.eq(&nonce),
                    ol::pkce_verifier.eq(&verifier),
                    ol::binding_hash.eq(&bh),
                    ol::created_at.eq(now),
                    ol::expires_at.eq(now + LOGIN_TTL_SECS * 1_000_000),
                    ol::link_user_id.eq(&link_user),
                ))
                .execute(c)
                .map(|_| true)
        })
        .await?;
    if !stored {
        tracing::warn!(provider, "too many sign-ins in progress; refusing new ones for now");
        return Err(ApiError::unavailable("too many sign-ins are in progress; try again in a minute", 60));
    }
    jar.add(
        Cookie::build((COOKIE, binding))
            .http_only(true)
            // Lax, not Strict: the provider sends the browser back with a top-level GET.
            .same_site(SameSite::Lax)
            .secure(state.config.server.tls_enabled())
            .path(COOKIE_PATH)
            .max_age(rocket::time::Duration::seconds(LOGIN_TTL_SECS)),
    );
    state
        .audit
        .record(
            entry(crate::audit::AuditAction::AuthOidcStart, Outcome::Success, client)
                .details(json!({"provider": provider})),
        )
        .await;
    Ok(Redirect::to(url))
}

fn oauth_error(e: OAuthError) -> ApiError {
    match e {
        OAuthError::Refused(m) => ApiError::new(Status::Unauthorized, "oidc_failed", m),
        OAuthError::Unavailable(m) => ApiError::new(
            Status::ServiceUnavailable,
            "provider_unavailable",
            format!("the sign-in provider is unavailable: {m}"),
        ),
    }
}

fn invalid_state() -> ApiError {
    ApiError::new(
        Status::BadRequest,
        "invalid_state",
        "this sign-in is not valid in this browser or has expired; start the sign-in again",
    )
}

/// Where the provider sends the browser back: checks `state` against this browser, redeems the
/// code through the plugin, links or creates the account, and answers like password sign-in
/// (tokens, or `mfa_required`).
#[utoipa::path(get, path = "/api/auth/callback/{provider}", tag = "auth",
    params(("provider" = String, Path), ("code" = Option<String>, Query), ("state" = Option<String>, Query),
           ("error" = Option<String>, Query)),
    responses((status = 200, body = super::routes::TokenResponse), (status = 400, description = "invalid_state"),
              (status = 401, description = "oidc_failed or oidc_denied"), (status = 403, description = "registration_closed, email_not_verified or account_disabled"),
              (status = 503, description = "provider_unavailable")))]
#[get("/auth/callback/<provider>?<code>&<state>&<error>")]
#[allow(clippy::too_many_arguments)]
pub async fn callback(
    app: &State<AppState>,
    client: ClientInfo,
    jar: &CookieJar<'_>,
    provider: &str,
    code: Option<&str>,
    state: Option<&str>,
    error: Option<&str>,
) -> ApiResult<rocket::Either<Json<Value>, crate::web::Page>> {
    // Started from the web UI's sign-in page: finish as a browser session, errors as a page.
    if let Some(marker) = jar.get(crate::web::OAUTH_MARKER).map(|c| c.value().to_string()) {
        jar.remove(Cookie::build(crate::web::OAUTH_MARKER).path(COOKIE_PATH));
        let done = finish(app, &client, jar, provider, code, state, error).await;
        let page = crate::web::routes::oidc_finished(app, &client, jar, provider, done, &marker).await;
        return Ok(rocket::Either::Right(page));
    }
    match finish(app, &client, jar, provider, code, state, error).await? {
        Finished::Mfa(token) => Ok(rocket::Either::Left(Json(json!({"mfa_required": true, "mfa_token": token})))),
        Finished::Linked(user) => Ok(rocket::Either::Left(Json(
            json!({"linked": true, "provider": provider, "user": UserView::from(&*user)}),
        ))),
        Finished::Done(user, who) => {
            let tokens = start_session(app, &user, &client, false).await?;
            app.audit
                .record(
                    entry(crate::audit::AuditAction::AuthLogin, Outcome::Success, &client)
                        .actor(Some(user.id.clone()))
                        .details(who),
                )
                .await;
            Ok(rocket::Either::Left(Json(serde_json::to_value(tokens).expect("json"))))
        }
    }
}

/// How a provider's answer ended, once checked.
pub(crate) enum Finished {
    /// The account has MFA: the second step needs this challenge token.
    Mfa(String),
    /// Signed in: the caller starts the session and audits `auth.login` with these details.
    Done(Box<User>, Value),
    /// A signed-in user linked the provider to their account (audited and told here).
    Linked(Box<User>),
}

/// Checks the provider's answer (state bound to this browser, code exchange, ID token) and
/// links or creates the account; failures are audited here.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn finish(
    app: &AppState,
    client: &ClientInfo,
    jar: &CookieJar<'_>,
    provider: &str,
    code: Option<&str>,
    state: Option<&str>,
    error: Option<&str>,
) -> ApiResult<Finished> {
    let client = client.clone();
    let fail = |reason: &str, extra: Value| {
        let mut d = json!({"provider": provider, "method": "oidc", "reason": reason});
        if let (Some(d), Some(x)) = (d.as_object_mut(), extra.as_object()) {
            d.extend(x.clone());
        }
        entry(crate::audit::AuditAction::AuthLogin, Outcome::Failure, &client).details(d)
    };
    let p = app.plugins.oauth_provider(provider).ok_or_else(|| unknown_provider(provider))?;
    if let Some(err) = error {
        let err: String = err.chars().filter(|c| !c.is_control()).take(200).collect();
        app.audit.record(fail("provider_error", json!({"error": err}))).await;
        return Err(ApiError::new(
            Status::Unauthorized,
            "oidc_denied",
            format!("the provider did not sign you in: {err}"),
        ));
    }
    let (Some(code), Some(st)) = (code, state) else {
        return Err(ApiError::invalid("code", "the provider's answer has no code or state"));
    };
    let Some(binding) = jar.get(COOKIE).map(|c| c.value().to_string()) else {
        app.audit.record(fail("no_binding_cookie", json!({}))).await;
        return Err(invalid_state());
    };
    // Consume the sign-in only when it belongs to this browser: a forged or replayed state
    // changes nothing, and the real browser can still finish.
    let (st2, name, bh, now) =
        (st.to_string(), provider.to_string(), binding_hash(app, &binding), crate::time::now_micros());
    #[allow(clippy::type_complexity)]
    let row: Option<(String, String, Option<String>)> = app
        .db
        .q(move |c| {
            crate::db::write_transaction(c, |c| {
                let row: Option<(String, String, String, String, i64, Option<String>)> = ol::table
                    .find(&st2)
                    .select((
                        ol::provider,
                        ol::nonce,
                        ol::pkce_verifier,
                        ol::binding_hash,
                        ol::expires_at,
                        ol::link_user_id,
                    ))
                    .first(c)
                    .optional()?;
                let Some((prov, nonce, verifier, hash, expires, link_user)) = row else { return Ok(None) };
                let same_browser: bool = subtle::ConstantTimeEq::ct_eq(hash.as_bytes(), bh.as_bytes()).into();
                if prov != name || !same_browser || expires < now {
                    return Ok(None);
                }
                diesel::delete(ol::table.find(&st2)).execute(c)?;
                Ok::<_, diesel::result::Error>(Some((nonce, verifier, link_user)))
            })
        })
        .await?;
    let Some((nonce, verifier, link_user)) = row else {
        app.audit.record(fail("invalid_state", json!({}))).await;
        return Err(invalid_state());
    };
    jar.remove(Cookie::build(COOKIE).path(COOKIE_PATH));
    let req = CodeExchange {
        code: code.to_string(),
        redirect_uri: redirect_uri(app, provider),
        pkce_verifier: verifier,
        nonce,
    };
    let identity = match tokio::task::spawn_blocking(move || p.exchange(&req)).await {
        Ok(Ok(i)) => i,
        Ok(Err(e)) => {
            app.audit.record(fail("exchange_failed", json!({"error": e.to_string()}))).await;
            return Err(oauth_error(e));
        }
        Err(e) => return Err(ApiError::internal("oauth", e)),
    };
    let rule = LinkRule {
        registration_open: matches!(app.config.auth.registration, Registration::Open),
        domains: app.config.auth.oidc_link_domains.get(provider).cloned().unwrap_or_default(),
        session_user: link_user.clone(),
    };
    let (id2, name) = (identity.clone(), provider.to_string());
    let linked = app.db.run(move |c| link(c, &name, &id2, &rule)).await;
    let (user, how) = match linked {
        Ok(u) => u,
        Err(e) => {
            app.audit.record(fail(e.code, json!({"issuer": identity.issuer, "subject": identity.subject}))).await;
            return Err(e);
        }
    };
    let who = json!({"provider": provider, "method": "oidc", "issuer": identity.issuer, "subject": identity.subject, "account": how});
    if how == "linked_by_session" || how == "linked_by_domain" {
        app.audit
            .record(
                entry(crate::audit::AuditAction::AuthOidcLink, Outcome::Success, &client)
                    .actor(Some(user.id.clone()))
                    .target("user", user.id.clone())
                    .details(who.clone()),
            )
            .await;
        if let Err(e) = crate::notify::provider_linked(app, &user.id, provider).await {
            tracing::error!(error = %e, "provider-link notice not stored");
        }
    }
    if link_user.is_some() {
        return Ok(Finished::Linked(Box::new(user)));
    }
    if user.disabled {
        app.audit
            .record(
                entry(crate::audit::AuditAction::AuthLogin, Outcome::Denied, &client)
                    .actor(Some(user.id.clone()))
                    .details(who),
            )
            .await;
        return Err(super::routes::account_refused(&user));
    }
    if user.mfa_enabled {
        let (master, uid) = (app.keys.hash_key, user.id.clone());
        let token = app.db.q(move |c| mfa::new_challenge(c, &master, &uid)).await?;
        app.audit
            .record(
                entry(crate::audit::AuditAction::AuthLogin, Outcome::Success, &client)
                    .actor(Some(user.id.clone()))
                    .details(json!({
                        "provider": provider, "method": "oidc", "step": "provider", "mfa_required": true
                    })),
            )
            .await;
        return Ok(Finished::Mfa(token));
    }
    Ok(Finished::Done(Box::new(user), who))
}

/// Who may be linked to an identity seen for the first time.
#[derive(Debug, Clone)]
pub(crate) struct LinkRule {
    pub registration_open: bool,
    /// E-mail domains whose password accounts this provider may link (`auth.oidc_link_domains`).
    pub domains: Vec<String>,
    /// The signed-in user who started a link (`/api/auth/link/{provider}`).
    pub session_user: Option<String>,
}

fn link_required(provider: &str) -> ApiError {
    ApiError::new(
        Status::Conflict,
        "link_required",
        format!("an account with this e-mail already exists; sign in to it and link {provider} from your account page"),
    )
}

/// Whether an existing account may be linked by its verified e-mail without its owner's
/// session: never an administrator's; one with a password only on an allowed domain.
pub(crate) fn may_link_by_email(user: &User, email: &str, domains: &[String]) -> Option<&'static str> {
    if user.is_admin() {
        return None;
    }
    if user.password_hash.is_none() {
        return Some("linked_by_email");
    }
    let domain = email.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase())?;
    domains.iter().any(|d| d.trim().trim_start_matches('@').eq_ignore_ascii_case(&domain)).then_some("linked_by_domain")
}

/// The account for `id`: already linked, linked now (to the signed-in user who asked, or by
/// verified e-mail under [`may_link_by_email`]), or created.
fn link(
    c: &mut crate::db::DbConnection,
    provider: &str,
    id: &OAuthIdentity,
    rule: &LinkRule,
) -> ApiResult<(User, &'static str)> {
    let now = crate::time::now_micros();
    crate::db::write_transaction(c, |c| {
        let existing: Option<String> =
            oi::table.find((&id.issuer, &id.subject)).select(oi::user_id).first(c).optional()?;
        if let Some(uid) = existing {
            if rule.session_user.as_ref().is_some_and(|s| *s != uid) {
                return Err(ApiError::new(
                    Status::Conflict,
                    "identity_in_use",
                    format!("this {provider} identity is already linked to another account"),
                ));
            }
            diesel::update(oi::table.find((&id.issuer, &id.subject))).set(oi::last_login_at.eq(now)).execute(c)?;
            return Ok((users::by_id(c, &uid)?, "linked"));
        }
        let (user, how) = if let Some(uid) = &rule.session_user {
            (users::by_id(c, uid)?, "linked_by_session")
        } else {
            let email = id.email.as_deref().map(str::trim).filter(|e| !e.is_empty());
            let Some(email) = email.filter(|_| id.email_verified) else {
                return Err(ApiError::new(
                    Status::Forbidden,
                    "email_not_verified",
                    "the provider did not vouch for an e-mail address, so the account cannot be matched",
                ));
            };
            match users::by_email(c, email)? {
                Some(u) => match may_link_by_email(&u, email, &rule.domains) {
                    Some(how) => (u, how),
                    None => return Err(link_required(provider)),
                },
                None if rule.registration_open => {
                    let display = id
                        .name
                        .as_deref()
                        .map(|n| n.chars().filter(|c| !c.is_control()).take(100).collect::<String>())
                        .filter(|n| !n.trim().is_empty())
                        .unwrap_or_else(|| email.split('@').next().unwrap_or(email).chars().take(100).collect());
                    (users::create(c, email, &display, None, Role::User)?, "created")
                }
                None => return Err(ApiError::new(
                    Status::Forbidden,
                    "registration_closed",
                    "no account uses this e-mail and registration is not open; ask an administrator for an invitation",
                )),
            }
        };
        diesel::insert_into(oi::table)
            .values((
                oi::issuer.eq(&id.issuer),
                oi::subject.eq(&id.subject),
                oi::user_id.eq(&user.id),
                oi::provider.eq(provider),
                oi::created_at.eq(now),
                oi::last_login_at.eq(now),
            ))
            .execute(c)?;
        Ok((user, how))
    })
}
