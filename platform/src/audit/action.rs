//! The audit log's action names, as one type: an action is written and matched (anomaly
//! rules, filters, the console) by these names only, so a typo is a compile error.
//!
//! The names are part of the audit log's contract (exports, SIEM): never rename one.

/// What an audit entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditAction {
    /// `auth.login`
    AuthLogin,
    /// `auth.mfa`
    AuthMfa,
    /// `file.download`
    FileDownload,
    /// `file.upload`
    FileUpload,
    /// `auth.mfa_enable`
    AuthMfaEnable,
    /// `admin.console_login`
    AdminConsoleLogin,
    /// `file.share`
    FileShare,
    /// `security.refresh_token_reuse`
    SecurityRefreshTokenReuse,
    /// `security.ip_unblock`
    SecurityIpUnblock,
    /// `file.scan`
    FileScan,
    /// `auth.reverify`
    AuthReverify,
    /// `auth.register`
    AuthRegister,
    /// `auth.mfa_setup`
    AuthMfaSetup,
    /// `auth.mfa_disable`
    AuthMfaDisable,
    /// `auth.logout`
    AuthLogout,
    /// `user.enable`
    UserEnable,
    /// `user.disable`
    UserDisable,
    /// `user.create`
    UserCreate,
    /// `system.stop`
    SystemStop,
    /// `system.start`
    SystemStart,
    /// `system.restore`
    SystemRestore,
    /// `system.backup`
    SystemBackup,
    /// `security.response`
    SecurityResponse,
    /// `security.integrity_compromised`
    SecurityIntegrityCompromised,
    /// `security.account_locked`
    SecurityAccountLocked,
    /// `schedule.update`
    ScheduleUpdate,
    /// `schedule.respond`
    ScheduleRespond,
    /// `schedule.create`
    ScheduleCreate,
    /// `schedule.cancel`
    ScheduleCancel,
    /// `file.unshare`
    FileUnshare,
    /// `file.integrity_check`
    FileIntegrityCheck,
    /// `file.delete`
    FileDelete,
    /// `auth.session_revoke`
    AuthSessionRevoke,
    /// `auth.reauth`
    AuthReauth,
    /// `auth.password_change`
    AuthPasswordChange,
    /// `auth.oidc_link`
    AuthOidcLink,
    /// `auth.oidc_start`
    AuthOidcStart,
    /// `admin.user_unlock`
    AdminUserUnlock,
    /// `admin.user_reset_mfa`
    AdminUserResetMfa,
    /// `admin.user_enable`
    AdminUserEnable,
    /// `admin.user_disable`
    AdminUserDisable,
    /// `admin.user_create`
    AdminUserCreate,
    /// `admin.user_clear_reverify`
    AdminUserClearReverify,
    /// `admin.session_revoke`
    AdminSessionRevoke,
    /// `admin.scanner_reload`
    AdminScannerReload,
    /// `admin.invite_create`
    AdminInviteCreate,
    /// `admin.file_release`
    AdminFileRelease,
    /// `admin.file_delete`
    AdminFileDelete,
    /// `admin.console_logout`
    AdminConsoleLogout,
    /// `admin.alert_ack`
    AdminAlertAck,
    /// `audit.anchor_reset`
    AuditAnchorReset,
    /// `security.audit_anchor_mismatch`
    SecurityAuditAnchorMismatch,
    /// `storage.orphans_moved`
    StorageOrphansMoved,
    /// `storage.orphans_held`
    StorageOrphansHeld,
    /// `keys.rotate`
    KeysRotate,
    /// `notification.delivery_failed`
    NotificationDeliveryFailed,
    /// `ws.send_message`
    WsSendMessage,
    /// `http.request`
    HttpRequest,
    /// `notification.preferences`
    NotificationPreferences,
    /// `notification.email_retry`
    NotificationEmailRetry,
}

impl AuditAction {
    /// Every action, for listings and tests.
    pub const ALL: &'static [AuditAction] = &[
        AuditAction::AuthLogin,
        AuditAction::AuthMfa,
        AuditAction::FileDownload,
        AuditAction::FileUpload,
        AuditAction::AuthMfaEnable,
        AuditAction::AdminConsoleLogin,
        AuditAction::FileShare,
        AuditAction::SecurityRefreshTokenReuse,
        AuditAction::SecurityIpUnblock,
        AuditAction::FileScan,
        AuditAction::AuthReverify,
        AuditAction::AuthRegister,
        AuditAction::AuthMfaSetup,
        AuditAction::AuthMfaDisable,
        AuditAction::AuthLogout,
        AuditAction::UserEnable,
        AuditAction::UserDisable,
        AuditAction::UserCreate,
        AuditAction::SystemStop,
        AuditAction::SystemStart,
        AuditAction::SystemRestore,
        AuditAction::SystemBackup,
        AuditAction::SecurityResponse,
        AuditAction::SecurityIntegrityCompromised,
        AuditAction::SecurityAccountLocked,
        AuditAction::ScheduleUpdate,
        AuditAction::ScheduleRespond,
        AuditAction::ScheduleCreate,
        AuditAction::ScheduleCancel,
        AuditAction::FileUnshare,
        AuditAction::FileIntegrityCheck,
        AuditAction::FileDelete,
        AuditAction::AuthSessionRevoke,
        AuditAction::AuthReauth,
        AuditAction::AuthPasswordChange,
        AuditAction::AuthOidcLink,
        AuditAction::AuthOidcStart,
        AuditAction::AdminUserUnlock,
        AuditAction::AdminUserResetMfa,
        AuditAction::AdminUserEnable,
        AuditAction::AdminUserDisable,
        AuditAction::AdminUserCreate,
        AuditAction::AdminUserClearReverify,
        AuditAction::AdminSessionRevoke,
        AuditAction::AdminScannerReload,
        AuditAction::AdminInviteCreate,
        AuditAction::AdminFileRelease,
        AuditAction::AdminFileDelete,
        AuditAction::AdminConsoleLogout,
        AuditAction::AdminAlertAck,
        AuditAction::AuditAnchorReset,
        AuditAction::SecurityAuditAnchorMismatch,
        AuditAction::StorageOrphansMoved,
        AuditAction::StorageOrphansHeld,
        AuditAction::KeysRotate,
        AuditAction::NotificationDeliveryFailed,
        AuditAction::WsSendMessage,
        AuditAction::HttpRequest,
        AuditAction::NotificationPreferences,
        AuditAction::NotificationEmailRetry,
    ];

    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            AuditAction::AuthLogin => "auth.login",
            AuditAction::AuthMfa => "auth.mfa",
            AuditAction::FileDownload => "file.download",
            AuditAction::FileUpload => "file.upload",
            AuditAction::AuthMfaEnable => "auth.mfa_enable",
            AuditAction::AdminConsoleLogin => "admin.console_login",
            AuditAction::FileShare => "file.share",
            AuditAction::SecurityRefreshTokenReuse => "security.refresh_token_reuse",
            AuditAction::SecurityIpUnblock => "security.ip_unblock",
            AuditAction::FileScan => "file.scan",
            AuditAction::AuthReverify => "auth.reverify",
            AuditAction::AuthRegister => "auth.register",
            AuditAction::AuthMfaSetup => "auth.mfa_setup",
            AuditAction::AuthMfaDisable => "auth.mfa_disable",
            AuditAction::AuthLogout => "auth.logout",
            AuditAction::UserEnable => "user.enable",
            AuditAction::UserDisable => "user.disable",
            AuditAction::UserCreate => "user.create",
            AuditAction::SystemStop => "system.stop",
            AuditAction::SystemStart => "system.start",
            AuditAction::SystemRestore => "system.restore",
            AuditAction::SystemBackup => "system.backup",
            AuditAction::SecurityResponse => "security.response",
            AuditAction::SecurityIntegrityCompromised => "security.integrity_compromised",
            AuditAction::SecurityAccountLocked => "security.account_locked",
            AuditAction::ScheduleUpdate => "schedule.update",
            AuditAction::ScheduleRespond => "schedule.respond",
            AuditAction::ScheduleCreate => "schedule.create",
            AuditAction::ScheduleCancel => "schedule.cancel",
            AuditAction::FileUnshare => "file.unshare",
            AuditAction::FileIntegrityCheck => "file.integrity_check",
            AuditAction::FileDelete => "file.delete",
            AuditAction::AuthSessionRevoke => "auth.session_revoke",
            AuditAction::AuthReauth => "auth.reauth",
            AuditAction::AuthPasswordChange => "auth.password_change",
            AuditAction::AuthOidcLink => "auth.oidc_link",
            AuditAction::AuthOidcStart => "auth.oidc_start",
            AuditAction::AdminUserUnlock => "admin.user_unlock",
            AuditAction::AdminUserResetMfa => "admin.user_reset_mfa",
            AuditAction::AdminUserEnable => "admin.user_enable",
            AuditAction::AdminUserDisable => "admin.user_disable",
            AuditAction::AdminUserCreate => "admin.user_create",
            AuditAction::AdminUserClearReverify => "admin.user_clear_reverify",
            AuditAction::AdminSessionRevoke => "admin.session_revoke",
            AuditAction::AdminScannerReload => "admin.scanner_reload",
            AuditAction::AdminInviteCreate => "admin.invite_create",
            AuditAction::AdminFileRelease => "admin.file_release",
            AuditAction::AdminFileDelete => "admin.file_delete",
            AuditAction::AdminConsoleLogout => "admin.console_logout",
            AuditAction::AdminAlertAck => "admin.alert_ack",
            AuditAction::AuditAnchorReset => "audit.anchor_reset",
            AuditAction::SecurityAuditAnchorMismatch => "security.audit_anchor_mismatch",
            AuditAction::StorageOrphansMoved => "storage.orphans_moved",
            AuditAction::StorageOrphansHeld => "storage.orphans_held",
            AuditAction::KeysRotate => "keys.rotate",
            AuditAction::NotificationDeliveryFailed => "notification.delivery_failed",
            AuditAction::WsSendMessage => "ws.send_message",
            AuditAction::HttpRequest => "http.request",
            AuditAction::NotificationPreferences => "notification.preferences",
            AuditAction::NotificationEmailRetry => "notification.email_retry",
        }
    }

    /// The action of a stored name, if it is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|a| a.as_str() == name)
    }
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<AuditAction> for String {
    fn from(a: AuditAction) -> String {
        a.as_str().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_parse_back() {
        let mut seen = std::collections::HashSet::new();
        for a in AuditAction::ALL {
            assert!(seen.insert(a.as_str()), "{a} twice");
            assert_eq!(AuditAction::parse(a.as_str()), Some(*a));
        }
        assert_eq!(AuditAction::parse("auth.nope"), None);
    }
}
