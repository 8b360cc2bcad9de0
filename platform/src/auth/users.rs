//! User accounts: creation, listing, disabling.

use diesel::prelude::*;
use serde::Serialize;

use crate::db::schema::users;

diesel::define_sql_function!(fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text);
use crate::db::DbConnection;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{field}: {why}")]
    Invalid { field: &'static str, why: String },
    #[error("a user with this email already exists")]
    EmailTaken,
    #[error("no such user")]
    NotFound,
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

#[derive(Clone, Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = users)]
pub struct User {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub password_hash: Option<String>,
    pub role: String,
    pub disabled: bool,
    pub mfa_enabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub totp_secret_enc: Option<String>,
    pub totp_pending_enc: Option<String>,
    pub totp_last_step: Option<i64>,
    /// Set when an automatic response suspended the account pending review (with `disabled`).
    pub suspended_at: Option<i64>,
    /// The alert rule that suspended it.
    pub suspended_reason: Option<String>,
}

impl User {
    pub fn is_admin(&self) -> bool {
        self.role == "admin"
    }
}

/// A user as the API shows it (never the hash).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub role: String,
    pub mfa_enabled: bool,
    pub disabled: bool,
    /// When the account is suspended pending review: the alert rule that suspended it (the
    /// account is then also `disabled`; `POST /api/admin/users/{id}/enable` reinstates it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspended_by_rule: Option<String>,
    pub created_at: String,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.clone(),
            email: u.email.clone(),
            display_name: u.display_name.clone(),
            role: u.role.clone(),
            mfa_enabled: u.mfa_enabled,
            disabled: u.disabled,
            suspended_by_rule: u.suspended_at.and(u.suspended_reason.clone()),
            created_at: crate::time::micros_to_rfc3339(u.created_at),
        }
    }
}

/// What any signed-in user may see of another (pickers).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct UserSummary {
    pub id: String,
    pub email: String,
    pub display_name: String,
}

impl From<&User> for UserSummary {
    fn from(u: &User) -> Self {
        Self { id: u.id.clone(), email: u.email.clone(), display_name: u.display_name.clone() }
    }
}

pub fn by_id(conn: &mut DbConnection, id: &str) -> Result<User, UserError> {
    users::table.find(id).select(User::as_select()).first(conn).optional()?.ok_or(UserError::NotFound)
}

pub fn by_email(conn: &mut DbConnection, email: &str) -> Result<Option<User>, UserError> {
    Ok(users::table
        .filter(users::email.eq(email.trim().to_lowercase()))
        .select(User::as_select())
        .first(conn)
        .optional()?)
}

/// Users whose email or display name contains `q`, ordered by id, after `after`.
pub fn search(
    conn: &mut DbConnection,
    q: Option<&str>,
    after: Option<&str>,
    limit: i64,
    include_disabled: bool,
) -> Result<Vec<User>, UserError> {
    let mut query = users::table.select(User::as_select()).into_boxed();
    if !include_disabled {
        query = query.filter(users::disabled.eq(false));
    }
    if let Some(q) = q.map(str::trim).filter(|q| !q.is_empty()) {
        let pat = format!("%{}%", q.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        query = query
            .filter(users::email.like(pat.clone()).escape('\\').or(lower(users::display_name).like(pat).escape('\\')));
    }
    if let Some(a) = after {
        query = query.filter(users::id.gt(a.to_string()));
    }
    Ok(query.order(users::id.asc()).limit(limit).load(conn)?)
}

/// Lower-cases and checks an email address (one `@`, something on each side, no spaces).
pub fn normalize_email(email: &str) -> Result<String, UserError> {
    let e = email.trim().to_lowercase();
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.contains('@'))
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(e)
    } else {
        Err(UserError::Invalid { field: "email", why: "is not a valid email address".into() })
    }
}

/// Creates a user whose password (already policy-checked) is hashed by the caller.
pub fn create(
    conn: &mut DbConnection,
    email: &str,
    display_name: &str,
    password_hash: Option<String>,
    role: Role,
) -> Result<User, UserError> {
    let email = normalize_email(email)?;
    let display_name = display_name.trim();
    if display_name.is_empty() || display_name.chars().count() > 100 {
        return Err(UserError::Invalid { field: "display_name", why: "must be 1 to 100 characters".into() });
    }
    let now = crate::time::now_micros();
    let user = User {
        id: uuid::Uuid::now_v7().to_string(),
        email,
        display_name: display_name.to_string(),
        password_hash,
        role: role.as_str().into(),
        disabled: false,
        mfa_enabled: false,
        created_at: now,
        updated_at: now,
        totp_secret_enc: None,
        totp_pending_enc: None,
        totp_last_step: None,
        suspended_at: None,
        suspended_reason: None,
    };
    match diesel::insert_into(users::table).values(&user).execute(conn) {
        Ok(_) => Ok(user),
        Err(diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)) => {
            Err(UserError::EmailTaken)
        }
        Err(e) => Err(e.into()),
    }
}

pub fn list_all(conn: &mut DbConnection) -> Result<Vec<User>, UserError> {
    Ok(users::table.select(User::as_select()).order(users::id.asc()).load(conn)?)
}

/// Finds a user by id or by email.
pub fn find(conn: &mut DbConnection, id_or_email: &str) -> Result<User, UserError> {
    let key = id_or_email.trim().to_lowercase();
    users::table
        .filter(users::id.eq(&key).or(users::email.eq(&key)))
        .select(User::as_select())
        .first(conn)
        .optional()?
        .ok_or(UserError::NotFound)
}

/// Disables or enables an account; enabling also ends a suspension.
pub fn set_disabled(conn: &mut DbConnection, id: &str, disabled: bool) -> Result<(), UserError> {
    let now = crate::time::now_micros();
    let n = if disabled {
        diesel::update(users::table.filter(users::id.eq(id)))
            .set((users::disabled.eq(true), users::updated_at.eq(now)))
            .execute(conn)?
    } else {
        diesel::update(users::table.filter(users::id.eq(id)))
            .set((
                users::disabled.eq(false),
                users::suspended_at.eq(None::<i64>),
                users::suspended_reason.eq(None::<String>),
                users::updated_at.eq(now),
            ))
            .execute(conn)?
    };
    if n == 0 {
        return Err(UserError::NotFound);
    }
    Ok(())
}

/// Suspends an active, non-administrator account pending review (an automatic response);
/// false when it is an administrator, already disabled, or unknown.
pub fn suspend(conn: &mut DbConnection, id: &str, rule: &str) -> diesel::QueryResult<bool> {
    let now = crate::time::now_micros();
    let n = diesel::update(
        users::table.filter(users::id.eq(id)).filter(users::role.ne("admin")).filter(users::disabled.eq(false)),
    )
    .set((
        users::disabled.eq(true),
        users::suspended_at.eq(now),
        users::suspended_reason.eq(rule),
        users::updated_at.eq(now),
    ))
    .execute(conn)?;
    Ok(n == 1)
}

pub fn set_password_hash(conn: &mut DbConnection, id: &str, hash: &str) -> Result<(), UserError> {
    diesel::update(users::table.filter(users::id.eq(id)))
        .set((users::password_hash.eq(hash), users::updated_at.eq(crate::time::now_micros())))
        .execute(conn)?;
    Ok(())
}

/// Stores (or clears) a TOTP secret awaiting its first code.
pub fn set_pending_totp(conn: &mut DbConnection, id: &str, sealed: Option<String>) -> Result<(), UserError> {
    diesel::update(users::table.filter(users::id.eq(id))).set(users::totp_pending_enc.eq(sealed)).execute(conn)?;
    Ok(())
}

/// Makes the pending TOTP secret the active one and turns MFA on.
pub fn activate_pending_totp(conn: &mut DbConnection, id: &str) -> diesel::QueryResult<()> {
    diesel::update(users::table.filter(users::id.eq(id)).filter(users::totp_pending_enc.is_not_null()))
        .set((
            users::totp_secret_enc.eq(users::totp_pending_enc),
            users::totp_pending_enc.eq(None::<String>),
            users::mfa_enabled.eq(true),
            users::updated_at.eq(crate::time::now_micros()),
        ))
        .execute(conn)?;
    Ok(())
}
