//! The OAuth-provider function table through the C ABI: JSON documents both ways, error kinds
//! kept, and a panic inside the plugin turned into an error at the boundary.

use seccollab_plugin_api::host::{self, Instance};
use seccollab_plugin_api::{
    declare_plugin, AuthorizationRequest, CodeExchange, OAuthError, OAuthIdentity, OAuthProvider,
};

pub struct Fake;

impl Fake {
    fn from_config(cfg: &serde_json::Value) -> Result<Self, String> {
        if cfg["reject"].as_bool() == Some(true) {
            return Err("rejected as asked".into());
        }
        Ok(Fake)
    }
}

impl OAuthProvider for Fake {
    fn name(&self) -> &str {
        "fake"
    }
    fn display_name(&self) -> &str {
        "Fake ID"
    }
    fn authorization_url(&self, r: &AuthorizationRequest) -> Result<String, OAuthError> {
        Ok(format!(
            "https://id.example/auth?state={}&nonce={}&cc={}&ru={}",
            r.state, r.nonce, r.pkce_challenge, r.redirect_uri
        ))
    }
    fn exchange(&self, r: &CodeExchange) -> Result<OAuthIdentity, OAuthError> {
        match r.code.as_str() {
            "down" => Err(OAuthError::Unavailable("provider down".into())),
            "bad" => Err(OAuthError::Refused("invalid_grant".into())),
            "panic" => panic!("exchange exploded"),
            _ => Ok(OAuthIdentity {
                issuer: "https://id.example".into(),
                subject: format!("sub-{}", r.nonce),
                email: Some("ünïcode@example.org".into()),
                email_verified: true,
                name: None,
            }),
        }
    }
}

declare_plugin! {
    kind: OAuthProvider,
    type: Fake,
    name: "fake",
    version: "0.3.0",
    init: Fake::from_config,
    display_name: "Fake ID",
}

#[test]
fn oauth_documents_and_errors_cross_the_abi() {
    let lib = host::from_entry(seccollab_plugin_entry, "in-process").unwrap();
    let e = lib.instantiate(&serde_json::json!({"reject": true})).unwrap_err();
    assert_eq!(e, "rejected as asked");
    let Instance::OAuth(p) = lib.instantiate(&serde_json::json!({})).unwrap() else { panic!("not oauth") };
    assert_eq!(p.display_name(), "Fake ID");
    let url = p
        .authorization_url(&AuthorizationRequest {
            redirect_uri: "https://sc.example/cb".into(),
            state: "S".into(),
            nonce: "N".into(),
            pkce_challenge: "C".into(),
        })
        .unwrap();
    assert_eq!(url, "https://id.example/auth?state=S&nonce=N&cc=C&ru=https://sc.example/cb");
    let x = |code: &str| CodeExchange {
        code: code.into(),
        redirect_uri: "r".into(),
        pkce_verifier: "v".into(),
        nonce: "n1".into(),
    };
    let id = p.exchange(&x("good")).unwrap();
    assert_eq!(
        (id.subject.as_str(), id.email.as_deref(), id.email_verified),
        ("sub-n1", Some("ünïcode@example.org"), true)
    );
    assert_eq!(p.exchange(&x("down")).unwrap_err(), OAuthError::Unavailable("provider down".into()));
    assert_eq!(p.exchange(&x("bad")).unwrap_err(), OAuthError::Refused("invalid_grant".into()));
    match p.exchange(&x("panic")).unwrap_err() {
        OAuthError::Refused(m) => assert!(m.contains("plugin panicked: exchange exploded"), "{m}"),
        other => panic!("{other:?}"),
    }
    // The instance still works after the panic.
    assert!(p.exchange(&x("good")).is_ok());
}
