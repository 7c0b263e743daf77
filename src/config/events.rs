//! `[events]`: `POST /events/storage`, where Azure Event Grid delivers the Blob Storage events
//! of a system topic (a thumbnail written, copied, renamed or deleted) so that the cache drops
//! what they change at once instead of when its TTL runs out.
//!
//! A delivery proves itself with a shared secret in the URL's `code` query parameter (the URL
//! registered in the event subscription carries it), and/or with the Microsoft Entra ID token
//! Event Grid sends for an Entra-protected webhook (`[events.entra]`). Either one configured
//! credential, valid, lets a delivery in.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use url::Url;

use super::Invalid;
use super::auth::{
    JwtSettings, default_algorithms, default_cache_ttl, default_cooldown, default_leeway,
};
use crate::secret::Secret;

/// The query parameter carrying the shared secret (`?code=`, as Azure Functions name theirs).
pub const SECRET_PARAMETER: &str = "code";
/// The app role Event Grid's service principal is given on the webhook's application by
/// Microsoft's set-up script (its tokens carry it in `roles`).
pub const EVENT_GRID_ROLE: &str = "AzureEventGridSecureWebhookSubscriber";
/// Shortest shared secret accepted: it is the only thing between the internet and the route.
pub const MIN_SECRET_LEN: usize = 16;

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct EventsSettings {
    /// Whether the route answers at all; off, it answers `404 route-not-found` like a path no
    /// route matches.
    pub enabled: bool,
    /// The shared secret a delivery carries in `?code=` (at least 16 characters; redacted).
    pub secret: Option<Secret>,
    /// A file holding the secret, read at start (instead of `secret`).
    pub secret_file: Option<PathBuf>,
    /// Microsoft Entra ID tokens of Event Grid's Entra-protected webhook delivery.
    pub entra: Option<EventsEntraSettings>,
}

/// `[events.entra]`: which tokens Event Grid's deliveries must carry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsEntraSettings {
    /// The application (client) id and/or Application ID URI configured as the event
    /// subscription's "Microsoft Entra Application ID or URI": the tokens' `aud`.
    pub audiences: Vec<String>,
    /// App roles (`roles` claim), any of which a token must carry. Empty: every valid token for
    /// the audience (then limit who can get one).
    #[serde(default = "default_roles")]
    pub roles: Vec<String>,
    /// The tokens' `iss`; unset: `auth.jwt.issuer`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The tenant's signing keys; unset: `auth.jwt.jwks_url`.
    #[serde(default)]
    pub jwks_url: Option<Url>,
}

fn default_roles() -> Vec<String> {
    vec![EVENT_GRID_ROLE.to_owned()]
}

impl EventsSettings {
    /// Checks what serde cannot; `auth_jwt` supplies the issuer and keys `[events.entra]` leaves
    /// out.
    pub fn validate(&self, auth_jwt: Option<&JwtSettings>) -> Result<(), Invalid> {
        if let Some(secret) = &self.secret
            && secret.expose().chars().count() < MIN_SECRET_LEN
        {
            return Err(Invalid::new(
                "events.secret",
                format!("must be at least {MIN_SECRET_LEN} characters"),
            ));
        }
        if let Some(entra) = &self.entra {
            if entra.audiences.is_empty() || entra.audiences.iter().any(|a| a.trim().is_empty()) {
                return Err(Invalid::new(
                    "events.entra.audiences",
                    "needs at least one non-empty audience",
                ));
            }
            if entra.issuer.is_none() && auth_jwt.is_none() {
                return Err(Invalid::new(
                    "events.entra.issuer",
                    "is required when auth.jwt is not set",
                ));
            }
            if entra.jwks_url.is_none() && auth_jwt.is_none() {
                return Err(Invalid::new(
                    "events.entra.jwks_url",
                    "is required when auth.jwt is not set",
                ));
            }
            if let Some(jwt) = self.jwt_settings(auth_jwt) {
                jwt.validate("events.entra")?;
            }
        }
        if self.enabled && self.secret.is_none() && self.entra.is_none() {
            return Err(Invalid::new(
                "events",
                "is enabled without a credential: set events.secret (or events.secret_file) \
                 and/or [events.entra]",
            ));
        }
        Ok(())
    }

    /// The token checks of `[events.entra]` in the form the JWT validator takes: its audiences,
    /// its roles as the one role a delivery needs (`api_roles`), the issuer and keys (and the
    /// algorithms, leeway and key caching) of `auth.jwt` where it leaves them out.
    pub fn jwt_settings(&self, auth_jwt: Option<&JwtSettings>) -> Option<JwtSettings> {
        let entra = self.entra.as_ref()?;
        let issuer = entra
            .issuer
            .clone()
            .or_else(|| auth_jwt.map(|j| j.issuer.clone()))?;
        let jwks_url = entra
            .jwks_url
            .clone()
            .or_else(|| auth_jwt.map(|j| j.jwks_url.clone()))?;
        Some(JwtSettings {
            issuer,
            audiences: entra.audiences.clone(),
            jwks_url,
            algorithms: auth_jwt.map_or_else(default_algorithms, |j| j.algorithms.clone()),
            leeway: auth_jwt.map_or_else(default_leeway, |j| j.leeway),
            api_roles: entra.roles.clone(),
            admin_roles: Vec::new(),
            ops_roles: Vec::new(),
            jwks_refresh_cooldown: auth_jwt
                .map_or_else(default_cooldown, |j| j.jwks_refresh_cooldown),
            jwks_cache_ttl: auth_jwt.map_or_else(default_cache_ttl, |j| j.jwks_cache_ttl),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::{Format, Toml};

    fn parse(text: &str) -> EventsSettings {
        figment::Figment::from(Toml::string(text))
            .extract()
            .expect("valid settings")
    }

    #[test]
    fn off_by_default_and_on_only_with_a_credential() {
        let off = EventsSettings::default();
        assert!(!off.enabled);
        assert!(off.validate(None).is_ok());
        let bare = parse("enabled = true\n");
        assert_eq!(bare.validate(None).unwrap_err().key, "events");
        let short = parse("enabled = true\nsecret = \"too-short\"\n");
        assert_eq!(short.validate(None).unwrap_err().key, "events.secret");
        let good = parse("enabled = true\nsecret = \"0123456789abcdef\"\n");
        assert!(good.validate(None).is_ok());
        assert!(!format!("{good:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn entra_takes_the_tenant_from_auth_jwt_or_its_own_keys() {
        let entra = parse("enabled = true\n[entra]\naudiences = [\"api://thumbs-events\"]\n");
        assert_eq!(entra.validate(None).unwrap_err().key, "events.entra.issuer");
        let auth: JwtSettings = figment::Figment::from(Toml::string(
            "issuer = \"https://login.microsoftonline.com/t/v2.0\"\naudiences = [\"api://x\"]\n\
             jwks_url = \"https://login.microsoftonline.com/t/discovery/v2.0/keys\"\n\
             leeway = \"5s\"\n",
        ))
        .extract()
        .unwrap();
        assert!(entra.validate(Some(&auth)).is_ok());
        let jwt = entra.jwt_settings(Some(&auth)).unwrap();
        assert_eq!(jwt.audiences, ["api://thumbs-events"]);
        assert_eq!(jwt.issuer, auth.issuer);
        assert_eq!(jwt.leeway, std::time::Duration::from_secs(5));
        assert_eq!(jwt.api_roles, [EVENT_GRID_ROLE]);
        assert!(jwt.admin_roles.is_empty() && jwt.ops_roles.is_empty());

        let own = parse(
            "enabled = true\n[entra]\naudiences = [\"a\"]\nroles = []\n\
             issuer = \"https://login.microsoftonline.com/t/v2.0\"\n\
             jwks_url = \"http://insecure/keys\"\n",
        );
        assert_eq!(own.validate(None).unwrap_err().key, "events.entra.jwks_url");
    }
}
