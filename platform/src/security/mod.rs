//! Security policy and sign-in throttling. Scanning, integrity checks, anomaly rules and alerts
//! join this module with their issues.

pub mod policy;
pub mod throttle;

pub use policy::SecurityPolicy;
