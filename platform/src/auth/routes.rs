//! `/api/auth/*`: register, login, verify-mfa, refresh, logout, me, password, MFA, user picker.

use rocket::http::Status;
use rocket::serde::json::Json;
use rocket::{delete, get, post, Route, State};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::password::{check_policy, Busy};
use super::secrets::{self, locked, Accept};
use super::sessions::{self, Refresh};
use super::users::{self, Role, User, UserError, UserSummary, UserView};
use super::{mfa, tokens, AuthUser};
use crate::audit::{NewAuditEntry, Outcome};
use crate::config::Registration;
use crate::http::pagination::{self, decode_str_cursor, encode_str_cursor};
use crate::http::{ApiError, ApiResult, ClientInfo, JsonBody};
use crate::security::throttle::{self, Verdict};
use crate::AppState;

pub fn routes() -> Vec<Route> {
    rocket::routes![
        register,
        login,
        verify_mfa,
        refresh,
        logout,
        me,
        change_password,
        mfa_setup,
        mfa_enable,
        mfa_disable,
        list_users,
        my_sessions,
        revoke_my_session,
        get_user,
        reverify
    ]
}

// ---------- shared pieces ----------

impl From<Busy> for ApiError {
    fn from(_: Busy) -> Self {
        ApiError::unavailable("sign-in is busy; try again in a moment", 1)
    }
}

impl From<UserError> for ApiError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::Invalid { field, why } => ApiError::invalid(field, why),
            UserError::EmailTaken => {
                ApiError::new(Status::Conflict, "email_taken", "a user with this email already exists")
            }
            UserError::NotFound => ApiError::not_found("no such user"),
            UserError::Db(e) => ApiError::from(e),
        }
    }
}

pub(crate) fn entry(action: impl Into<String>, outcome: Outcome, client: &ClientInfo) -> NewAuditEntry {
    NewAuditEntry::new(action, outcome).client(client.ip_string(), client.user_agent.clone())
}

fn invalid_credentials() -> ApiError {
    ApiError::new(Status::Unauthorized, "invalid_credentials", "the email or password is wrong")
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub token: String,
    pub refresh_token: String,
    pub expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<UserView>,
}

/// Starts a session for `user` and returns its tokens. `mfa_passed`: the sign-in passed a
/// second factor (the admin API requires it).
pub(crate) async fn start_session(
    state: &AppState,
    user: &User,
    client: &ClientInfo,
    mfa_passed: bool,
) -> ApiResult<TokenResponse> {
    let master = state.keys.hash_key;
    let new = sessions::NewSession {
        user_id: user.id.clone(),
        ttl_secs: state.config.auth.session_ttl_days * 86_400,
        ip: client.ip_string(),
        user_agent: client.user_agent.clone(),
        mfa_passed,
    };
    let (session, refresh_token) =
        state.db.run(move |c| sessions::create(c, &master, new).map_err(ApiError::from)).await?;
    let expires_in = state.config.auth.access_token_ttl_secs;
    Ok(TokenResponse {
        token: tokens::issue(&state.keys.jwt_signing, &user.id, &session.id, expires_in),
        refresh_token,
        expires_in,
        user: Some(UserView::from(user)),
    })
}

async fn load_user(state: &AppState, id: &str) -> ApiResult<User> {
    let id = id.to_string();
    state.db.run(move |c| users::by_id(c, &id).map_err(ApiError::from)).await
}

// ---------- register ----------

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub email: String,
    pub password: String,
    pub display_name: String,
    pub invite_code: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserResponse {
    pub user: UserView,
}

/// Creates an account under the registration policy (`open`, `invite` or `closed`).
#[utoipa::path(post, path = "/api/auth/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, body = UserResponse), (status = 400, description = "invalid input or weak password"),
              (status = 403, description = "registration closed or bad invite"), (status = 409, description = "email taken")))]
#[post("/auth/register", data = "<body>")]
pub async fn register(
    state: &State<AppState>,
    client: ClientInfo,
    body: JsonBody<RegisterRequest>,
) -> ApiResult<(Status, Json<UserResponse>)> {
    let user = register_user(state, &client, body.0).await?;
    Ok((Status::Created, Json(UserResponse { user: UserView::from(&user) })))
}

/// Registration under the policy (API and web form): invite check, password policy, the
/// account, the audit entry.
pub(crate) async fn register_user(state: &AppState, client: &ClientInfo, req: RegisterRequest) -> ApiResult<User> {
    let client = client.clone();
    let email = users::normalize_email(&req.email)?;
    let invite_hash = match state.config.auth.registration {
        Registration::Closed => {
            state
                .audit
                .record(
                    entry(crate::audit::AuditAction::AuthRegister, Outcome::Denied, &client)
                        .details(json!({"email": email, "reason": "closed"})),
                )
                .await;
            return Err(ApiError::new(
                Status::Forbidden,
                "registration_closed",
                "registration is closed; ask an administrator for an account",
            ));
        }
        Registration::Invite => {
            let code = req.invite_code.as_deref().map(str::trim).filter(|c| !c.is_empty()).ok_or_else(|| {
                ApiError::new(
                    Status::Forbidden,
                    "invite_required",
                    "registration needs an invite code from an administrator",
                )
            })?;
            Some(crate::crypto::keyed_hash(&state.keys.hash_key, "invite", code))
        }
        Registration::Open => None,
    };
    check_policy(&state.policy.password, &req.password, &[&email, &req.display_name])
        .map_err(|why| ApiError::new(Status::BadRequest, "weak_password", format!("password {why}")))?;
    let hash = state.hasher.hash(req.password).await?;
    let display_name = req.display_name;
    let email2 = email.clone();
    let created = state
        .db
        .run(move |c| {
            crate::db::write_transaction(c, |c| {
                if let Some(h) = &invite_hash {
                    if !super::admin_routes::consume_invite(c, h, &email2)? {
                        return Ok(Err(ApiError::new(
                            Status::Forbidden,
                            "invalid_invite",
                            "the invite code is unknown, used, expired or for another email",
                        )));
                    }
                }
                match users::create(c, &email2, &display_name, Some(hash), Role::User) {
                    Ok(u) => Ok(Ok(u)),
                    Err(UserError::Db(e)) => Err(e),
                    Err(e) => Ok(Err(ApiError::from(e))),
                }
            })
            .map_err(ApiError::from)
        })
        .await?;
    let outcome = if created.is_ok() { Outcome::Success } else { Outcome::Failure };
    let mut e = entry(crate::audit::AuditAction::AuthRegister, outcome, &client).details(json!({"email": email}));
    if let Ok(u) = &created {
        e = e.actor(Some(u.id.clone())).target("user", u.id.clone());
    }
    state.audit.record(e).await;
    created
}

// ---------- login ----------

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

/// Password sign-in; answers tokens, or `{mfa_required, mfa_token}` for MFA users.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), (status = 401, description = "invalid_credentials"),
              (status = 423, description = "account locked (Retry-After)"), (status = 429, description = "IP back-off (Retry-After)")))]
#[post("/auth/login", data = "<body>")]
pub async fn login(
    state: &State<AppState>,
    client: ClientInfo,
    body: JsonBody<LoginRequest>,
) -> ApiResult<Json<Value>> {
    let LoginRequest { email, password } = body.0;
    match password_step(state, &client, email, password).await? {
        PasswordStep::Mfa { mfa_token, .. } => Ok(Json(json!({"mfa_required": true, "mfa_token": mfa_token}))),
        PasswordStep::Done(user) => {
            let tokens = start_session(state, &user, &client, false).await?;
            state
                .audit
                .record(
                    entry(crate::audit::AuditAction::AuthLogin, Outcome::Success, &client)
                        .actor(Some(user.id.clone()))
                        .details(json!({"email": user.email, "method": "password"})),
                )
                .await;
            Ok(Json(serde_json::to_value(tokens).expect("json")))
        }
    }
}

/// What a correct password leads to.
pub(crate) enum PasswordStep {
    /// The user has MFA: the second step needs this challenge token.
    Mfa { mfa_token: String, user: User },
    /// No second factor: the caller starts the session (and audits the sign-in).
    Done(User),
}

/// The password step of every sign-in form (API and consoles): lockout and IP back-off, the
/// constant-work password check, failure counting and auditing, the MFA challenge.
pub(crate) async fn password_step(
    state: &AppState,
    client: &ClientInfo,
    email: String,
    password: String,
) -> ApiResult<PasswordStep> {
    let client = client.clone();
    let email = email.trim().to_lowercase();
    if email.is_empty() || password.is_empty() {
        return Err(ApiError::invalid(if email.is_empty() { "email" } else { "password" }, "must not be empty"));
    }
    let policy = state.policy.lockout.clone();
    let (email2, ip) = (email.clone(), client.ip_string());
    let (verdict, user) = state
        .db
        .q(move |c| {
            let v = throttle::check(c, &policy, &email2, ip.as_deref(), crate::time::now_micros())?;
            let u = users::by_email(c, &email2).map_err(|e| match e {
                UserError::Db(e) => e,
                _ => diesel::result::Error::NotFound,
            })?;
            Ok::<_, diesel::result::Error>((v, u))
        })
        .await?;
    match verdict {
        Verdict::Allowed => {}
        Verdict::AccountLocked(s) => {
            state
                .audit
                .record(
                    entry(crate::audit::AuditAction::AuthLogin, Outcome::Denied, &client)
                        .actor(user.map(|u| u.id))
                        .details(json!({"email": email, "reason": "account_locked"})),
                )
                .await;
            return Err(locked(s));
        }
        Verdict::IpBackoff(s) => {
            state
                .audit
                .record(
                    entry(crate::audit::AuditAction::AuthLogin, Outcome::Denied, &client)
                        .details(json!({"email": email, "reason": "ip_backoff"})),
                )
                .await;
            return Err(secrets::backoff(s));
        }
    }
    // Over-long input is refused without hashing it, but counted like any failure.
    let phc = user.as_ref().and_then(|u| u.password_hash.clone()).filter(|_| password.chars().count() <= 1024);
    let verified = state.hasher.verify(password.clone(), phc).await?;
    let actor = user.as_ref().map(|u| u.id.clone());
    if !verified.ok {
        let reason = if user.is_none() { "unknown_email" } else { "wrong_password" };
        state
            .audit
            .record(
                entry(crate::audit::AuditAction::AuthLogin, Outcome::Failure, &client)
                    .actor(actor.clone())
                    .details(json!({"email": email, "reason": reason})),
            )
            .await;
        if let Some(secs) = secrets::count_failure(state, &email, &client, actor).await? {
            return Err(locked(secs));
        }
        return Err(invalid_credentials());
    }
    let user = user.expect("verified implies a user");
    if user.disabled {
        state
            .audit
            .record(entry(crate::audit::AuditAction::AuthLogin, Outcome::Denied, &client).actor(actor).details(
                json!({"email": email, "reason": if user.suspended_at.is_some() { "suspended" } else { "disabled" }}),
            ))
            .await;
        return Err(account_refused(&user));
    }
    let master = state.keys.hash_key;
    let (email2, uid, mfa_on) = (email.clone(), user.id.clone(), user.mfa_enabled);
    // A correct password clears the account's failures only when it completes the sign-in:
    // failures of the second factor must survive a fresh challenge (`auth::secrets`).
    let challenge = state
        .db
        .q(move |c| {
            if mfa_on {
                mfa::new_challenge(c, &master, &uid).map(Some)
            } else {
                throttle::record_success(c, &email2).map(|()| None)
            }
        })
        .await?;
    if verified.needs_rehash {
        if let Ok(new_hash) = state.hasher.hash(password).await {
            let uid = user.id.clone();
            let _ = state.db.run(move |c| users::set_password_hash(c, &uid, &new_hash).map_err(ApiError::from)).await;
        }
    }
    if let Some(mfa_token) = challenge {
        state
            .audit
            .record(
                entry(crate::audit::AuditAction::AuthLogin, Outcome::Success, &client)
                    .actor(actor)
                    .details(json!({"email": email, "step": "password", "mfa_required": true})),
            )
            .await;
        return Ok(PasswordStep::Mfa { mfa_token, user });
    }
    Ok(PasswordStep::Done(user))
}

// ---------- verify-mfa ----------

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyMfaRequest {
    pub mfa_token: String,
    /// A 6-digit TOTP code or a recovery code.
    pub totp_code: String,
}

/// Second sign-in step: the `mfa_token` from login plus a TOTP or recovery code.
#[utoipa::path(post, path = "/api/auth/verify-mfa", tag = "auth", request_body = VerifyMfaRequest,
    responses((status = 200, body = TokenResponse), (status = 401, description = "invalid_mfa_code or invalid_mfa_token"),
              (status = 423, description = "account locked")))]
#[post("/auth/verify-mfa", data = "<body>")]
pub async fn verify_mfa(
    state: &State<AppState>,
    client: ClientInfo,
    body: JsonBody<VerifyMfaRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let VerifyMfaRequest { mfa_token, totp_code } = body.0;
    let (user, method) = mfa_step(state, &client, mfa_token, totp_code).await?;
    let tokens = start_session(state, &user, &client, true).await?;
    state
        .audit
        .record(
            entry(crate::audit::AuditAction::AuthMfa, Outcome::Success, &client)
                .actor(Some(user.id.clone()))
                .details(json!({"method": method})),
        )
        .await;
    Ok(Json(tokens))
}

fn wrong_code() -> ApiError {
    ApiError::new(Status::Unauthorized, "invalid_mfa_code", "the code is wrong, expired or already used")
}

/// The user an MFA challenge token belongs to, if it is live.
pub(crate) async fn challenge_owner(state: &AppState, client: &ClientInfo, mfa_token: &str) -> ApiResult<User> {
    let master = state.keys.hash_key;
    let t = mfa_token.to_string();
    let uid = state.db.run(move |c| mfa::challenge_user(c, &master, &t).map_err(ApiError::from)).await?;
    let Some(uid) = uid else {
        state
            .audit
            .record(
                entry(crate::audit::AuditAction::AuthMfa, Outcome::Failure, client)
                    .details(json!({"reason": "invalid_mfa_token"})),
            )
            .await;
        return Err(ApiError::new(
            Status::Unauthorized,
            "invalid_mfa_token",
            "this sign-in step expired or was used up; sign in again",
        ));
    };
    load_user(state, &uid).await
}

/// The second step of every sign-in form: the challenge token from [`password_step`] plus a
/// TOTP or recovery code. Returns the user and the method; the caller starts the session and
/// audits the success.
pub(crate) async fn mfa_step(
    state: &AppState,
    client: &ClientInfo,
    mfa_token: String,
    totp_code: String,
) -> ApiResult<(User, &'static str)> {
    let master = state.keys.hash_key;
    let user = challenge_owner(state, client, &mfa_token).await?;
    let checked = secrets::check_second_factor(
        state,
        client,
        &user,
        totp_code,
        Accept::CodeOrRecovery,
        crate::audit::AuditAction::AuthMfa,
    )
    .await?;
    let t = mfa_token.clone();
    let method = match checked {
        Ok(method) if !user.disabled => method,
        Ok(_) => return Err(account_refused(&user)),
        Err(e) => {
            state.db.run(move |c| mfa::challenge_failed(c, &master, &t).map_err(ApiError::from)).await?;
            return Err(e.answer(wrong_code));
        }
    };
    let done = state.db.run(move |c| mfa::challenge_done(c, &master, &t).map_err(ApiError::from)).await?;
    if !done {
        return Err(ApiError::new(
            Status::Unauthorized,
            "invalid_mfa_token",
            "this sign-in step expired or was used up; sign in again",
        ));
    }
    secrets::signed_in(state, &user.email).await?;
    Ok((user, method.as_str()))
}

// ---------- refresh / logout / me ----------

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// Rotates the refresh token; a spent one revokes the whole session.
#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse), (status = 401, description = "invalid or reused refresh token")))]
#[post("/auth/refresh", data = "<body>")]
pub async fn refresh(
    state: &State<AppState>,
    client: ClientInfo,
    body: JsonBody<RefreshRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let master = state.keys.hash_key;
    let token = body.0.refresh_token;
    let r = state.db.run(move |c| sessions::refresh(c, &master, &token).map_err(ApiError::from)).await?;
    match r {
        Refresh::Rotated { session_id, user_id, refresh_token } => {
            let expires_in = state.config.auth.access_token_ttl_secs;
            Ok(Json(TokenResponse {
                token: tokens::issue(&state.keys.jwt_signing, &user_id, &session_id, expires_in),
                refresh_token,
                expires_in,
                user: None,
            }))
        }
        Refresh::Reused { session_id, user_id } => {
            state.sessions_revoked(std::slice::from_ref(&session_id));
            state
                .audit
                .record(
                    entry(crate::audit::AuditAction::SecurityRefreshTokenReuse, Outcome::Denied, &client)
                        .actor(Some(user_id))
                        .target("session", session_id)
                        .details(json!({
                            "action": "session revoked",
                        })),
                )
                .await;
            Err(ApiError::new(
                Status::Unauthorized,
                "refresh_token_reused",
                "this refresh token was already used; the session has been ended, sign in again",
            ))
        }
        Refresh::Invalid => Err(ApiError::new(
            Status::Unauthorized,
            "invalid_refresh_token",
            "the refresh token is unknown or its session has ended; sign in again",
        )),
    }
}

/// Ends this session: its access and refresh tokens stop working at once.
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth", responses((status = 204), (status = 401)))]
#[post("/auth/logout")]
pub async fn logout(state: &State<AppState>, client: ClientInfo, user: super::PendingUser) -> ApiResult<Status> {
    let user = user.0;
    let sid = user.sid.clone();
    state.db.run(move |c| sessions::revoke(c, &sid, "logout").map_err(ApiError::from)).await?;
    state.sessions_revoked(std::slice::from_ref(&user.sid));
    state
        .audit
        .record(
            entry(crate::audit::AuditAction::AuthLogout, Outcome::Success, &client)
                .actor(Some(user.id))
                .target("session", user.sid),
        )
        .await;
    Ok(Status::NoContent)
}

/// The signed-in user.
#[utoipa::path(get, path = "/api/auth/me", tag = "auth", responses((status = 200, body = UserResponse), (status = 401)))]
#[get("/auth/me")]
pub async fn me(state: &State<AppState>, user: AuthUser) -> ApiResult<Json<UserResponse>> {
    let u = load_user(state, &user.id).await?;
    Ok(Json(UserResponse { user: UserView::from(&u) }))
}

// ---------- password ----------

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    pub current_password: String,
    pub new_password: String,
}

/// Checks the caller's own password under the lockout (`auth::secrets`).
async fn check_own_password(state: &AppState, user: &User, password: String, client: &ClientInfo) -> ApiResult<()> {
    secrets::check_password(state, client, user, password, crate::audit::AuditAction::AuthReauth)
        .await?
        .map_err(|e| e.answer(|| ApiError::new(Status::Forbidden, "wrong_password", "the current password is wrong")))
}

/// Changes the password; every other session is ended.
#[utoipa::path(post, path = "/api/auth/password", tag = "auth", request_body = PasswordChange,
    responses((status = 204), (status = 400, description = "weak password"), (status = 403, description = "wrong current password")))]
#[post("/auth/password", data = "<body>")]
pub async fn change_password(
    state: &State<AppState>,
    client: ClientInfo,
    user: AuthUser,
    body: JsonBody<PasswordChange>,
) -> ApiResult<Status> {
    let req = body.0;
    let u = load_user(state, &user.id).await?;
    check_own_password(state, &u, req.current_password, &client).await?;
    check_policy(&state.policy.password, &req.new_password, &[&u.email, &u.display_name])
        .map_err(|why| ApiError::new(Status::BadRequest, "weak_password", format!("new_password {why}")))?;
    let hash = state.hasher.hash(req.new_password).await?;
    let (uid, sid) = (user.id.clone(), user.sid.clone());
    let revoked = state
        .db
        .run(move |c| {
            users::set_password_hash(c, &uid, &hash).map_err(ApiError::from)?;
            sessions::revoke_all(c, &uid, Some(&sid), "password_change").map_err(ApiError::from)
        })
        .await?;
    state.sessions_revoked(&revoked);
    state
        .audit
        .record(
            entry(crate::audit::AuditAction::AuthPasswordChange, Outcome::Success, &client)
                .actor(Some(user.id))
                .details(json!({"sessions_revoked": revoked.len()})),
        )
        .await;
    Ok(Status::NoContent)
}

// ---------- MFA enrolment ----------

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MfaSetup {
    pub secret: String,
    pub otpauth_uri: String,
    pub qr_svg: String,
}

/// Starts TOTP enrolment: a new secret (not active until `/mfa/enable`).
#[utoipa::path(post, path = "/api/auth/mfa/setup", tag = "auth", responses((status = 200, body = MfaSetup), (status = 409, description = "MFA already on")))]
#[post("/auth/mfa/setup")]
pub async fn mfa_setup(state: &State<AppState>, client: ClientInfo, user: AuthUser) -> ApiResult<Json<MfaSetup>> {
    let u = load_user(state, &user.id).await?;
    if u.mfa_enabled {
        return Err(ApiError::new(
            Status::Conflict,
            "mfa_already_enabled",
            "MFA is already on; disable it first to enrol a new device",
        ));
    }
    let secret = mfa::new_secret();
    let sealed = mfa::seal_secret(&state.keys, &u.id, &secret);
    let uid = u.id.clone();
    state.db.run(move |c| users::set_pending_totp(c, &uid, Some(sealed)).map_err(ApiError::from)).await?;
    let uri = mfa::otpauth_uri(&secret, &u.email);
    state
        .audit
        .record(entry(crate::audit::AuditAction::AuthMfaSetup, Outcome::Success, &client).actor(Some(u.id.clone())))
        .await;
    Ok(Json(MfaSetup { secret: mfa::base32(&secret), qr_svg: mfa::qr_svg(&uri), otpauth_uri: uri }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaCode {
    pub totp_code: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecoveryCodes {
    pub recovery_codes: Vec<String>,
}

fn bad_code() -> ApiError {
    ApiError::new(
        Status::BadRequest,
        "invalid_mfa_code",
        "the code is wrong, expired or already used; check the device clock",
    )
}

/// Turns MFA on with a first valid code; returns 10 single-use recovery codes.
#[utoipa::path(post, path = "/api/auth/mfa/enable", tag = "auth", request_body = MfaCode,
    responses((status = 200, body = RecoveryCodes), (status = 400, description = "invalid_mfa_code"), (status = 409, description = "no setup pending")))]
#[post("/auth/mfa/enable", data = "<body>")]
pub async fn mfa_enable(
    state: &State<AppState>,
    client: ClientInfo,
    user: AuthUser,
    body: JsonBody<MfaCode>,
) -> ApiResult<Json<RecoveryCodes>> {
    let u = load_user(state, &user.id).await?;
    if u.mfa_enabled {
        return Err(ApiError::new(Status::Conflict, "mfa_already_enabled", "MFA is already on"));
    }
    let master = state.keys.hash_key;
    let Some(secret) = u.totp_pending_enc.as_deref().and_then(|s| mfa::open_secret(&state.keys, &u.id, s)) else {
        return Err(ApiError::new(Status::Conflict, "mfa_not_set_up", "call /api/auth/mfa/setup first"));
    };
    let now = (crate::time::now_micros() / 1_000_000) as u64;
    let Some(step) = mfa::matching_step(&secret, &body.0.totp_code, now) else {
        state
            .audit
            .record(
                entry(crate::audit::AuditAction::AuthMfaEnable, Outcome::Failure, &client).actor(Some(u.id.clone())),
            )
            .await;
        return Err(bad_code());
    };
    let uid = u.id.clone();
    let codes = state
        .db
        .run(move |c| {
            crate::db::write_transaction(c, |c| {
                if !mfa::claim_step(c, &uid, step)? {
                    return Ok(None);
                }
                users::activate_pending_totp(c, &uid)?;
                mfa::new_recovery_codes(c, &master, &uid).map(Some)
            })
            .map_err(ApiError::from)
        })
        .await?
        .ok_or_else(bad_code)?;
    state
        .audit
        .record(entry(crate::audit::AuditAction::AuthMfaEnable, Outcome::Success, &client).actor(Some(u.id)))
        .await;
    Ok(Json(RecoveryCodes { recovery_codes: codes }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaDisable {
    pub password: String,
    pub totp_code: String,
}

/// Turns MFA off; needs the password and a current code.
#[utoipa::path(post, path = "/api/auth/mfa/disable", tag = "auth", request_body = MfaDisable,
    responses((status = 204), (status = 400, description = "invalid_mfa_code"), (status = 403, description = "wrong password")))]
#[post("/auth/mfa/disable", data = "<body>")]
pub async fn mfa_disable(
    state: &State<AppState>,
    client: ClientInfo,
    user: AuthUser,
    body: JsonBody<MfaDisable>,
) -> ApiResult<Status> {
    let MfaDisable { password, totp_code } = body.0;
    let u = load_user(state, &user.id).await?;
    if !u.mfa_enabled {
        return Err(ApiError::new(Status::Conflict, "mfa_not_enabled", "MFA is not on"));
    }
    check_own_password(state, &u, password, &client).await?;
    secrets::check_second_factor(
        state,
        &client,
        &u,
        totp_code,
        Accept::TotpOnly,
        crate::audit::AuditAction::AuthMfaDisable,
    )
    .await?
    .map_err(|e| e.answer(bad_code))?;
    let uid = u.id.clone();
    let dropped = state
        .db
        .q(move |c| {
            crate::db::write_transaction(c, |c| {
                mfa::clear(c, &uid)?;
                sessions::drop_mfa_passed(c, &uid)
            })
        })
        .await?;
    state.sessions_revoked(&dropped);
    state
        .audit
        .record(entry(crate::audit::AuditAction::AuthMfaDisable, Outcome::Success, &client).actor(Some(u.id)))
        .await;
    Ok(Status::NoContent)
}

// ---------- re-verification (force_mfa) ----------

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReverifyRequest {
    /// A current TOTP code or a recovery code (accounts with MFA on).
    pub totp_code: Option<String>,
    /// The password (accounts without MFA).
    pub password: Option<String>,
}

/// Confirms this session again after an automatic response asked for it (`force_mfa`):
/// with the second factor when MFA is on, else with the password. Other sessions of the
/// user stay waiting until each is confirmed (or ended).
#[utoipa::path(post, path = "/api/auth/reverify", tag = "auth", request_body = ReverifyRequest,
    responses((status = 204), (status = 400, description = "the factor the account needs is missing"),
              (status = 401, description = "invalid_mfa_code"), (status = 403, description = "wrong_password"),
              (status = 423, description = "account locked")))]
#[post("/auth/reverify", data = "<body>")]
pub async fn reverify(
    state: &State<AppState>,
    client: ClientInfo,
    user: super::PendingUser,
    body: JsonBody<ReverifyRequest>,
) -> ApiResult<Status> {
    let ReverifyRequest { totp_code, password } = body.0;
    reverify_session(state, &client, &user.0.id, &user.0.sid, totp_code, password).await?;
    Ok(Status::NoContent)
}

/// Confirms session `sid` of `user_id` again (the API's and the web UI's re-verification).
pub(crate) async fn reverify_session(
    state: &AppState,
    client: &ClientInfo,
    user_id: &str,
    sid: &str,
    totp_code: Option<String>,
    password: Option<String>,
) -> ApiResult<()> {
    let client = client.clone();
    let u = load_user(state, user_id).await?;
    if let Err(e) = secrets::gate(state, &u.email, &client).await? {
        return Err(e.answer(wrong_code));
    }
    let method = if u.mfa_enabled {
        let code = totp_code.filter(|c| !c.trim().is_empty()).ok_or_else(|| {
            ApiError::invalid("totp_code", "your account has MFA on: send a current code or a recovery code")
        })?;
        let action = crate::audit::AuditAction::AuthReverify;
        secrets::check_second_factor(state, &client, &u, code, Accept::CodeOrRecovery, action)
            .await?
            .map_err(|e| e.answer(wrong_code))?
            .as_str()
    } else {
        let password = password
            .filter(|p| !p.is_empty())
            .ok_or_else(|| ApiError::invalid("password", "your account has no MFA: send your password"))?;
        check_own_password(state, &u, password, &client).await?;
        "password"
    };
    let (uid, sid2) = (u.id.clone(), sid.to_string());
    let cleared = state.db.q(move |c| sessions::clear_reverify(c, &uid, Some(&sid2))).await?;
    state.sessions_revoked(&[sid.to_string()]);
    secrets::signed_in(state, &u.email).await?;
    state
        .audit
        .record(
            entry(crate::audit::AuditAction::AuthReverify, Outcome::Success, &client)
                .actor(Some(u.id))
                .target("session", sid.to_string())
                .details(json!({"method": method, "was_required": !cleared.is_empty()})),
        )
        .await;
    Ok(())
}

// ---------- user picker ----------

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserList {
    pub users: Vec<UserSummary>,
    pub next_cursor: Option<String>,
}

/// Users matching `q` (email or name), for pickers; any signed-in user.
#[utoipa::path(get, path = "/api/auth/users", tag = "auth",
    params(("q" = Option<String>, Query), ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = UserList), (status = 401)))]
#[get("/auth/users?<q>&<limit>&<cursor>")]
pub async fn list_users(
    state: &State<AppState>,
    _user: AuthUser,
    q: Option<String>,
    limit: Option<&str>,
    cursor: Option<&str>,
) -> ApiResult<Json<UserList>> {
    let limit = pagination::parse_limit(limit)?;
    let after = decode_str_cursor(cursor)?;
    let rows = state
        .db
        .run(move |c| users::search(c, q.as_deref(), after.as_deref(), limit + 1, false).map_err(ApiError::from))
        .await?;
    let (rows, next_cursor) = pagination::split_page(rows, limit, |u| encode_str_cursor(&u.id));
    Ok(Json(UserList { users: rows.iter().map(UserSummary::from).collect(), next_cursor }))
}

// ---------- the caller's own sessions ----------

/// One of the caller's live sessions.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub id: String,
    /// `api` (tokens), `web` (the web UI's cookie) or `admin` (the admin console's cookie).
    pub kind: String,
    pub created_at: String,
    pub expires_at: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The session this request belongs to.
    pub current: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
}

/// The caller's live sessions (devices), newest first.
#[utoipa::path(get, path = "/api/auth/sessions", tag = "auth", responses((status = 200, body = SessionList)))]
#[get("/auth/sessions")]
pub async fn my_sessions(state: &State<AppState>, user: AuthUser) -> ApiResult<Json<SessionList>> {
    use crate::db::schema::{browser_sessions as bs, sessions as st};
    use diesel::prelude::*;
    let (uid, now) = (user.id.clone(), crate::time::now_micros());
    #[allow(clippy::type_complexity)]
    let rows: Vec<(String, i64, i64, Option<String>, Option<String>, Option<String>)> = state
        .db
        .q(move |c| {
            st::table
                .left_join(bs::table.on(bs::session_id.eq(st::id)))
                .filter(st::user_id.eq(&uid))
                .filter(st::revoked_at.is_null())
                .filter(st::expires_at.gt(now))
                .order(st::created_at.desc())
                .limit(200)
                .select((st::id, st::created_at, st::expires_at, st::ip, st::user_agent, bs::kind.nullable()))
                .load(c)
        })
        .await?;
    let sessions = rows
        .into_iter()
        .map(|(id, created, expires, ip, user_agent, kind)| SessionView {
            current: id == user.sid,
            id,
            kind: kind.unwrap_or_else(|| "api".into()),
            created_at: crate::time::micros_to_rfc3339(created),
            expires_at: crate::time::micros_to_rfc3339(expires),
            ip,
            user_agent,
        })
        .collect();
    Ok(Json(SessionList { sessions }))
}

/// Signs one of the caller's sessions out (another device, or this one). 404 when it is not a
/// live session of the caller.
#[utoipa::path(delete, path = "/api/auth/sessions/{id}", tag = "auth", params(("id" = String, Path)),
    responses((status = 204), (status = 404, description = "session_not_found")))]
#[delete("/auth/sessions/<id>")]
pub async fn revoke_my_session(
    state: &State<AppState>,
    client: ClientInfo,
    user: AuthUser,
    id: &str,
) -> ApiResult<Status> {
    use crate::db::schema::sessions as st;
    use diesel::prelude::*;
    let (uid, sid) = (user.id.clone(), id.to_string());
    let n = state
        .db
        .q(move |c| {
            diesel::update(
                st::table.filter(st::id.eq(&sid)).filter(st::user_id.eq(&uid)).filter(st::revoked_at.is_null()),
            )
            .set((st::revoked_at.eq(crate::time::now_micros()), st::revoked_reason.eq("user")))
            .execute(c)
        })
        .await?;
    if n == 0 {
        return Err(ApiError::new(Status::NotFound, "session_not_found", "no such session of yours"));
    }
    state.sessions_revoked(&[id.to_string()]);
    state
        .audit
        .record(
            entry(crate::audit::AuditAction::AuthSessionRevoke, Outcome::Success, &client)
                .actor(Some(user.id.clone()))
                .target("session", id.to_string()),
        )
        .await;
    Ok(Status::NoContent)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserSummaryResponse {
    pub user: UserSummary,
}

/// One user's public card (name and e-mail, as the picker shows them) by id, for any signed-in
/// user: the web UI names the senders of messages with it.
#[utoipa::path(get, path = "/api/auth/users/{id}", tag = "auth", params(("id" = String, Path)),
    responses((status = 200, body = UserSummaryResponse), (status = 404, description = "user_not_found")))]
#[get("/auth/users/<id>")]
pub async fn get_user(state: &State<AppState>, _user: AuthUser, id: &str) -> ApiResult<Json<UserSummaryResponse>> {
    let u = load_user(state, id).await.map_err(|e| {
        if e.status == Status::NotFound {
            ApiError::new(Status::NotFound, "user_not_found", "no such user")
        } else {
            e
        }
    })?;
    Ok(Json(UserSummaryResponse { user: UserSummary::from(&u) }))
}

/// Why a disabled account cannot sign in: `account_suspended` (an automatic response, pending
/// an administrator's review) or `account_disabled`.
pub fn account_refused(user: &users::User) -> ApiError {
    if user.suspended_at.is_some() {
        ApiError::new(
            Status::Forbidden,
            "account_suspended",
            "this account is suspended pending review after a security alert; contact an administrator",
        )
    } else {
        ApiError::new(Status::Forbidden, "account_disabled", "this account is disabled; contact an administrator")
    }
}
