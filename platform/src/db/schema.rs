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
    }
}
