//! The `oidc` OAuth-provider plugin: sign-in through any OpenID Connect provider found by
//! discovery (`<issuer>/.well-known/openid-configuration`), with a Google preset.
//!
//! The host makes and keeps `state`, `nonce` and the PKCE verifier (bound to the browser) and
//! calls this plugin twice: [`OAuthProvider::authorization_url`] builds the provider's URL
//! (authorization code flow, `openid email profile`, PKCE S256); [`OAuthProvider::exchange`]
//! redeems the code with the verifier and checks the ID token — signature against the
//! provider's keys, issuer, audience (our client id), expiry and that its `nonce` is the one
//! the host bound to this browser — before returning who signed in.
//!
//! Settings (`[plugins.enabled.<name>.settings]`):
//! * `issuer` — the provider's issuer URL, or `preset = "google"` for
//!   `https://accounts.google.com`;
//! * `client_id`, `client_secret` — from the provider's client registration, whose redirect URI
//!   must be `<public_url>/api/auth/callback/<name>`;
//! * `timeout_secs` — for each call to the provider (default 10).
//!
//! Discovery runs on first use and is retried on the next sign-in if the provider was down, so
//! a provider outage at start does not disable the plugin.

use std::sync::Mutex;
use std::time::Duration;

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl,
    Nonce, OAuth2TokenResponse, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use seccollab_plugin_api::{
    declare_plugin, AuthorizationRequest, CodeExchange, OAuthError, OAuthIdentity, OAuthProvider,
};

/// ureq as the OAuth HTTP client, with one difference from the stock adapter: a 4xx/5xx answer
/// is handed back as a response (so the provider's `invalid_grant` for a replayed code is read
/// as a refusal), not turned into a transport error.
pub struct Http(ureq::Agent);

impl openidconnect::SyncHttpClient for Http {
    type Error = openidconnect::HttpClientError<ureq::Error>;

    fn call(&self, request: openidconnect::HttpRequest) -> Result<openidconnect::HttpResponse, Self::Error> {
        use openidconnect::http;
        let uri = request.uri().to_string();
        let mut req = if request.method() == http::Method::POST { self.0.post(&uri) } else { self.0.get(&uri) };
        for (name, value) in request.headers() {
            let v = value
                .to_str()
                .map_err(|_| openidconnect::HttpClientError::Other(format!("invalid `{name}` header value")))?;
            req = req.set(name.as_ref(), v);
        }
        let sent = if request.method() == http::Method::POST { req.send_bytes(request.body()) } else { req.call() };
        let response = match sent {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(openidconnect::HttpClientError::Reqwest(Box::new(e))),
        };
        let mut b = http::Response::builder().status(response.status());
        if let Some(ct) = response.header("content-type") {
            b = b.header(http::header::CONTENT_TYPE, ct);
        }
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut response.into_reader(), &mut body)?;
        Ok(b.body(body)?)
    }
}

type Client =
    CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

pub struct Oidc {
    issuer: IssuerUrl,
    client_id: ClientId,
    client_secret: Option<ClientSecret>,
    http: Http,
    client: Mutex<Option<Client>>,
}

impl Oidc {
    pub fn from_config(cfg: &serde_json::Value) -> Result<Self, String> {
        let issuer = match (cfg["preset"].as_str(), cfg["issuer"].as_str()) {
            (Some("google"), None) => "https://accounts.google.com".to_string(),
            (Some(p), None) => return Err(format!("unknown settings.preset `{p}` (known: google)")),
            (None, Some(i)) => i.to_string(),
            (Some(_), Some(_)) => return Err("set settings.issuer or settings.preset, not both".into()),
            (None, None) => return Err("settings.issuer (or preset = \"google\") is required".into()),
        };
        let issuer = IssuerUrl::new(issuer.clone()).map_err(|e| format!("settings.issuer `{issuer}`: {e}"))?;
        let client_id = cfg["client_id"].as_str().filter(|s| !s.is_empty()).ok_or("settings.client_id is required")?;
        let client_secret =
            cfg["client_secret"].as_str().filter(|s| !s.is_empty()).map(|s| ClientSecret::new(s.into()));
        let timeout = match &cfg["timeout_secs"] {
            serde_json::Value::Null => 10,
            v => v.as_u64().filter(|t| (1..=120).contains(t)).ok_or("settings.timeout_secs must be 1..120")?,
        };
        // No redirects: a provider endpoint that redirects is refused rather than followed
        // (server-side request forgery through discovery documents).
        let http = Http(
            ureq::AgentBuilder::new()
                .redirects(0)
                .timeout(Duration::from_secs(timeout))
                .user_agent(concat!("SecCollab-OIDC/", env!("CARGO_PKG_VERSION")))
                .build(),
        );
        Ok(Oidc { issuer, client_id: ClientId::new(client_id.into()), client_secret, http, client: Mutex::new(None) })
    }

    /// The discovered client, discovering on first use.
    fn client(&self) -> Result<Client, OAuthError> {
        let mut slot = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let meta = CoreProviderMetadata::discover(&self.issuer, &self.http).map_err(|e| {
            OAuthError::Unavailable(format!("discovery at {} failed: {}", self.issuer.as_str(), chain(&e)))
        })?;
        let c = CoreClient::from_provider_metadata(meta, self.client_id.clone(), self.client_secret.clone());
        *slot = Some(c.clone());
        Ok(c)
    }
}

/// An error with its causes, one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl OAuthProvider for Oidc {
    fn name(&self) -> &str {
        "oidc"
    }

    fn display_name(&self) -> &str {
        "OpenID Connect"
    }

    fn authorization_url(&self, req: &AuthorizationRequest) -> Result<String, OAuthError> {
        let redirect = RedirectUrl::new(req.redirect_uri.clone()).map_err(|e| OAuthError::Refused(e.to_string()))?;
        let client = self.client()?.set_redirect_uri(redirect);
        let (state, nonce) = (req.state.clone(), req.nonce.clone());
        let (url, _, _) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state),
                move || Nonce::new(nonce),
            )
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            // The host keeps the verifier; only its S256 challenge travels with the browser.
            .add_extra_param("code_challenge", req.pkce_challenge.clone())
            .add_extra_param("code_challenge_method", "S256")
            .url();
        Ok(url.to_string())
    }

    fn exchange(&self, req: &CodeExchange) -> Result<OAuthIdentity, OAuthError> {
        let redirect = RedirectUrl::new(req.redirect_uri.clone()).map_err(|e| OAuthError::Refused(e.to_string()))?;
        let client = self.client()?.set_redirect_uri(redirect);
        let token = client
            .exchange_code(AuthorizationCode::new(req.code.clone()))
            .map_err(|e| OAuthError::Refused(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(req.pkce_verifier.clone()))
            .request(&self.http)
            .map_err(|e| match e {
                openidconnect::RequestTokenError::ServerResponse(r) => {
                    OAuthError::Refused(format!("the provider refused the code: {}", r.error()))
                }
                other => OAuthError::Unavailable(format!("token request failed: {}", chain(&other))),
            })?;
        let id_token =
            token.id_token().ok_or_else(|| OAuthError::Refused("the provider returned no ID token".into()))?;
        let verifier = client.id_token_verifier();
        let claims = id_token
            .claims(&verifier, &Nonce::new(req.nonce.clone()))
            .map_err(|e| OAuthError::Refused(format!("ID token rejected: {}", chain(&e))))?;
        let mut id = OAuthIdentity {
            issuer: claims.issuer().to_string(),
            subject: claims.subject().to_string(),
            email: claims.email().map(|e| e.to_string()),
            email_verified: claims.email_verified().unwrap_or(false),
            name: claims.name().and_then(|n| n.get(None)).map(|n| n.to_string()),
        };
        // Providers that follow the core spec strictly put e-mail and profile claims only in
        // the UserInfo response when an access token is issued: ask there, for the same `sub`.
        if id.email.is_none() {
            if let Ok(req) = client.user_info(token.access_token().clone(), Some(claims.subject().clone())) {
                let info: openidconnect::core::CoreUserInfoClaims = req
                    .request(&self.http)
                    .map_err(|e| OAuthError::Unavailable(format!("UserInfo request failed: {}", chain(&e))))?;
                id.email = info.email().map(|e| e.to_string());
                id.email_verified = info.email_verified().unwrap_or(false);
                if id.name.is_none() {
                    id.name = info.name().and_then(|n| n.get(None)).map(|n| n.to_string());
                }
            }
        }
        Ok(id)
    }
}

declare_plugin! {
    kind: OAuthProvider,
    type: Oidc,
    name: "oidc",
    version: env!("CARGO_PKG_VERSION"),
    init: Oidc::from_config,
    display_name: "OpenID Connect",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let ok =
            serde_json::json!({"preset": "google", "client_id": "x.apps.googleusercontent.com", "client_secret": "s"});
        assert_eq!(Oidc::from_config(&ok).unwrap().issuer.as_str(), "https://accounts.google.com");
        for (bad, why) in [
            (serde_json::json!({"client_id": "x"}), "issuer"),
            (serde_json::json!({"preset": "yahoo", "client_id": "x"}), "unknown settings.preset"),
            (serde_json::json!({"issuer": "https://a", "preset": "google", "client_id": "x"}), "not both"),
            (serde_json::json!({"issuer": "https://id.example.org"}), "client_id"),
            (serde_json::json!({"issuer": "not a url", "client_id": "x"}), "settings.issuer"),
        ] {
            let e = Oidc::from_config(&bad).err().expect("refused");
            assert!(e.contains(why), "{e}");
        }
    }
}
