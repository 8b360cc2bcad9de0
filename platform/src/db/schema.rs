//! Table definitions shared by both backends (kept in step with `migrations/`).

diesel::table! {
    /// Append-only, hash-chained audit entries. `seq` orders the chain.
    audit_log (seq) {
        seq -> BigInt,
        id -> Text,
        at -> BigInt,
        actor_id -> Nullable<Text>,
        action -> Text,
        target_type -> Nullable<Text>,
        target_id -> Nullable<Text>,
        ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        outcome -> Text,
        details -> Text,
        prev_hash -> Text,
        hash -> Text,
    }
}

diesel::table! {
    /// One row: the newest entry of the chain, so a truncated tail is detected too.
    audit_head (id) {
        id -> Integer,
        seq -> BigInt,
        hash -> Text,
    }
}

diesel::table! {
    /// One row: the last audit head anchored to `audit-anchor.json`, so an anchor file removed
    /// once one existed is noticed (`audit::anchor`).
    audit_anchor_state (id) {
        id -> Integer,
        seq -> BigInt,
        hash -> Text,
        anchored_at -> BigInt,
    }
}

diesel::table! {
    /// SQLite only: the per-actor index of `audit_log` up to `audit_actor_mark.seq`, written in
    /// batches by the audit writer (migration 0014 says why).
    audit_actor (actor_id, seq) {
        actor_id -> Text,
        seq -> BigInt,
    }
}

diesel::table! {
    /// SQLite only: the newest `audit_log.seq` whose actor is in `audit_actor`.
    audit_actor_mark (id) {
        id -> Integer,
        seq -> BigInt,
    }
}

diesel::table! {
    /// People who can sign in. `email` is stored lower-cased.
    users (id) {
        id -> Text,
        email -> Text,
        display_name -> Text,
        password_hash -> Nullable<Text>,
        role -> Text,
        disabled -> Bool,
        mfa_enabled -> Bool,
        created_at -> BigInt,
        updated_at -> BigInt,
        totp_secret_enc -> Nullable<Text>,
        totp_pending_enc -> Nullable<Text>,
        totp_last_step -> Nullable<BigInt>,
        suspended_at -> Nullable<BigInt>,
        suspended_reason -> Nullable<Text>,
    }
}

diesel::table! {
    /// One signed-in device: access tokens carry its id (`sid`) and die with it.
    sessions (id) {
        id -> Text,
        user_id -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
        revoked_reason -> Nullable<Text>,
        ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        reverify_required -> Bool,
        /// The session passed a second factor (TOTP or recovery code) when it was started.
        mfa_passed -> Bool,
    }
}

diesel::table! {
    /// Refresh tokens (keyed hashes); a spent one presented again revokes its session.
    refresh_tokens (token_hash) {
        token_hash -> Text,
        session_id -> Text,
        created_at -> BigInt,
        spent_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// The pending second step of an MFA sign-in (`mfa_token`).
    mfa_challenges (token_hash) {
        token_hash -> Text,
        user_id -> Text,
        expires_at -> BigInt,
        attempts -> Integer,
        used -> Bool,
    }
}

diesel::table! {
    recovery_codes (code_hash) {
        code_hash -> Text,
        user_id -> Text,
        used_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// Single-use, expiring registration invites.
    invites (code_hash) {
        code_hash -> Text,
        created_by -> Text,
        email -> Nullable<Text>,
        created_at -> BigInt,
        expires_at -> BigInt,
        used_at -> Nullable<BigInt>,
        used_by -> Nullable<Text>,
    }
}

diesel::table! {
    /// Failed sign-in counters per account (`acct:<email>`) and per client IP (`ip:<addr>`).
    login_throttle (key) {
        key -> Text,
        failures -> Integer,
        lock_count -> Integer,
        locked_until -> BigInt,
        last_failure_at -> BigInt,
    }
}

diesel::table! {
    /// Uploaded files: metadata only; content lives encrypted in storage under `storage_key`.
    files (id) {
        id -> Text,
        owner_id -> Text,
        name -> Text,
        size -> BigInt,
        mime_type -> Text,
        sha256 -> Text,
        scan_status -> Text,
        integrity -> Text,
        description -> Text,
        storage_key -> Text,
        wrapped_key -> Text,
        key_id -> Text,
        created_at -> BigInt,
        checked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// Who else may see (`view`) or also download (`download`) a file, until `expires_at`.
    file_shares (file_id, user_id) {
        file_id -> Text,
        user_id -> Text,
        permissions -> Text,
        shared_by -> Text,
        expires_at -> Nullable<BigInt>,
        created_at -> BigInt,
    }
}

diesel::table! {
    /// Security alerts raised by integrity checks, scans and (later) anomaly rules.
    security_alerts (id) {
        id -> Text,
        at -> BigInt,
        kind -> Text,
        severity -> Text,
        subject_type -> Nullable<Text>,
        subject_id -> Nullable<Text>,
        details -> Text,
        acked_at -> Nullable<BigInt>,
        acked_by -> Nullable<Text>,
    }
}

diesel::joinable!(file_shares -> files (file_id));
diesel::allow_tables_to_appear_in_same_query!(users, sessions, refresh_tokens, files, file_shares, messages);

diesel::table! {
    /// Direct messages (`receiver_id`) and file discussions (`file_id`); exactly one is set.
    messages (id) {
        id -> Text,
        sender_id -> Text,
        receiver_id -> Nullable<Text>,
        file_id -> Nullable<Text>,
        content -> Text,
        kind -> Text,
        media_file_id -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    /// The last event `seq` handed out per user.
    event_counters (user_id) {
        user_id -> Text,
        last_seq -> BigInt,
    }
}

diesel::table! {
    /// Persisted WebSocket events, per user and `seq`, replayed on `resume`.
    user_events (user_id, seq) {
        user_id -> Text,
        seq -> BigInt,
        name -> Text,
        data -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    /// Meetings; times in microseconds UTC; `sequence` is the iCalendar SEQUENCE.
    schedules (id) {
        id -> Text,
        creator_id -> Text,
        title -> Text,
        description -> Text,
        start_time -> BigInt,
        end_time -> BigInt,
        status -> Text,
        sequence -> BigInt,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    /// Who is invited to a meeting and what they answered.
    schedule_participants (schedule_id, user_id) {
        schedule_id -> Text,
        user_id -> Text,
        status -> Text,
        responded_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// In-app notifications.
    notifications (id) {
        id -> Text,
        user_id -> Text,
        kind -> Text,
        title -> Text,
        body -> Text,
        data -> Text,
        created_at -> BigInt,
        read_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// Per-user notification channels (no row: all on).
    notification_preferences (user_id) {
        user_id -> Text,
        email -> Bool,
        in_app -> Bool,
        updated_at -> BigInt,
    }
}

diesel::table! {
    /// Durable e-mail outbox.
    email_outbox (id) {
        id -> Text,
        message_id -> Text,
        user_id -> Nullable<Text>,
        to_addr -> Text,
        to_name -> Text,
        subject -> Text,
        content -> Text,
        kind -> Text,
        status -> Text,
        attempts -> Integer,
        next_attempt_at -> BigInt,
        claimed_by -> Nullable<Text>,
        claimed_at -> Nullable<BigInt>,
        last_error -> Nullable<Text>,
        created_at -> BigInt,
        sent_at -> Nullable<BigInt>,
    }
}

diesel::joinable!(schedule_participants -> schedules (schedule_id));
diesel::allow_tables_to_appear_in_same_query!(schedules, schedule_participants, users);

diesel::table! {
    /// OAuth/OpenID Connect sign-ins in progress (consumed by the callback).
    oauth_logins (state) {
        state -> Text,
        provider -> Text,
        nonce -> Text,
        pkce_verifier -> Text,
        binding_hash -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
        /// Set when a signed-in user links this provider to their account.
        link_user_id -> Nullable<Text>,
    }
}

diesel::table! {
    /// Accounts linked to a provider identity (`issuer`, `subject`).
    oauth_identities (issuer, subject) {
        issuer -> Text,
        subject -> Text,
        user_id -> Text,
        provider -> Text,
        created_at -> BigInt,
        last_login_at -> BigInt,
    }
}

diesel::joinable!(oauth_identities -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(oauth_identities, users);

diesel::table! {
    /// Browser sessions of the admin console: cookie secret (keyed hash) → `sessions` row.
    browser_sessions (token_hash) {
        token_hash -> Text,
        session_id -> Text,
        kind -> Text,
        csrf_token -> Text,
        created_at -> BigInt,
        last_seen_at -> BigInt,
    }
}

diesel::joinable!(browser_sessions -> sessions (session_id));
diesel::allow_tables_to_appear_in_same_query!(browser_sessions, sessions);
diesel::allow_tables_to_appear_in_same_query!(browser_sessions, users);

diesel::table! {
    /// Who has exchanged direct messages with whom: one row per direction of a pair.
    message_peers (user_id, peer_id) {
        user_id -> Text,
        peer_id -> Text,
    }
}

diesel::table! {
    /// How far each user has read each direct conversation (newest seen message id of the peer).
    message_reads (user_id, peer_id) {
        user_id -> Text,
        peer_id -> Text,
        last_read_id -> Text,
    }
}

diesel::table! {
    /// Blocked source addresses (automatic responses and admins).
    ip_blocks (id) {
        id -> Text,
        ip -> Text,
        reason -> Text,
        alert_id -> Nullable<Text>,
        created_at -> BigInt,
        expires_at -> BigInt,
        lifted_at -> Nullable<BigInt>,
        lifted_by -> Nullable<Text>,
    }
}

diesel::table! {
    /// Shared request counts per budget key and minute (PostgreSQL installations).
    rate_counters (key, window_start) {
        key -> Text,
        window_start -> BigInt,
        count -> BigInt,
    }
}

diesel::table! {
    /// Uploads in flight per user, shared across PostgreSQL nodes (a lease renewed while running).
    upload_slots (id) {
        id -> Text,
        user_id -> Text,
        expires_at -> BigInt,
    }
}

diesel::table! {
    /// Each node's view of the presence of the users it has connections for (PostgreSQL).
    presence (user_id, node_id) {
        user_id -> Text,
        node_id -> Text,
        status -> Text,
        updated_at -> BigInt,
    }
}
