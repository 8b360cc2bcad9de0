//! The stable interface SecCollab plugins are written against.
//!
//! Four kinds of plugin exist: scanner, storage backend, notifier and OAuth provider. Their
//! traits and the versioned C-ABI wire under them land with the plugin-system work; this crate
//! exists from day one so that the host and the shipped plugins depend on one interface crate.

/// Version of the plugin ABI. A plugin built for another major version is refused at load.
pub const ABI_VERSION: u32 = 1;

/// The kinds of plugin the host loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PluginKind {
    Scanner,
    Storage,
    Notifier,
    OAuthProvider,
}

impl PluginKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Scanner => "scanner",
            PluginKind::Storage => "storage",
            PluginKind::Notifier => "notifier",
            PluginKind::OAuthProvider => "oauth_provider",
        }
    }
}
