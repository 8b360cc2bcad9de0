//! A scanner plugin that panics on every scan (and in `init` when `panic_in_init` is set):
//! the black-box tests load it to prove a plugin's panic is caught at the boundary, reported,
//! and trips the circuit breaker instead of taking the server down.

use seccollab_plugin_api::{declare_plugin, ScanReport, Scanner};

pub struct Panicky;

impl Panicky {
    fn from_config(cfg: &serde_json::Value) -> Result<Self, String> {
        if cfg["panic_in_init"].as_bool() == Some(true) {
            panic!("panicking in init as configured");
        }
        Ok(Panicky)
    }
}

impl Scanner for Panicky {
    fn name(&self) -> &str {
        "panicky"
    }

    fn scan(&self, _data: &[u8]) -> Result<ScanReport, String> {
        panic!("this scanner always panics");
    }
}

declare_plugin! {
    kind: Scanner,
    type: Panicky,
    name: "panicky",
    version: "0.0.1",
    init: Panicky::from_config,
}
