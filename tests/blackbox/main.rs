//! Black-box suite: the real `seccollab` binary over HTTP and its CLI, on SQLite and PostgreSQL.
//! One test binary on purpose (each links the whole dependency tree).

mod harness;

mod abuse;
mod access;
mod admin_console;
mod audit_chain;
mod auth;
mod backup;
mod browser;
mod cli;
mod files;
mod http_surface;
mod monitoring;
mod oidc;
mod packaging;
mod plugins;
mod realtime;
mod schedules;
mod security_depth;
mod web_ui;
mod webdriver;
