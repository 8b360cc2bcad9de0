//! The web UI's pages and sign-in forms. Pages behind the sign-in are shells: the server renders
//! the layout, the user and the CSRF token; the page's script fills it from the JSON API and
//! keeps it live over `/ws`.

use askama::Template;
use rocket::form::{Form, FromForm};
use rocket::http::{ContentType, Cookie, CookieJar, Status};
use rocket::{get, post, Route, State};
use serde_json::json;

use super::{flow_cookie, pre_ok, pre_token, session_cookie, Page, Web, COOKIE, MFA_COOKIE, OAUTH_MARKER, PRE_COOKIE};
use crate::audit::Outcome;
use crate::auth::browser::{csrf_ok, BrowserSession};
use crate::auth::oauth::Finished;
use crate::auth::routes::{entry, mfa_step, password_step, register_user, PasswordStep, RegisterRequest};
use crate::auth::{sessions, users};
use crate::config::Registration;
use crate::http::{ApiResult, ClientInfo};
use crate::AppState;

pub fn routes() -> Vec<Route> {
    rocket::routes![
        home,
        asset,
        login_page,
        login,
        mfa_page,
        mfa_form,
        reverify_page,
        reverify_form,
        oidc_start,
        register_page,
        register,
        logout,
        files_page,
        chat_page,
        meetings_page,
        account_page,
        account_link,
        file_link,
        meeting_link,
    ]
}

/// The scripts and styles, embedded in the binary.
const ASSETS: &[(&str, ContentType, &str)] = &[
    ("base.css", ContentType::CSS, seccollab_admin_ui::CSS),
    ("web.css", ContentType::CSS, include_str!("../../assets/web/web.css")),
    ("app.js", ContentType::JavaScript, include_str!("../../assets/web/app.js")),
    ("files.js", ContentType::JavaScript, include_str!("../../assets/web/files.js")),
    ("chat.js", ContentType::JavaScript, include_str!("../../assets/web/chat.js")),
    ("meetings.js", ContentType::JavaScript, include_str!("../../assets/web/meetings.js")),
    ("account.js", ContentType::JavaScript, include_str!("../../assets/web/account.js")),
];

#[get("/assets/<name>")]
pub fn asset(name: &str) -> Option<(ContentType, &'static str)> {
    ASSETS.iter().find(|(n, _, _)| *n == name).map(|(_, t, body)| (t.clone(), *body))
}

/// An OpenID Connect provider button.
#[derive(Debug, Clone)]
pub struct Provider {
    /// `/login/oidc/{name}`, the name percent-encoded.
    pub href: String,
    pub display_name: String,
}

#[derive(Template, Debug)]
#[template(path = "web/login.html")]
pub struct LoginPage {
    pub csrf: String,
    /// Where to go after signing in (a checked local path, or empty).
    pub next: String,
    pub email: String,
    pub error: Option<String>,
    pub notice: Option<String>,
    pub providers: Vec<Provider>,
    pub can_register: bool,
}

#[derive(Template, Debug)]
#[template(path = "web/mfa.html")]
pub struct MfaPage {
    pub csrf: String,
    pub next: String,
    pub mfa_token: String,
    pub error: Option<String>,
}

#[derive(Template, Debug)]
#[template(path = "web/reverify.html")]
pub struct ReverifyPage {
    /// The session's CSRF token (the user is signed in).
    pub csrf: String,
    pub next: String,
    pub email: String,
    /// Ask for the second factor (MFA on) or the password.
    pub mfa: bool,
    pub error: Option<String>,
}

#[derive(Template, Debug)]
#[template(path = "web/register.html")]
pub struct RegisterPage {
    pub csrf: String,
    pub email: String,
    pub display_name: String,
    pub invite_code: String,
    pub needs_invite: bool,
    pub error: Option<String>,
}

/// After an OpenID Connect sign-in: a same-site navigation onwards (a redirect straight from
/// the provider's cross-site hop would not carry the SameSite=Strict session cookie).
#[derive(Template, Debug)]
#[template(path = "web/continue.html")]
pub struct ContinuePage {
    pub to: String,
}

/// What every signed-in page shows in its header.
#[derive(Debug, Clone)]
pub struct Nav {
    pub user_id: String,
    pub display_name: String,
    pub email: String,
    pub csrf: String,
    pub active: &'static str,
}

impl Nav {
    pub fn is(&self, section: &str) -> bool {
        self.active == section
    }
}

/// The signed-in pages: the layout and the page's script, which fills `main`.
#[derive(Template, Debug)]
#[template(path = "web/app.html")]
pub struct AppPage {
    pub nav: Nav,
    pub title: &'static str,
    pub script: &'static str,
    /// The user's last event `seq` when the page was rendered.
    pub event_seq: i64,
}

/// A place to go after sign-in: a path of this site only (`/x`, never `//host` or a scheme).
pub fn safe_next(next: Option<&str>) -> Option<String> {
    let n = next?.trim();
    let ok = n.starts_with('/')
        && !n.starts_with("//")
        && !n.contains('\\')
        && n.len() <= 512
        && !n.chars().any(|c| c.is_control())
        && !n.starts_with("/login")
        && !n.starts_with("/api/");
    ok.then(|| n.to_string())
}

fn render(status: Status, t: &impl Template) -> Page {
    match t.render() {
        Ok(html) => Page::Html(status, html),
        Err(e) => {
            tracing::error!(error = %e, "web page failed to render");
            Page::Html(
                Status::InternalServerError,
                "<!doctype html><title>Error</title><p>The page failed to render.</p>".into(),
            )
        }
    }
}

fn providers(state: &AppState) -> Vec<Provider> {
    state
        .plugins
        .oauth
        .iter()
        .map(|p| Provider {
            href: format!("/login/oidc/{}", crate::http::percent_encode(p.name())),
            display_name: p.display_name().to_string(),
        })
        .collect()
}

fn login_view(
    state: &AppState,
    csrf: String,
    email: String,
    error: Option<String>,
    notice: Option<String>,
) -> LoginPage {
    LoginPage {
        csrf,
        next: String::new(),
        email,
        error,
        notice,
        providers: providers(state),
        can_register: !matches!(state.config.auth.registration, Registration::Closed),
    }
}

fn bad_csrf(state: &AppState, jar: &CookieJar<'_>) -> Page {
    let csrf = pre_token(state, jar);
    render(
        Status::Forbidden,
        &login_view(
            state,
            csrf,
            String::new(),
            Some("The form expired (its security token is missing or wrong). Try again.".into()),
            None,
        ),
    )
}

#[get("/")]
pub fn home(who: Web) -> Page {
    match who {
        Web::SignedIn(_) => Page::Redirect("/files".into()),
        Web::SignedOut => Page::Redirect("/login".into()),
    }
}

#[get("/login?<next>")]
pub fn login_page(state: &State<AppState>, who: Web, jar: &CookieJar<'_>, next: Option<&str>) -> Page {
    let next = safe_next(next);
    if matches!(who, Web::SignedIn(_)) {
        return Page::Redirect(next.unwrap_or_else(|| "/files".into()));
    }
    let csrf = pre_token(state, jar);
    let mut page = login_view(state, csrf, String::new(), None, None);
    if let Some(n) = next {
        page.providers.iter_mut().for_each(|p| p.href = format!("{}?next={}", p.href, crate::http::percent_encode(&n)));
        page.next = n;
    }
    render(Status::Ok, &page)
}

#[derive(Debug, FromForm)]
pub struct LoginForm {
    csrf: String,
    next: Option<String>,
    email: String,
    password: String,
}

/// Opens a web session for `user` (cookie set in `jar`) and audits the sign-in. `mfa_passed`:
/// the sign-in passed a second factor.
async fn open_session(
    state: &AppState,
    client: &ClientInfo,
    jar: &CookieJar<'_>,
    user: &users::User,
    details: serde_json::Value,
    mfa_passed: bool,
) -> ApiResult<()> {
    let ttl = state.config.web.absolute_timeout_secs;
    let token = crate::auth::browser::open(state, client, &user.id, super::KIND, ttl, mfa_passed).await?;
    jar.add(session_cookie(state, token));
    jar.remove(Cookie::build(PRE_COOKIE).path("/"));
    state
        .audit
        .record(
            entry(crate::audit::AuditAction::AuthLogin, Outcome::Success, client)
                .actor(Some(user.id.clone()))
                .details(details),
        )
        .await;
    Ok(())
}

#[post("/login", data = "<form>")]
pub async fn login(state: &State<AppState>, client: ClientInfo, jar: &CookieJar<'_>, form: Form<LoginForm>) -> Page {
    let f = form.into_inner();
    if !pre_ok(jar, &f.csrf) {
        return bad_csrf(state, jar);
    }
    let csrf = pre_token(state, jar);
    let next = safe_next(f.next.as_deref());
    let again = |status: Status, msg: String| {
        let mut page = login_view(state, csrf.clone(), f.email.clone(), Some(msg), None);
        page.next = next.clone().unwrap_or_default();
        render(status, &page)
    };
    match password_step(state, &client, f.email.clone(), f.password).await {
        Ok(PasswordStep::Mfa { mfa_token, .. }) => render(
            Status::Ok,
            &MfaPage { csrf: csrf.clone(), next: next.clone().unwrap_or_default(), mfa_token, error: None },
        ),
        Ok(PasswordStep::Done(user)) => {
            let details = json!({"email": user.email, "method": "password", "via": "web"});
            match open_session(state, &client, jar, &user, details, false).await {
                Ok(()) => Page::Redirect(next.clone().unwrap_or_else(|| "/files".into())),
                Err(e) => again(e.status, e.message),
            }
        }
        Err(e) => again(e.status, e.message),
    }
}

#[derive(Debug, FromForm)]
pub struct CodeForm {
    csrf: String,
    next: Option<String>,
    mfa_token: String,
    code: String,
}

/// The code page of an OpenID Connect sign-in that needs the second factor.
#[get("/login/mfa?<next>")]
pub fn mfa_page(state: &State<AppState>, jar: &CookieJar<'_>, next: Option<&str>) -> Page {
    let Some(mfa_token) = jar.get(MFA_COOKIE).map(|c| c.value().to_string()) else {
        return Page::Redirect("/login".into());
    };
    jar.remove(Cookie::build(MFA_COOKIE).path("/login"));
    let csrf = pre_token(state, jar);
    render(Status::Ok, &MfaPage { csrf, next: safe_next(next).unwrap_or_default(), mfa_token, error: None })
}

#[post("/login/mfa", data = "<form>")]
pub async fn mfa_form(state: &State<AppState>, client: ClientInfo, jar: &CookieJar<'_>, form: Form<CodeForm>) -> Page {
    let f = form.into_inner();
    if !pre_ok(jar, &f.csrf) {
        return bad_csrf(state, jar);
    }
    let csrf = pre_token(state, jar);
    let next = safe_next(f.next.as_deref());
    match mfa_step(state, &client, f.mfa_token.clone(), f.code).await {
        Ok((user, method)) => {
            let details = json!({"email": user.email, "method": method, "via": "web", "step": "mfa"});
            match open_session(state, &client, jar, &user, details, true).await {
                Ok(()) => Page::Redirect(next.unwrap_or_else(|| "/files".into())),
                Err(e) => render(e.status, &login_view(state, csrf, String::new(), Some(e.message), None)),
            }
        }
        // A wrong code may be retried; an expired or used-up challenge means starting over.
        Err(e) if e.code == "invalid_mfa_code" => render(
            e.status,
            &MfaPage { csrf, next: next.unwrap_or_default(), mfa_token: f.mfa_token, error: Some(e.message) },
        ),
        Err(e) => render(e.status, &login_view(state, csrf, String::new(), Some(e.message), None)),
    }
}

#[derive(Debug, FromForm)]
pub struct ReverifyForm {
    csrf: String,
    next: Option<String>,
    code: Option<String>,
    password: Option<String>,
}

/// The page a session held by `force_mfa` lands on: confirm the second factor (or the
/// password without MFA) to go on.
#[get("/login/reverify?<next>")]
pub async fn reverify_page(state: &State<AppState>, who: Web, next: Option<&str>) -> Page {
    let next = safe_next(next);
    let Web::SignedIn(s) = who else {
        return Page::Redirect("/login".into());
    };
    if !s.reverify {
        return Page::Redirect(next.unwrap_or_else(|| "/files".into()));
    }
    let uid = s.user_id.clone();
    let mfa = state.db.q(move |c| users::by_id(c, &uid).map(|u| u.mfa_enabled).or(Ok(false))).await.unwrap_or(false);
    render(Status::Ok, &ReverifyPage { csrf: s.csrf, next: next.unwrap_or_default(), email: s.email, mfa, error: None })
}

#[post("/login/reverify", data = "<form>")]
pub async fn reverify_form(state: &State<AppState>, client: ClientInfo, who: Web, form: Form<ReverifyForm>) -> Page {
    let f = form.into_inner();
    let Web::SignedIn(s) = who else {
        return Page::Redirect("/login".into());
    };
    let next = safe_next(f.next.as_deref());
    if !csrf_ok(&s.csrf, &f.csrf) {
        return Page::Redirect("/login/reverify".into());
    }
    let uid = s.user_id.clone();
    let mfa = state.db.q(move |c| users::by_id(c, &uid).map(|u| u.mfa_enabled).or(Ok(false))).await.unwrap_or(false);
    match crate::auth::routes::reverify_session(state, &client, &s.user_id, &s.sid, f.code, f.password).await {
        Ok(()) => Page::Redirect(next.unwrap_or_else(|| "/files".into())),
        Err(e) => render(
            e.status,
            &ReverifyPage { csrf: s.csrf, next: next.unwrap_or_default(), email: s.email, mfa, error: Some(e.message) },
        ),
    }
}

/// Starts an OpenID Connect sign-in for the web UI: marks the browser, then hands over to the
/// API's `/api/auth/login/{provider}`.
#[get("/login/oidc/<provider>?<next>")]
pub fn oidc_start(state: &State<AppState>, jar: &CookieJar<'_>, provider: &str, next: Option<&str>) -> Page {
    if state.plugins.oauth_provider(provider).is_none() {
        let csrf = pre_token(state, jar);
        return render(
            Status::NotFound,
            &login_view(
                state,
                csrf,
                String::new(),
                Some(format!("There is no sign-in provider named {provider:?}.")),
                None,
            ),
        );
    }
    // The marker carries where to go afterwards (a checked local path; "/" when none).
    let to = safe_next(next).unwrap_or_else(|| "/".into());
    jar.add(flow_cookie(state, OAUTH_MARKER, crate::http::percent_encode(&to), "/api/auth/callback"));
    Page::Redirect(format!("/api/auth/login/{}", crate::http::percent_encode(provider)))
}

/// The end of an OpenID Connect sign-in started from the web UI (called by the API callback).
pub(crate) async fn oidc_finished(
    state: &AppState,
    client: &ClientInfo,
    jar: &CookieJar<'_>,
    provider: &str,
    done: ApiResult<Finished>,
    marker: &str,
) -> Page {
    let next = percent_decode(marker).and_then(|m| safe_next(Some(&m))).filter(|n| n != "/");
    match done {
        Ok(Finished::Done(user, mut who)) => {
            if let Some(o) = who.as_object_mut() {
                o.insert("via".into(), json!("web"));
            }
            match open_session(state, client, jar, &user, who, false).await {
                Ok(()) => render(Status::Ok, &ContinuePage { to: next.unwrap_or_else(|| "/files".into()) }),
                Err(e) => {
                    let csrf = pre_token(state, jar);
                    render(e.status, &login_view(state, csrf, String::new(), Some(e.message), None))
                }
            }
        }
        Ok(Finished::Linked(_)) => render(Status::Ok, &ContinuePage { to: "/account?linked=1".into() }),
        Ok(Finished::Mfa(token)) => {
            jar.add(flow_cookie(state, MFA_COOKIE, token, "/login"));
            let to = match next {
                Some(n) => format!("/login/mfa?next={}", crate::http::percent_encode(&n)),
                None => "/login/mfa".into(),
            };
            render(Status::Ok, &ContinuePage { to })
        }
        Err(e) => {
            let csrf = pre_token(state, jar);
            let msg = format!("Sign-in with {provider} failed: {}", e.message);
            render(e.status, &login_view(state, csrf, String::new(), Some(msg), None))
        }
    }
}

#[get("/register?<invite>")]
pub fn register_page(state: &State<AppState>, jar: &CookieJar<'_>, invite: Option<&str>) -> Page {
    let csrf = pre_token(state, jar);
    let needs_invite = matches!(state.config.auth.registration, Registration::Invite);
    if matches!(state.config.auth.registration, Registration::Closed) {
        return render(
            Status::Forbidden,
            &login_view(
                state,
                csrf,
                String::new(),
                Some("Registration is closed; ask an administrator for an account.".into()),
                None,
            ),
        );
    }
    let invite_code: String = invite
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(200)
        .collect();
    render(
        Status::Ok,
        &RegisterPage {
            csrf,
            email: String::new(),
            display_name: String::new(),
            invite_code,
            needs_invite,
            error: None,
        },
    )
}

#[derive(Debug, FromForm)]
pub struct RegisterForm {
    csrf: String,
    email: String,
    display_name: String,
    password: String,
    password_again: String,
    invite_code: Option<String>,
}

#[post("/register", data = "<form>")]
pub async fn register(
    state: &State<AppState>,
    client: ClientInfo,
    jar: &CookieJar<'_>,
    form: Form<RegisterForm>,
) -> Page {
    let f = form.into_inner();
    if !pre_ok(jar, &f.csrf) {
        return bad_csrf(state, jar);
    }
    let csrf = pre_token(state, jar);
    let needs_invite = matches!(state.config.auth.registration, Registration::Invite);
    let again = |status: Status, msg: String| {
        render(
            status,
            &RegisterPage {
                csrf: csrf.clone(),
                email: f.email.clone(),
                display_name: f.display_name.clone(),
                invite_code: f.invite_code.clone().unwrap_or_default(),
                needs_invite,
                error: Some(msg),
            },
        )
    };
    if f.password != f.password_again {
        return again(Status::BadRequest, "The two passwords differ.".into());
    }
    let req = RegisterRequest {
        email: f.email.clone(),
        password: f.password.clone(),
        display_name: f.display_name.clone(),
        invite_code: f.invite_code.clone().filter(|c| !c.trim().is_empty()),
    };
    match register_user(state, &client, req).await {
        Ok(user) => render(
            Status::Ok,
            &login_view(state, csrf.clone(), user.email, None, Some("Your account is ready. Sign in.".into())),
        ),
        Err(e) => again(e.status, e.message),
    }
}

#[derive(Debug, FromForm)]
pub struct CsrfForm {
    csrf: String,
}

#[post("/logout", data = "<form>")]
pub async fn logout(
    state: &State<AppState>,
    client: ClientInfo,
    who: Web,
    jar: &CookieJar<'_>,
    form: Form<CsrfForm>,
) -> Page {
    let Web::SignedIn(s) = who else { return Page::Redirect("/login".into()) };
    if !csrf_ok(&s.csrf, &form.csrf) {
        return Page::Redirect("/files".into());
    }
    let sid = s.sid.clone();
    let _ = state.db.q(move |c| sessions::revoke(c, &sid, "logout")).await;
    state.sessions_revoked(std::slice::from_ref(&s.sid));
    jar.remove(Cookie::build(COOKIE).path("/"));
    state
        .audit
        .record(entry(crate::audit::AuditAction::AuthLogout, Outcome::Success, &client).actor(Some(s.user_id.clone())))
        .await;
    Page::Redirect("/login".into())
}

/// Percent-decoding of a cookie value this module encoded.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

async fn app_page(
    state: &AppState,
    who: Web,
    here: &str,
    active: &'static str,
    title: &'static str,
    script: &'static str,
) -> Page {
    let Web::SignedIn(s) = who else {
        return Page::Redirect(format!("/login?next={}", crate::http::percent_encode(here)));
    };
    if s.reverify {
        return Page::Redirect(format!("/login/reverify?next={}", crate::http::percent_encode(here)));
    }
    // The page's script connects with `/ws?after=<this>`: whatever happens between this render
    // and the connection is replayed, not lost.
    let uid = s.user_id.clone();
    let event_seq = state.db.q(move |c| crate::realtime::store::last_seq(c, &uid)).await.unwrap_or(0);
    let BrowserSession { user_id, display_name, email, csrf, .. } = s;
    render(Status::Ok, &AppPage { nav: Nav { user_id, display_name, email, csrf, active }, title, script, event_seq })
}

#[get("/files")]
pub async fn files_page(state: &State<AppState>, who: Web) -> Page {
    app_page(state, who, "/files", "files", "Files", "files.js").await
}

#[get("/chat")]
pub async fn chat_page(state: &State<AppState>, who: Web) -> Page {
    app_page(state, who, "/chat", "chat", "Chat", "chat.js").await
}

#[get("/meetings")]
pub async fn meetings_page(state: &State<AppState>, who: Web) -> Page {
    app_page(state, who, "/meetings", "meetings", "Meetings", "meetings.js").await
}

#[get("/account")]
pub async fn account_page(state: &State<AppState>, who: Web) -> Page {
    app_page(state, who, "/account", "account", "Account", "account.js").await
}

/// "Link" on the account page: the provider's sign-in, finished by linking the identity to
/// this account (then back to the account page).
#[get("/account/link/<provider>")]
pub async fn account_link(state: &State<AppState>, jar: &CookieJar<'_>, who: Web, provider: &str) -> Page {
    let Web::SignedIn(_) = who else {
        return Page::Redirect("/login?next=/account".into());
    };
    if state.plugins.oauth_provider(provider).is_none() {
        return Page::Redirect("/account".into());
    }
    jar.add(flow_cookie(state, OAUTH_MARKER, crate::http::percent_encode("/account"), "/api/auth/callback"));
    Page::Redirect(format!("/api/auth/link/{}", crate::http::percent_encode(provider)))
}

/// The links in e-mails: `/files/{id}` and `/meetings/{id}` open the page on that item (the
/// script reads the id from the address).
#[get("/files/<id>")]
pub async fn file_link(state: &State<AppState>, who: Web, id: &str) -> Page {
    app_page(state, who, &format!("/files/{}", crate::http::percent_encode(id)), "files", "Files", "files.js").await
}

#[get("/meetings/<id>")]
pub async fn meeting_link(state: &State<AppState>, who: Web, id: &str) -> Page {
    let here = format!("/meetings/{}", crate::http::percent_encode(id));
    app_page(state, who, &here, "meetings", "Meetings", "meetings.js").await
}
