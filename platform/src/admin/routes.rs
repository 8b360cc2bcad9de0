//! `/admin` pages and forms. Pages work without JavaScript; every POST checks the CSRF token.
//! Acts call the same functions as the JSON API (`/api/admin/...`), so they are checked and
//! audited alike.

use askama::Template;
use diesel::dsl::count_star;
use diesel::prelude::*;
use rocket::form::{Form, FromForm};
use rocket::http::{ContentType, CookieJar, Header, Status};
use rocket::response::{self, Responder};
use rocket::{get, post, Request, Response, Route, State};
use seccollab_admin_ui as ui;
use serde_json::{json, Value};

use super::{csrf_ok, pre_token, session_cookie, Console, ConsoleSession, COOKIE, PRE_COOKIE};
use crate::audit::Outcome;
use crate::auth::routes::{challenge_owner, entry, mfa_step, password_step, PasswordStep};
use crate::auth::{mfa, sessions, users, AdminUser, AuthUser};
use crate::db::schema::{audit_log as al, files, security_alerts as sa, sessions as st, users as ut};
use crate::http::{ApiError, ClientInfo};
use crate::AppState;

pub fn routes() -> Vec<Route> {
    rocket::routes![
        css,
        js,
        live,
        login_page,
        login,
        mfa_form,
        enrol,
        logout,
        dashboard,
        users_page,
        user_create,
        user_invite,
        user_page,
        user_act,
        session_revoke,
        files_page,
        file_act,
        audit_page,
        audit_export,
        alerts_page,
        alert_ack,
        block_lift,
        plugins_page,
        system_page,
        reload_rules,
    ]
}

/// An HTML page or a redirect, never cached.
#[derive(Debug)]
pub enum Page {
    Html(Status, String),
    /// 303 See Other to a path under `/admin`.
    Redirect(String),
}

impl<'r> Responder<'r, 'static> for Page {
    fn respond_to(self, _: &'r Request<'_>) -> response::Result<'static> {
        let mut r = Response::build();
        r.raw_header("Cache-Control", "no-store");
        match self {
            Page::Html(status, body) => {
                r.status(status).header(ContentType::HTML).sized_body(body.len(), std::io::Cursor::new(body));
            }
            Page::Redirect(to) => {
                r.status(Status::SeeOther).header(Header::new("Location", to));
            }
        }
        r.ok()
    }
}

fn render(status: Status, t: &impl Template) -> Page {
    match t.render() {
        Ok(html) => Page::Html(status, html),
        Err(e) => {
            tracing::error!(error = %e, "admin page failed to render");
            Page::Html(
                Status::InternalServerError,
                "<!doctype html><title>Error</title><p>The page failed to render.</p>".into(),
            )
        }
    }
}

fn error_page(status: Status, title: &str, message: &str) -> Page {
    render(status, &ui::ErrorPage { status: status.code, title: title.into(), message: message.into() })
}

/// The answer for someone who may not see a console page: sign in, or 403.
fn refuse(who: &Console) -> Page {
    match who {
        Console::NotAdmin => {
            error_page(Status::Forbidden, "Administrators only", "This console is for administrators.")
        }
        _ => Page::Redirect("/admin/login".into()),
    }
}

/// POSTs without a console session or with a wrong CSRF token are refused with 403 and no effect.
fn refuse_post(who: &Console) -> Page {
    match who {
        Console::NotAdmin => {
            error_page(Status::Forbidden, "Administrators only", "This console is for administrators.")
        }
        _ => error_page(Status::Forbidden, "Not signed in", "Your console session ended; sign in again."),
    }
}

fn bad_csrf() -> Page {
    error_page(
        Status::Forbidden,
        "Form expired",
        "The form's security token is missing or wrong. Reload the page and try again.",
    )
}

fn nav(s: &ConsoleSession, active: &'static str) -> ui::Nav {
    ui::Nav { admin: s.display_name.clone(), csrf: s.csrf.clone(), active }
}

/// The admin as the API's admin functions take it.
fn as_admin(s: &ConsoleSession) -> AdminUser {
    AdminUser(AuthUser {
        id: s.user_id.clone(),
        sid: s.sid.clone(),
        role: s.role.clone(),
        reverify: false,
        mfa_passed: s.mfa_passed,
    })
}

fn api_message(e: &ApiError) -> String {
    e.message.clone()
}

#[get("/assets/admin.css")]
pub fn css() -> (ContentType, &'static str) {
    (ContentType::CSS, ui::CSS)
}

#[get("/assets/admin.js")]
pub fn js() -> (ContentType, &'static str) {
    (ContentType::JavaScript, ui::JS)
}

/// The console's WebSocket (console cookie, admins only): the pages' script shows
/// `security_alert` events as they happen. The same connection as `/ws` otherwise, except that
/// it only listens: `send_message` is refused here.
#[get("/ws")]
pub async fn live(
    state: &State<AppState>,
    origin: crate::web::SameOrigin,
    who: Console,
    client: crate::http::client::ClientInfo,
    socket: rocket_ws::WebSocket,
    shutdown: rocket::Shutdown,
) -> Result<rocket_ws::Channel<'static>, Status> {
    // The console cookie is SameSite=Strict; the origin check also stops a cross-site page
    // where a browser would send it anyway.
    let Console::Admin(s) = who else { return Err(Status::Forbidden) };
    if !origin.0 {
        return Err(Status::Forbidden);
    }
    let cookie = Some((super::KIND, state.config.admin.idle_timeout_secs));
    let peer = crate::realtime::ws::Peer { client, may_send: false, send_until: None, cookie };
    Ok(crate::realtime::ws::open_channel(state.inner().clone(), s.user_id, s.sid, socket, None, shutdown, peer).await)
}

// ---------- sign-in ----------

#[get("/login")]
pub fn login_page(state: &State<AppState>, who: Console, jar: &CookieJar<'_>) -> Page {
    if matches!(who, Console::Admin(_)) {
        return Page::Redirect("/admin".into());
    }
    let csrf = pre_token(state, jar);
    render(Status::Ok, &ui::LoginPage { csrf, email: String::new(), error: None })
}

#[derive(Debug, FromForm)]
pub struct LoginForm {
    csrf: String,
    email: String,
    password: String,
}

fn pre_ok(jar: &CookieJar<'_>, given: &str) -> bool {
    jar.get(PRE_COOKIE).is_some_and(|c| csrf_ok(c.value(), given))
}

#[post("/login", data = "<form>")]
pub async fn login(state: &State<AppState>, client: ClientInfo, jar: &CookieJar<'_>, form: Form<LoginForm>) -> Page {
    let f = form.into_inner();
    if !pre_ok(jar, &f.csrf) {
        return bad_csrf();
    }
    let csrf = pre_token(state, jar);
    let again = |status: Status, msg: String| {
        render(status, &ui::LoginPage { csrf: csrf.clone(), email: f.email.clone(), error: Some(msg) })
    };
    let step = match password_step(state, &client, f.email.clone(), f.password).await {
        Ok(s) => s,
        Err(e) => return again(e.status, api_message(&e)),
    };
    let (user, mfa_token) = match step {
        PasswordStep::Mfa { mfa_token, user } => (user, Some(mfa_token)),
        PasswordStep::Done(user) => (user, None),
    };
    if !user.is_admin() {
        state
            .audit
            .record(
                entry(crate::audit::AuditAction::AdminConsoleLogin, Outcome::Denied, &client)
                    .actor(Some(user.id.clone()))
                    .details(json!({"reason": "not_admin"})),
            )
            .await;
        return error_page(Status::Forbidden, "Administrators only", "This console is for administrators.");
    }
    if let Some(mfa_token) = mfa_token {
        return render(Status::Ok, &ui::MfaPage { csrf, mfa_token, error: None });
    }
    // An admin without a second factor enrols one first.
    let secret = mfa::new_secret();
    let sealed = mfa::seal_secret(&state.keys, &user.id, &secret);
    let (uid, master) = (user.id.clone(), state.keys.hash_key);
    let token = state
        .db
        .run(move |c| {
            users::set_pending_totp(c, &uid, Some(sealed)).map_err(ApiError::from)?;
            mfa::new_challenge(c, &master, &uid).map_err(ApiError::from)
        })
        .await;
    let Ok(mfa_token) = token else {
        return error_page(Status::ServiceUnavailable, "Try again", "The sign-in could not be started; try again.");
    };
    state
        .audit
        .record(entry(crate::audit::AuditAction::AuthMfaSetup, Outcome::Success, &client).actor(Some(user.id.clone())))
        .await;
    let uri = mfa::otpauth_uri(&secret, &user.email);
    render(
        Status::Ok,
        &ui::EnrolPage { csrf, mfa_token, secret: mfa::base32(&secret), qr_svg: mfa::qr_svg(&uri), error: None },
    )
}

#[derive(Debug, FromForm)]
pub struct CodeForm {
    csrf: String,
    mfa_token: String,
    code: String,
}

/// Starts the console session of `user` and answers `page` with its cookie set.
async fn open_session(
    state: &AppState,
    client: &ClientInfo,
    jar: &CookieJar<'_>,
    user: &users::User,
) -> Result<(), ApiError> {
    let ttl = state.config.admin.absolute_timeout_secs;
    let token = crate::auth::browser::open(state, client, &user.id, super::KIND, ttl, true).await?;
    jar.add(session_cookie(state, token));
    jar.remove(rocket::http::Cookie::build(PRE_COOKIE).path("/admin"));
    state
        .audit
        .record(
            entry(crate::audit::AuditAction::AdminConsoleLogin, Outcome::Success, client).actor(Some(user.id.clone())),
        )
        .await;
    Ok(())
}

#[post("/mfa", data = "<form>")]
pub async fn mfa_form(state: &State<AppState>, client: ClientInfo, jar: &CookieJar<'_>, form: Form<CodeForm>) -> Page {
    let f = form.into_inner();
    if !pre_ok(jar, &f.csrf) {
        return bad_csrf();
    }
    match mfa_step(state, &client, f.mfa_token.clone(), f.code).await {
        Ok((user, method)) => {
            state
                .audit
                .record(
                    entry(crate::audit::AuditAction::AuthMfa, Outcome::Success, &client)
                        .actor(Some(user.id.clone()))
                        .details(json!({"method": method})),
                )
                .await;
            if !user.is_admin() {
                return error_page(Status::Forbidden, "Administrators only", "This console is for administrators.");
            }
            match open_session(state, &client, jar, &user).await {
                Ok(()) => Page::Redirect("/admin".into()),
                Err(e) => error_page(e.status, "Sign-in failed", &api_message(&e)),
            }
        }
        // An expired or used-up challenge means starting over; a wrong code may be retried.
        Err(e) if e.code == "invalid_mfa_code" => {
            let csrf = pre_token(state, jar);
            render(e.status, &ui::MfaPage { csrf, mfa_token: f.mfa_token, error: Some(api_message(&e)) })
        }
        Err(e) => {
            let csrf = pre_token(state, jar);
            render(e.status, &ui::LoginPage { csrf, email: String::new(), error: Some(api_message(&e)) })
        }
    }
}

#[post("/enrol", data = "<form>")]
pub async fn enrol(state: &State<AppState>, client: ClientInfo, jar: &CookieJar<'_>, form: Form<CodeForm>) -> Page {
    let f = form.into_inner();
    if !pre_ok(jar, &f.csrf) {
        return bad_csrf();
    }
    let csrf = pre_token(state, jar);
    let start_over = |e: &ApiError| {
        render(e.status, &ui::LoginPage { csrf: csrf.clone(), email: String::new(), error: Some(api_message(e)) })
    };
    let user = match challenge_owner(state, &client, &f.mfa_token).await {
        Ok(u) if u.is_admin() && !u.mfa_enabled => u,
        Ok(_) => {
            return error_page(
                Status::Forbidden,
                "Not allowed",
                "This enrolment is not for an administrator without MFA.",
            )
        }
        Err(e) => return start_over(&e),
    };
    let Some(secret) = user.totp_pending_enc.as_deref().and_then(|s| mfa::open_secret(&state.keys, &user.id, s)) else {
        return start_over(&ApiError::new(Status::Conflict, "mfa_not_set_up", "sign in again to start the enrolment"));
    };
    let now = (crate::time::now_micros() / 1_000_000) as u64;
    let master = state.keys.hash_key;
    let (uid, token) = (user.id.clone(), f.mfa_token.clone());
    let step = mfa::matching_step(&secret, &f.code, now);
    let codes = match step {
        None => None,
        Some(step) => state
            .db
            .run(move |c| {
                crate::db::write_transaction(c, |c| {
                    if !mfa::claim_step(c, &uid, step)? || !mfa::challenge_done(c, &master, &token)? {
                        return Ok(None);
                    }
                    users::activate_pending_totp(c, &uid)?;
                    mfa::new_recovery_codes(c, &master, &uid).map(Some)
                })
                .map_err(ApiError::from)
            })
            .await
            .unwrap_or(None),
    };
    let Some(codes) = codes else {
        let t = f.mfa_token.clone();
        let _ = state.db.q(move |c| mfa::challenge_failed(c, &master, &t)).await;
        state
            .audit
            .record(
                entry(crate::audit::AuditAction::AuthMfaEnable, Outcome::Failure, &client).actor(Some(user.id.clone())),
            )
            .await;
        let uri = mfa::otpauth_uri(&secret, &user.email);
        return render(
            Status::BadRequest,
            &ui::EnrolPage {
                csrf,
                mfa_token: f.mfa_token,
                secret: mfa::base32(&secret),
                qr_svg: mfa::qr_svg(&uri),
                error: Some("The code is wrong or expired; check the device clock and try the next code.".into()),
            },
        );
    };
    state
        .audit
        .record(entry(crate::audit::AuditAction::AuthMfaEnable, Outcome::Success, &client).actor(Some(user.id.clone())))
        .await;
    if let Err(e) = open_session(state, &client, jar, &user).await {
        return error_page(e.status, "Sign-in failed", &api_message(&e));
    }
    // The page shows the codes once; its CSRF token is the new session's, read back.
    let nav_csrf = current_csrf(state, jar).await.unwrap_or_default();
    render(
        Status::Ok,
        &ui::RecoveryCodesPage { nav: ui::Nav { admin: user.display_name.clone(), csrf: nav_csrf, active: "" }, codes },
    )
}

/// The CSRF token of the session whose cookie was just set in `jar`.
async fn current_csrf(state: &AppState, jar: &CookieJar<'_>) -> Option<String> {
    let token = jar.get_pending(COOKIE)?.value().to_string();
    let master = state.keys.hash_key;
    let idle = state.config.admin.idle_timeout_secs as i64 * 1_000_000;
    state
        .db
        .q(move |c| super::lookup(c, &master, &token, crate::time::now_micros(), idle))
        .await
        .ok()
        .flatten()
        .map(|s| s.csrf)
}

#[derive(Debug, FromForm)]
pub struct CsrfForm {
    csrf: String,
}

#[post("/logout", data = "<form>")]
pub async fn logout(
    state: &State<AppState>,
    client: ClientInfo,
    who: Console,
    jar: &CookieJar<'_>,
    form: Form<CsrfForm>,
) -> Page {
    let Console::Admin(s) = &who else { return refuse_post(&who) };
    if !csrf_ok(&s.csrf, &form.csrf) {
        return bad_csrf();
    }
    let sid = s.sid.clone();
    let _ = state.db.q(move |c| sessions::revoke(c, &sid, "logout")).await;
    state.sessions_revoked(std::slice::from_ref(&s.sid));
    jar.remove(rocket::http::Cookie::build(COOKIE).path("/admin"));
    state
        .audit
        .record(
            entry(crate::audit::AuditAction::AdminConsoleLogout, Outcome::Success, &client)
                .actor(Some(s.user_id.clone())),
        )
        .await;
    Page::Redirect("/admin/login".into())
}

// ---------- dashboard ----------

/// Counts per interval of the `at` values (microseconds) from `since`, `n` intervals of `step`.
fn buckets(ats: &[i64], since: i64, step: i64, n: usize) -> Vec<u64> {
    let mut out = vec![0u64; n];
    for &t in ats {
        if t >= since {
            let i = ((t - since) / step) as usize;
            if i < n {
                out[i] += 1;
            }
        }
    }
    out
}

fn human_bytes(b: i64) -> String {
    let b = b.max(0) as f64;
    match b {
        b if b >= 1e12 => format!("{:.1} TB", b / 1e12),
        b if b >= 1e9 => format!("{:.1} GB", b / 1e9),
        b if b >= 1e6 => format!("{:.1} MB", b / 1e6),
        b if b >= 1e3 => format!("{:.1} kB", b / 1e3),
        b => format!("{b} B"),
    }
}

#[derive(QueryableByName)]
struct StoredBytes {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[get("/?<range>")]
pub async fn dashboard(state: &State<AppState>, who: Console, range: Option<&str>) -> Page {
    let Console::Admin(s) = &who else { return refuse(&who) };
    let week = range == Some("7d");
    let (n, step) = if week { (7 * 24, 3_600_000_000i64) } else { (24, 3_600_000_000i64) };
    let now = crate::time::now_micros();
    let since = now - n as i64 * step;
    state.audit.flush().await;
    type Counts = (i64, i64, Option<i64>, i64, i64, Vec<i64>, Vec<i64>, Vec<i64>, Vec<(i64, String)>, Vec<i64>);
    let data: Result<Counts, _> = state
        .db
        .q(move |c| {
            let users_n = ut::table.select(count_star()).first::<i64>(c)?;
            let files_n = files::table.select(count_star()).first::<i64>(c)?;
            // Summed by the database (cast: PostgreSQL's SUM of BIGINT is NUMERIC).
            let stored: StoredBytes =
                diesel::sql_query("SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) AS n FROM files").get_result(c)?;
            let pending = files::table.filter(files::scan_status.eq("pending")).select(count_star()).first::<i64>(c)?;
            let open = sa::table.filter(sa::acked_at.is_null()).select(count_star()).first::<i64>(c)?;
            let logins = al::table
                .filter(al::at.ge(since))
                .filter(al::action.eq_any(["auth.login", "auth.mfa"]))
                .filter(al::outcome.eq("success"))
                .filter(al::details.not_like("%mfa_required%"))
                .select(al::at)
                .load(c)?;
            let failures = al::table
                .filter(al::at.ge(since))
                .filter(al::action.eq_any(["auth.login", "auth.mfa"]))
                .filter(al::outcome.ne("success"))
                .select(al::at)
                .load(c)?;
            let uploads = files::table.filter(files::created_at.ge(since)).select(files::created_at).load(c)?;
            let verdicts = al::table
                .filter(al::at.ge(since))
                .filter(al::action.eq("file.scan"))
                .select((al::at, al::outcome))
                .load(c)?;
            let alerts = sa::table.filter(sa::at.ge(since)).select(sa::at).load(c)?;
            Ok((users_n, files_n, Some(stored.n), pending, open, logins, failures, uploads, verdicts, alerts))
        })
        .await;
    let Ok((users_n, files_n, bytes, pending, open, logins, failures, uploads, verdicts, alerts)) = data else {
        return error_page(Status::ServiceUnavailable, "Try again", "The dashboard could not be read; try again.");
    };
    let label = |i: usize| {
        let t = since + i as i64 * step;
        let s = crate::time::micros_to_rfc3339(t);
        if week {
            s[5..13].replace('T', " ") + "h"
        } else {
            s[11..16].to_string()
        }
    };
    let series = |ats: &[i64]| -> Vec<(String, u64)> {
        buckets(ats, since, step, n).into_iter().enumerate().map(|(i, v)| (label(i), v)).collect()
    };
    let infected: Vec<i64> = verdicts.iter().filter(|(_, o)| o != "success").map(|(t, _)| *t).collect();
    let mut charts = vec![
        ui::Chart::new("Sign-ins per hour", &series(&logins)),
        ui::Chart::new("Failed sign-ins per hour", &series(&failures)),
        ui::Chart::new("Uploads per hour", &series(&uploads)),
        ui::Chart::new("Scans that found something or failed, per hour", &series(&infected)),
        ui::Chart::new("Security alerts per hour", &series(&alerts)),
    ];
    // The axis runs from the start of the period to now (bars carry their hour as a tooltip).
    for c in &mut charts {
        c.first_label = if week { "7 days ago" } else { "24 hours ago" }.into();
        c.last_label = "now".into();
    }
    let stats = vec![
        ui::Stat { label: "users".into(), value: users_n.to_string() },
        ui::Stat { label: "files".into(), value: files_n.to_string() },
        ui::Stat { label: "stored".into(), value: human_bytes(bytes.unwrap_or(0)) },
        ui::Stat { label: "scans pending".into(), value: pending.to_string() },
        ui::Stat { label: "open alerts".into(), value: open.to_string() },
    ];
    render(
        Status::Ok,
        &ui::DashboardPage { nav: nav(s, "dashboard"), stats, range: if week { "7d" } else { "24h" }.into(), charts },
    )
}

// ---------- users ----------

#[get("/users?<q>&<done>")]
pub async fn users_page(state: &State<AppState>, who: Console, q: Option<String>, done: Option<&str>) -> Page {
    let Console::Admin(s) = &who else { return refuse(&who) };
    let notice = match done {
        Some("unlock") => Some("The account is unlocked.".to_string()),
        Some("disable") => Some("The account is disabled and its sessions ended.".to_string()),
        Some("reset-mfa") => Some("MFA is reset and the user's sessions ended.".to_string()),
        Some("enable") => Some("The account is enabled; it can sign in again.".to_string()),
        Some("clear-reverify") => Some("The user's sessions no longer wait for re-verification.".to_string()),
        Some("created") => Some("The user is created.".to_string()),
        _ => None,
    };
    users_view(state, s, q, Status::Ok, notice, None, None).await
}

async fn users_view(
    state: &AppState,
    s: &ConsoleSession,
    q: Option<String>,
    status: Status,
    notice: Option<String>,
    error: Option<String>,
    invite: Option<ui::NewInvite>,
) -> Page {
    let q = q.map(|q| q.trim().to_string()).filter(|q| !q.is_empty());
    let list = crate::auth::admin_routes::list(State::from(state), as_admin(s), q.clone(), Some("200"), None).await;
    let list = match list {
        Ok(l) => serde_json::to_value(&l.0).unwrap_or(Value::Null),
        Err(e) => return error_page(e.status, "Users", &api_message(&e)),
    };
    let now = crate::time::now_micros();
    let users = list["users"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|u| {
                    let str_of = |k: &str| u[k].as_str().unwrap_or_default().to_string();
                    let locked = u["locked_until"].as_str().and_then(crate::time::parse_rfc3339_micros).map(|until| {
                        let mins = ((until - now).max(0) + 59_999_999) / 60_000_000;
                        format!("{mins} min left")
                    });
                    ui::UserRow {
                        id: str_of("id"),
                        email: str_of("email"),
                        display_name: str_of("display_name"),
                        role: str_of("role"),
                        mfa: u["mfa_enabled"].as_bool().unwrap_or(false),
                        disabled: u["disabled"].as_bool().unwrap_or(false),
                        suspended: u["suspended_by_rule"].as_str().map(str::to_string),
                        locked,
                        created: str_of("created_at").chars().take(10).collect(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    render(status, &ui::UsersPage { nav: nav(s, "users"), q: q.unwrap_or_default(), users, notice, error, invite })
}

#[derive(Debug, FromForm)]
pub struct NewUserForm {
    csrf: String,
    email: String,
    display_name: String,
    password: String,
    role: String,
}

#[post("/users/create", data = "<form>")]
pub async fn user_create(state: &State<AppState>, client: ClientInfo, who: Console, form: Form<NewUserForm>) -> Page {
    let Console::Admin(s) = &who else { return refuse_post(&who) };
    let f = form.into_inner();
    if !csrf_ok(&s.csrf, &f.csrf) {
        return bad_csrf();
    }
    let body = crate::http::JsonBody(crate::auth::admin_routes::CreateUser {
        email: f.email,
        display_name: f.display_name,
        password: f.password,
        role: Some(f.role),
    });
    match crate::auth::admin_routes::create(state, client, as_admin(s), body).await {
        Ok(_) => Page::Redirect("/admin/users?done=created".into()),
        Err(e) => users_view(state, s, None, e.status, None, Some(api_message(&e)), None).await,
    }
}

#[derive(Debug, FromForm)]
pub struct InviteForm {
    csrf: String,
    email: String,
    hours: String,
}

#[post("/users/invite", data = "<form>")]
pub async fn user_invite(state: &State<AppState>, client: ClientInfo, who: Console, form: Form<InviteForm>) -> Page {
    let Console::Admin(s) = &who else { return refuse_post(&who) };
    let f = form.into_inner();
    if !csrf_ok(&s.csrf, &f.csrf) {
        return bad_csrf();
    }
    let Ok(hours) = f.hours.trim().parse::<u32>() else {
        return users_view(
            state,
            s,
            None,
            Status::BadRequest,
            None,
            Some("Valid for: a whole number of hours.".into()),
            None,
        )
        .await;
    };
    let email = Some(f.email.trim().to_string()).filter(|e| !e.is_empty());
    let body = crate::http::JsonBody(crate::auth::admin_routes::CreateInvite { email, expires_in_hours: Some(hours) });
    match crate::auth::admin_routes::create_invite(state, client, as_admin(s), body).await {
        Ok((_, inv)) => {
            let inv = inv.0;
            let invite = ui::NewInvite {
                code: inv.code,
                email: inv.email.unwrap_or_default(),
                expires: inv.expires_at.replace('T', " ").chars().take(16).collect(),
            };
            users_view(state, s, None, Status::Ok, None, None, Some(invite)).await
        }
        Err(e) => users_view(state, s, None, e.status, None, Some(api_message(&e)), None).await,
    }
}

#[post("/users/<id>/<act>", data = "<form>")]
pub async fn user_act(
    state: &State<AppState>,
    client: ClientInfo,
    who: Console,
    id: &str,
    act: &str,
    form: Form<CsrfForm>,
) -> Page {
    let Console::Admin(s) = &who else { return refuse_post(&who) };
    if !csrf_ok(&s.csrf, &form.csrf) {
        return bad_csrf();
    }
    use crate::auth::admin_acts::{self as acts, Actor, Via};
    let by = Actor {
        user_id: Some(s.user_id.clone()),
        ip: client.ip_string(),
        user_agent: client.user_agent.clone(),
        via: Via::Console,
    };
    let r = match act {
        "unlock" => acts::unlock(state, &by, id).await,
        "disable" => acts::disable(state, &by, id).await,
        "enable" => acts::enable(state, &by, id).await,
        "clear-reverify" => acts::clear_reverify(state, &by, id).await,
        "reset-mfa" => acts::reset_mfa(state, &by, id).await,
        _ => return error_page(Status::NotFound, "Not found", "No such action."),
    };
    match r {
        Ok(_) => Page::Redirect(format!("/admin/users?done={act}")),
        Err(e) => {
            let e = crate::auth::admin_routes::act_error(e);
            error_page(e.status, "Not done", &api_message(&e))
        }
    }
}

#[get("/users/<id>?<done>")]
pub async fn user_page(state: &State<AppState>, who: Console, id: &str, done: Option<&str>) -> Page {
    let Console::Admin(s) = &who else { return refuse(&who) };
    let uid = id.to_string();
    let now = crate::time::now_micros();
    type Loaded = (users::User, Option<i64>, Vec<(String, i64, i64, Option<String>, Option<String>)>);
    let loaded: Result<Loaded, ApiError> = state
        .db
        .run(move |c| {
            let u = users::by_id(c, &uid).map_err(ApiError::from)?;
            let lock = crate::security::throttle::locked_until(c, &u.email, now).map_err(ApiError::from)?;
            let sessions = st::table
                .filter(st::user_id.eq(&uid))
                .filter(st::revoked_at.is_null())
                .filter(st::expires_at.gt(now))
                .order(st::created_at.desc())
                .limit(100)
                .select((st::id, st::created_at, st::expires_at, st::ip, st::user_agent))
                .load(c)
                .map_err(ApiError::from)?;
            Ok((u, lock, sessions))
        })
        .await;
    let (u, lock, sessions) = match loaded {
        Ok(l) => l,
        Err(e) => return error_page(e.status, "User", &api_message(&e)),
    };
    let activity = match crate::audit::routes::logs(
        as_admin(s),
        state,
        Some(id),
        None,
        None,
        None,
        None,
        None,
        Some("50"),
        None,
        None,
    )
    .await
    {
        Ok(crate::audit::routes::LogsAnswer::Page(p)) => entries_of(&serde_json::to_value(&p.0).unwrap_or(Value::Null)),
        _ => Vec::new(),
    };
    let when = |t: i64| crate::time::micros_to_rfc3339(t).replace('T', " ").chars().take(16).collect::<String>();
    let user = ui::UserRow {
        id: u.id.clone(),
        email: u.email.clone(),
        display_name: u.display_name.clone(),
        role: u.role.clone(),
        mfa: u.mfa_enabled,
        disabled: u.disabled,
        suspended: u.suspended_at.and(u.suspended_reason.clone()),
        locked: lock.map(|until| format!("{} min left", ((until - now).max(0) + 59_999_999) / 60_000_000)),
        created: when(u.created_at),
    };
    let sessions = sessions
        .into_iter()
        .map(|(sid, created, expires, ip, ua)| ui::SessionRow {
            id: sid,
            created: when(created),
            expires: when(expires),
            ip: ip.unwrap_or_default(),
            user_agent: ua.unwrap_or_default(),
        })
        .collect();
    let notice = (done == Some("revoked")).then(|| "The session is revoked.".to_string());
    render(Status::Ok, &ui::UserPage { nav: nav(s, "users"), user, sessions, activity, notice })
}

#[post("/users/<id>/sessions/<sid>/revoke", data = "<form>")]
pub async fn session_revoke(
    state: &State<AppState>,
    client: ClientInfo,
    who: Console,
    id: &str,
    sid: &str,
    form: Form<CsrfForm>,
) -> Page {
    let Console::Admin(s) = &who else { return refuse_post(&who) };
    if !csrf_ok(&s.csrf, &form.csrf) {
        return bad_csrf();
    }
    let (uid, target) = (id.to_string(), sid.to_string());
    let n = state
        .db
        .q(move |c| {
            diesel::update(
                st::table.filter(st::id.eq(&target)).filter(st::user_id.eq(&uid)).filter(st::revoked_at.is_null()),
            )
            .set((st::revoked_at.eq(crate::time::now_micros()), st::revoked_reason.eq("admin")))
            .execute(c)
        })
        .await;
    match n {
        Ok(1) => {
            state.sessions_revoked(&[sid.to_string()]);
            state
                .audit
                .record(
                    entry(crate::audit::AuditAction::AdminSessionRevoke, Outcome::Success, &client)
                        .actor(Some(s.user_id.clone()))
                        .target("user", id.to_string())
                        .details(json!({"session_id": sid})),
                )
                .await;
            Page::Redirect(format!("/admin/users/{id}?done=revoked"))
        }
        Ok(_) => error_page(Status::NotFound, "Not found", "No such active session of this user."),
        Err(_) => error_page(Status::ServiceUnavailable, "Try again", "The session could not be revoked; try again."),
    }
}

// ---------- files ----------

#[get("/files?<show>&<done>")]
pub async fn files_page(state: &State<AppState>, who: Console, show: Option<&str>, done: Option<&str>) -> Page {
    let Console::Admin(s) = &who else { return refuse(&who) };
    let show = match show {
        Some("compromised") => "compromised",
        Some("error") => "error",
        _ => "quarantined",
    };
    let which = show.to_string();
    let rows = state
        .db
        .q(move |c| {
            let mut q = files::table.select(crate::files::FileRecord::as_select()).into_boxed();
            q = match which.as_str() {
                "compromised" => q.filter(files::integrity.eq("compromised")),
                "error" => q.filter(files::scan_status.eq("error")),
                _ => q.filter(files::scan_status.eq("quarantined")),
            };
            let rows: Vec<crate::files::FileRecord> = q.order(files::created_at.desc()).limit(500).load(c)?;
            let mut out = Vec::with_capacity(rows.len());
            for f in rows {
                let details: Option<String> = sa::table
                    .filter(sa::subject_id.eq(&f.id))
                    .filter(sa::kind.eq("malware_detected"))
                    .order(sa::at.desc())
                    .select(sa::details)
                    .first(c)
                    .optional()?;
                out.push((f, details));
            }
            Ok(out)
        })
        .await;
    let Ok(rows) = rows else {
        return error_page(Status::ServiceUnavailable, "Try again", "The files could not be read; try again.");
    };
    let files = rows
        .into_iter()
        .map(|(f, details)| {
            let matches = details
                .and_then(|d| serde_json::from_str::<Value>(&d).ok())
                .and_then(|d| {
                    d["rules"].as_array().map(|m| m.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(", "))
                })
                .unwrap_or_default();
            ui::FileRow {
                id: f.id,
                name: f.name,
                owner: f.owner_id,
                size: human_bytes(f.size),
                uploaded: crate::time::micros_to_rfc3339(f.created_at).replace('T', " ").chars().take(16).collect(),
                scan_status: f.scan_status,
                integrity: f.integrity,
                matches,
            }
        })
        .collect();
    let notice = match done {
        Some("rescan") => Some("Rescanned: the file's status below is the new verdict.".to_string()),
        Some("integrity") => Some("Integrity checked: the file's integrity below is the result.".to_string()),
        Some("release") => Some("Released: the file is downloadable again.".to_string()),
        Some("delete") => Some("Deleted: the record and the stored object are gone.".to_string()),
        _ => None,
    };
    render(Status::Ok, &ui::FilesPage { nav: nav(s, "files"), show: show.into(), files, notice })
}

#[post("/files/<id>/<act>", data = "<form>")]
pub async fn file_act(
    state: &State<AppState>,
    client: ClientInfo,
    who: Console,
    id: &str,
    act: &str,
    form: Form<CsrfForm>,
) -> Page {
    let Console::Admin(s) = &who else { return refuse_post(&who) };
    if !csrf_ok(&s.csrf, &form.csrf) {
        return bad_csrf();
    }
    let fid = id.to_string();
    let file = match state.db.q(move |c| crate::files::by_id(c, &fid)).await {
        Ok(Some(f)) => f,
        Ok(None) => return error_page(Status::NotFound, "Not found", "No such file."),
        Err(_) => return error_page(Status::ServiceUnavailable, "Try again", "The file could not be read; try again."),
    };
    let back = format!("/admin/files?done={act}");
    match act {
        "rescan" => match crate::security::scan::rescan(state, id, Some(s.user_id.clone())).await {
            Ok(_) => Page::Redirect(back),
            Err(e) => {
                let e = crate::security::scan_routes::rescan_error(e);
                error_page(e.status, "Not done", &api_message(&e))
            }
        },
        "integrity" => match crate::files::routes::integrity_check(state, client, as_admin(s), id).await {
            Ok(_) => Page::Redirect(format!("{back}&show=compromised")),
            Err(e) => error_page(e.status, "Not done", &api_message(&e)),
        },
        "release" => {
            let by = crate::files::moderation::Moderator {
                user_id: s.user_id.clone(),
                ip: client.ip_string(),
                user_agent: client.user_agent.clone(),
            };
            match crate::files::moderation::release(state, &by, &file.id).await {
                Ok(_) => Page::Redirect(back),
                Err(e) => {
                    let e = crate::security::scan_routes::release_error(e);
                    error_page(e.status, "Not done", &api_message(&e))
                }
            }
        }
        "delete" => {
            if let Err(e) = crate::files::routes::remove(state, &file).await {
                return error_page(e.status, "Not done", &api_message(&e));
            }
            state
                .audit
                .record(
                    entry(crate::audit::AuditAction::AdminFileDelete, Outcome::Success, &client)
                        .actor(Some(s.user_id.clone()))
                        .target("file", file.id.clone())
                        .details(json!({"owner_id": file.owner_id, "scan_status": file.scan_status})),
                )
                .await;
            Page::Redirect(back)
        }
        _ => error_page(Status::NotFound, "Not found", "No such action."),
    }
}

/// Audit entries of a `LogsPage` as the views show them.
fn entries_of(v: &Value) -> Vec<ui::AuditEntry> {
    v["entries"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    let str_of = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                    ui::AuditEntry {
                        id: str_of("id"),
                        at: str_of("at").replace('T', " ").trim_end_matches('Z').chars().take(19).collect(),
                        actor: str_of("actor_id"),
                        action: str_of("action"),
                        target: [str_of("target_type"), str_of("target_id")]
                            .into_iter()
                            .filter(|x| !x.is_empty())
                            .collect::<Vec<_>>()
                            .join(" "),
                        ip: str_of("ip"),
                        outcome: str_of("outcome"),
                        details: if e["details"].is_null() { String::new() } else { e["details"].to_string() },
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

// ---------- audit ----------

fn qs(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", crate::http::percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[allow(clippy::too_many_arguments)]
#[get("/audit?<actor_id>&<action>&<outcome>&<ip>&<since>&<until>&<cursor>&<verify>")]
pub async fn audit_page(
    state: &State<AppState>,
    who: Console,
    actor_id: Option<&str>,
    action: Option<&str>,
    outcome: Option<&str>,
    ip: Option<&str>,
    since: Option<&str>,
    until: Option<&str>,
    cursor: Option<&str>,
    verify: Option<&str>,
) -> Page {
    let Console::Admin(s) = &who else { return refuse(&who) };
    let filter = ui::AuditFilter {
        actor_id: actor_id.unwrap_or_default().trim().into(),
        action: action.unwrap_or_default().trim().into(),
        outcome: outcome.unwrap_or_default().trim().into(),
        ip: ip.unwrap_or_default().trim().into(),
        since: since.unwrap_or_default().trim().into(),
        until: until.unwrap_or_default().trim().into(),
    };
    let query = qs(&[
        ("actor_id", &filter.actor_id),
        ("action", &filter.action),
        ("outcome", &filter.outcome),
        ("ip", &filter.ip),
        ("since", &filter.since),
        ("until", &filter.until),
    ]);
    let chain = if verify.is_some() {
        match crate::audit::routes::verify(as_admin(s), state).await {
            Ok(r) => Some(ui::ChainStatus { ok: r.0.ok, checked: r.0.checked, first_bad_id: r.0.first_bad_id.clone() }),
            Err(e) => return error_page(e.status, "Audit log", &api_message(&e)),
        }
    } else {
        None
    };
    fn o(v: &str) -> Option<&str> {
        Some(v).filter(|v| !v.is_empty())
    }
    let answer = crate::audit::routes::logs(
        as_admin(s),
        state,
        o(&filter.actor_id),
        o(&filter.action),
        o(&filter.outcome),
        o(&filter.ip),
        o(&filter.since),
        o(&filter.until),
        Some("100"),
        cursor,
        None,
    )
    .await;
    let (entries, next, error) = match answer {
        Ok(crate::audit::routes::LogsAnswer::Page(p)) => {
            let v = serde_json::to_value(&p.0).unwrap_or(Value::Null);
            let entries = entries_of(&v);
            let next = v["next_cursor"].as_str().map(|c| {
                let more = qs(&[("cursor", c)]);
                if query.is_empty() {
                    more
                } else {
                    format!("{query}&{more}")
                }
            });
            (entries, next, None)
        }
        Ok(_) => (Vec::new(), None, None),
        Err(e) => (Vec::new(), None, Some(api_message(&e))),
    };
    let status = if error.is_some() { Status::BadRequest } else { Status::Ok };
    render(status, &ui::AuditPage { nav: nav(s, "audit"), filter, entries, next, query, chain, error })
}

/// The audit log under the page's filter as CSV or JSON lines, streamed.
#[allow(clippy::too_many_arguments)]
#[get("/audit/export?<format>&<actor_id>&<action>&<outcome>&<ip>&<since>&<until>")]
pub async fn audit_export(
    state: &State<AppState>,
    who: Console,
    format: Option<&str>,
    actor_id: Option<&str>,
    action: Option<&str>,
    outcome: Option<&str>,
    ip: Option<&str>,
    since: Option<&str>,
    until: Option<&str>,
) -> Result<crate::audit::routes::LogsAnswer, Page> {
    let Console::Admin(s) = &who else { return Err(refuse(&who)) };
    let format = format.filter(|f| *f == "csv" || *f == "jsonl").unwrap_or("csv");
    crate::audit::routes::logs(
        as_admin(s),
        state,
        actor_id,
        action,
        outcome,
        ip,
        since,
        until,
        None,
        None,
        Some(format),
    )
    .await
    .map_err(|e| error_page(e.status, "Export", &api_message(&e)))
}

// ---------- alerts ----------

#[get("/alerts?<all>")]
pub async fn alerts_page(state: &State<AppState>, who: Console, all: Option<&str>) -> Page {
    let Console::Admin(s) = &who else { return refuse(&who) };
    let open_only = all.is_none();
    let list = match crate::security::alerts::list(state, as_admin(s), Some(open_only), Some("200"), None).await {
        Ok(l) => l.0,
        Err(e) => return error_page(e.status, "Alerts", &api_message(&e)),
    };
    let alerts = list
        .alerts
        .into_iter()
        .map(|a| ui::AlertRow {
            at: a.at.replace('T', " ").chars().take(19).collect(),
            subject: [a.subject_type.unwrap_or_default(), a.subject_id.unwrap_or_default()]
                .into_iter()
                .filter(|x| !x.is_empty())
                .collect::<Vec<_>>()
                .join(" "),
            details: a.details.to_string(),
            acked: a.acked_at.map(|t| {
                format!(
                    "{} by {}",
                    t.replace('T', " ").chars().take(16).collect::<String>(),
                    a.acked_by.unwrap_or_default()
                )
            }),
            id: a.id,
            kind: a.kind,
            severity: a.severity,
        })
        .collect();
    let blocks = state.db.q(|c| crate::security::responses::list(c, 50)).await.unwrap_or_default();
    let short = |t: &str| t.replace('T', " ").chars().take(19).collect::<String>();
    let blocks = blocks
        .into_iter()
        .map(|b| ui::BlockRow {
            since: short(&b.created_at),
            until: short(&b.expires_at),
            lifted: b
                .lifted_at
                .as_deref()
                .map(|t| format!("lifted {} by {}", short(t), b.lifted_by.clone().unwrap_or_default())),
            active: b.active,
            id: b.id,
            ip: b.ip,
            reason: b.reason,
        })
        .collect();
    let held = state.db.q(crate::security::responses::held).await.unwrap_or_default();
    let held = held
        .into_iter()
        .map(|h| ui::HeldRow {
            detail: match h.state.as_str() {
                "suspended" => format!(
                    "by rule {} at {}",
                    h.rule.unwrap_or_default(),
                    short(h.since.as_deref().unwrap_or_default())
                ),
                _ => format!("{} session(s) waiting", h.sessions),
            },
            user_id: h.user_id,
            email: h.email,
            state: h.state,
        })
        .collect();
    render(Status::Ok, &ui::AlertsPage { nav: nav(s, "alerts"), open_only, alerts, blocks, held })
}

#[post("/blocks/<id>/lift", data = "<form>")]
pub async fn block_lift(
    state: &State<AppState>,
    client: ClientInfo,
    who: Console,
    id: &str,
    form: Form<CsrfForm>,
) -> Page {
    let Console::Admin(s) = &who else { return refuse_post(&who) };
    if !csrf_ok(&s.csrf, &form.csrf) {
        return bad_csrf();
    }
    match crate::security::responses::lift_as(state, &client, &s.user_id, id).await {
        Ok(()) => Page::Redirect("/admin/alerts".into()),
        Err(e) => error_page(e.status, "Not done", &api_message(&e)),
    }
}

#[post("/alerts/<id>/ack", data = "<form>")]
pub async fn alert_ack(
    state: &State<AppState>,
    client: ClientInfo,
    who: Console,
    id: &str,
    form: Form<CsrfForm>,
) -> Page {
    let Console::Admin(s) = &who else { return refuse_post(&who) };
    if !csrf_ok(&s.csrf, &form.csrf) {
        return bad_csrf();
    }
    match crate::security::alerts::ack(state, client, as_admin(s), id).await {
        Ok(_) => Page::Redirect("/admin/alerts".into()),
        Err(e) => error_page(e.status, "Not done", &api_message(&e)),
    }
}

// ---------- plugins ----------

#[get("/plugins")]
pub async fn plugins_page(state: &State<AppState>, who: Console) -> Page {
    let Console::Admin(s) = &who else { return refuse(&who) };
    let plugins = state
        .plugins
        .list()
        .into_iter()
        .map(|p| ui::PluginRow {
            name: p.name,
            kind: p.kind.unwrap_or_default(),
            version: p.version.unwrap_or_default(),
            abi: p.abi_version.unwrap_or_default(),
            builtin: p.builtin,
            health: p.health,
            error: p.error.unwrap_or_default(),
            calls: p.calls,
            failures: p.failures,
            sha256: p.sha256.unwrap_or_default(),
        })
        .collect();
    render(Status::Ok, &ui::PluginsPage { nav: nav(s, "plugins"), plugins })
}

// ---------- system ----------

#[get("/system?<done>")]
pub async fn system_page(state: &State<AppState>, who: Console, done: Option<&str>) -> Page {
    let Console::Admin(s) = &who else { return refuse(&who) };
    let notice = (done == Some("reloaded")).then(|| "The rules were recompiled and are in force.".to_string());
    system_view(state, s, notice, None).await
}

async fn system_view(state: &AppState, s: &ConsoleSession, notice: Option<String>, error: Option<String>) -> Page {
    let dir = state.config.security.policy_dir.join("yara");
    let mut rule_files: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".yar") || n.ends_with(".yara"))
                .collect()
        })
        .unwrap_or_default();
    rule_files.sort();
    let outbox = crate::notify::routes::outbox(State::from(state), as_admin(s), None, Some("50"), None).await;
    let (mail_enabled, mail_counts, outbox) = match outbox {
        Ok(o) => {
            let o = o.0;
            let counts = o.counts.iter().map(|(k, v)| (k.clone(), v.as_i64().unwrap_or(0))).collect();
            let rows = o
                .messages
                .into_iter()
                .map(|m| ui::OutboxRow {
                    created: m.created_at.replace('T', " ").chars().take(16).collect(),
                    to: m.to,
                    subject: m.subject,
                    status: m.status,
                    attempts: m.attempts,
                    last_error: m.last_error.unwrap_or_default(),
                })
                .collect();
            (o.enabled, counts, rows)
        }
        Err(_) => (false, Vec::new(), Vec::new()),
    };
    render(
        if error.is_some() { Status::BadRequest } else { Status::Ok },
        &ui::SystemPage {
            nav: nav(s, "system"),
            rule_files,
            policy_dir: dir.display().to_string(),
            notice,
            error,
            mail_enabled,
            mail_counts,
            outbox,
            storage: storage_row(state),
            config: state.config.redacted_toml(),
            orphans: crate::files::orphans::list_aside(&state.config.storage.data_dir)
                .unwrap_or_default()
                .into_iter()
                .map(|o| ui::OrphanRow { key: o.key, bytes: o.bytes, moved_at: o.moved_at })
                .collect(),
            orphans_dir: crate::files::orphans::aside_dir(&state.config.storage.data_dir).display().to_string(),
            orphan_retention_days: state.config.storage.orphan_retention_days,
            untrusted_forwarder: crate::http::client::untrusted_forwarder().map(|p| p.to_string()),
        },
    )
}

/// The storage backend and its circuit breaker, as the System page shows them.
fn storage_row(state: &AppState) -> ui::StorageRow {
    use std::sync::atomic::Ordering;
    let b = &state.storage_breaker;
    let health = b.health();
    ui::StorageRow {
        backend: seccollab_plugin_api::StorageBackend::name(&*state.storage).to_string(),
        state: match (health, b.open_for()) {
            ("paused", Some(d)) => format!("open: failing fast for {} s more", d.as_secs() + 1),
            ("paused", None) => "open".into(),
            ("degraded", _) => "closed, recent failures".into(),
            _ => "closed".into(),
        },
        health: health.to_string(),
        calls: b.calls.load(Ordering::Relaxed),
        failures: b.failures.load(Ordering::Relaxed),
        last_error: b.last_error().unwrap_or_default(),
    }
}

#[post("/system/reload-rules", data = "<form>")]
pub async fn reload_rules(state: &State<AppState>, client: ClientInfo, who: Console, form: Form<CsrfForm>) -> Page {
    let Console::Admin(s) = &who else { return refuse_post(&who) };
    if !csrf_ok(&s.csrf, &form.csrf) {
        return bad_csrf();
    }
    match crate::security::scan_routes::reload(state, client, as_admin(s)).await {
        Ok(_) => Page::Redirect("/admin/system?done=reloaded".into()),
        Err(e) => system_view(state, s, None, Some(e.message)).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_count_per_interval_and_drop_the_rest() {
        let b = buckets(&[0, 5, 10, 19, 20, 25, -1], 0, 10, 2);
        assert_eq!(b, vec![2, 2]);
    }

    #[test]
    fn query_strings_are_encoded() {
        assert_eq!(
            qs(&[("action", "auth.login"), ("ip", ""), ("since", "2026-11-27T00:00:00Z")]),
            "action=auth.login&since=2026-11-27T00%3A00%3A00Z"
        );
    }
}
