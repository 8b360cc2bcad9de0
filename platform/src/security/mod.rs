//! Security policy and sign-in throttling. Scanning, integrity checks, anomaly rules and alerts
//! join this module with their issues.

pub mod alerts;
pub mod anomaly;
pub mod policy;
pub mod ratelimit;
pub mod responses;
pub mod scan;
pub mod scan_routes;
pub mod throttle;

pub use policy::SecurityPolicy;
