//! The HTTP boundary shared by every module: error shape, JSON bodies, client identity,
//! pagination, fairings and metrics.

pub mod client;
pub mod error;
pub mod fairings;
pub mod json;
pub mod metrics;
pub mod pagination;

pub use client::ClientInfo;
pub use error::{ApiError, ApiResult};
pub use json::JsonBody;
