//! `[auth]` and `[rate_limit]`: who may call which route group, with API keys or Entra ID
//! tokens, and how often.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use super::Invalid;

/// How a route group is protected.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// Anyone may call.
    #[default]
    None,
    /// An API key with the group's role (`x-api-key` or `Authorization: Bearer`).
    ApiKey,
}

/// What a key may do.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The asset routes (`/assets/...`, batch).
    Api,
    /// Cache invalidation (always needs a key with this role).
    Admin,
    /// `/readyz` and `/metrics` when `auth.ops = "api-key"`.
    Ops,
}

/// An API key, stored as the SHA-256 of the key (hex): the key itself is never configured.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySettings {
    /// Who holds it (logged and used as the rate-limit identity; never the key).
    pub name: String,
    /// `sha256sum` of the key, 64 hex digits. Several keys may be active (rotation).
    pub sha256: String,
    pub roles: Vec<Role>,
}

impl ApiKeySettings {
    /// The SHA-256 as bytes, when it is 64 hex digits.
    pub fn digest(&self) -> Option<[u8; 32]> {
        let hex = self.sha256.as_bytes();
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            let pair = std::str::from_utf8(&hex[2 * i..2 * i + 2]).ok()?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(out)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// The asset routes.
    pub api: AuthMode,
    /// `/readyz` and `/metrics` (`/healthz` is always open).
    pub ops: AuthMode,
    pub api_keys: Vec<ApiKeySettings>,
    /// Entra ID bearer tokens accepted beside the API keys; unset: API keys only. With it,
    /// `api-key` on a group means "an API key or a token with the group's role".
    pub jwt: Option<JwtSettings>,
    /// Start even though signed URLs are handed out to anyone who asks (no `auth.api`).
    pub allow_anonymous_signed_urls: bool,
}

impl AuthSettings {
    pub fn validate(&self) -> Result<(), Invalid> {
        for (i, key) in self.api_keys.iter().enumerate() {
            if key.digest().is_none() {
                return Err(Invalid::new(
                    format!("auth.api_keys[{i}].sha256"),
                    "must be the SHA-256 of the key as 64 hex digits (`printf %s KEY | sha256sum`)",
                ));
            }
            if key.name.trim().is_empty() || key.roles.is_empty() {
                return Err(Invalid::new(
                    format!("auth.api_keys[{i}]"),
                    "needs a name and at least one role",
                ));
            }
        }
        if let Some(jwt) = &self.jwt {
            jwt.validate("auth.jwt")?;
        }
        for (mode, role, key) in [
            (self.api, Role::Api, "auth.api"),
            (self.ops, Role::Ops, "auth.ops"),
        ] {
            if mode == AuthMode::ApiKey
                && !self.api_keys.iter().any(|k| k.roles.contains(&role))
                && !self.jwt.as_ref().is_some_and(|jwt| jwt.grants(role))
            {
                return Err(Invalid::new(
                    key,
                    format!(
                        "is \"api-key\" but no key in auth.api_keys has the role {role:?} \
                         (nor does auth.jwt grant it)"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `[auth.jwt]`: which Entra ID tokens are accepted, and what they may do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    /// The `iss` every token must carry, e.g. `https://login.microsoftonline.com/{tenant}/v2.0`
    /// (v2.0 tokens; v1.0 tokens say `https://sts.windows.net/{tenant}/`).
    pub issuer: String,
    /// Accepted `aud` values (any of): the API's application (client) id and/or its
    /// Application ID URI (`api://...`).
    pub audiences: Vec<String>,
    /// The tenant's signing keys, e.g.
    /// `https://login.microsoftonline.com/{tenant}/discovery/v2.0/keys`.
    pub jwks_url: Url,
    /// Accepted signature algorithms (Entra ID signs with RS256).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<JwtAlgorithm>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// App roles (`roles` claim) or delegated scopes (`scp` claim) granting the `api` role.
    /// Empty: every valid token for the audience may call the asset routes (then limit who can
    /// get one, e.g. "Assignment required" on the enterprise application).
    #[serde(default)]
    pub api_roles: Vec<String>,
    /// App roles or scopes granting the `admin` role (cache invalidation). Empty: none.
    #[serde(default)]
    pub admin_roles: Vec<String>,
    /// App roles or scopes granting the `ops` role (`/readyz`, `/metrics`). Empty: none.
    #[serde(default)]
    pub ops_roles: Vec<String>,
    /// Least time between two JWKS fetches made for an unknown `kid` (or after a failure).
    #[serde(default = "default_cooldown", with = "humantime_serde")]
    pub jwks_refresh_cooldown: Duration,
    /// How long fetched keys are used before the JWKS is fetched again.
    #[serde(default = "default_cache_ttl", with = "humantime_serde")]
    pub jwks_cache_ttl: Duration,
}

pub(super) fn default_algorithms() -> Vec<JwtAlgorithm> {
    vec![JwtAlgorithm::Rs256]
}

pub(super) fn default_leeway() -> Duration {
    Duration::from_secs(60)
}

pub(super) fn default_cooldown() -> Duration {
    Duration::from_secs(300)
}

pub(super) fn default_cache_ttl() -> Duration {
    Duration::from_secs(3600)
}

impl JwtSettings {
    /// Checks what serde cannot; `prefix` is the settings key (`auth.jwt`) for messages.
    pub fn validate(&self, prefix: &str) -> Result<(), Invalid> {
        let err = |key: &str, message: &str| Err(Invalid::new(format!("{prefix}.{key}"), message));
        if self.issuer.trim().is_empty() {
            return err("issuer", "must not be empty");
        }
        if self.audiences.is_empty() || self.audiences.iter().any(|a| a.trim().is_empty()) {
            return err("audiences", "needs at least one non-empty audience");
        }
        if self.jwks_url.scheme() != "https" {
            return err("jwks_url", "must be https");
        }
        if self.algorithms.is_empty() {
            return err("algorithms", "needs at least one algorithm");
        }
        if self.jwks_cache_ttl.is_zero() {
            return err("jwks_cache_ttl", "must be positive");
        }
        Ok(())
    }

    /// Whether some token can hold `role` (for the start-up check that a group requiring a
    /// credential can be reached at all).
    pub fn grants(&self, role: Role) -> bool {
        match role {
            Role::Api => true,
            Role::Admin => !self.admin_roles.is_empty(),
            Role::Ops => !self.ops_roles.is_empty(),
        }
    }

    /// The roles a token's app roles and scopes grant (empty `api_roles`: `api` for all).
    pub fn roles_for(&self, granted: &[&str]) -> Vec<Role> {
        let mut roles = Vec::new();
        for (role, names) in [
            (Role::Api, &self.api_roles),
            (Role::Admin, &self.admin_roles),
            (Role::Ops, &self.ops_roles),
        ] {
            let open = role == Role::Api && names.is_empty();
            if open || names.iter().any(|n| granted.contains(&n.as_str())) {
                roles.push(role);
            }
        }
        roles
    }
}

/// Signature algorithms a JWKS key may be used with (no HMAC: the keys are public).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    #[serde(rename = "RS256")]
    Rs256,
    #[serde(rename = "RS384")]
    Rs384,
    #[serde(rename = "RS512")]
    Rs512,
    #[serde(rename = "PS256")]
    Ps256,
    #[serde(rename = "PS384")]
    Ps384,
    #[serde(rename = "PS512")]
    Ps512,
    #[serde(rename = "ES256")]
    Es256,
    #[serde(rename = "ES384")]
    Es384,
}

/// `[rate_limit]`: requests per client identity (API key, token subject, else IP address).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// Sustained requests per second per client identity; 0 turns limiting off. A batch counts
    /// as many requests as it has distinct ids.
    pub requests_per_second: f64,
    /// Requests a client may make in a burst above the sustained rate.
    pub burst: u32,
    /// Failed authentications (`401`) per minute per client address, sustained; past them and
    /// [`Self::auth_failure_burst`], the address gets `429` on every route that checks
    /// credentials, before any credential is checked. 0 turns it off. On independently of
    /// `requests_per_second`.
    pub auth_failures_per_minute: f64,
    /// Failed authentications an address may make in a burst.
    pub auth_failure_burst: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            requests_per_second: 0.0,
            burst: 100,
            auth_failures_per_minute: 30.0,
            auth_failure_burst: 20,
        }
    }
}

impl RateLimitSettings {
    pub fn validate(&self) -> Result<(), Invalid> {
        if !(self.requests_per_second >= 0.0 && self.requests_per_second.is_finite()) {
            return Err(Invalid::new(
                "rate_limit.requests_per_second",
                "must be 0 (off) or a positive number",
            ));
        }
        if !(self.auth_failures_per_minute >= 0.0 && self.auth_failures_per_minute.is_finite()) {
            return Err(Invalid::new(
                "rate_limit.auth_failures_per_minute",
                "must be 0 (off) or a positive number",
            ));
        }
        if self.auth_failures_per_minute > 0.0 && self.auth_failure_burst == 0 {
            return Err(Invalid::new(
                "rate_limit.auth_failure_burst",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::{Format, Toml};

    fn settings(api_roles: &[&str]) -> JwtSettings {
        toml_settings(&format!(
            "issuer = \"https://login.microsoftonline.com/t/v2.0\"\naudiences = [\"api://x\"]\n\
             jwks_url = \"https://login.microsoftonline.com/t/discovery/v2.0/keys\"\n\
             api_roles = {api_roles:?}\nadmin_roles = [\"Thumbnails.Admin\"]\n"
        ))
    }

    fn toml_settings(text: &str) -> JwtSettings {
        figment::Figment::from(Toml::string(text))
            .extract()
            .expect("valid settings")
    }

    #[test]
    fn jwt_defaults_and_roles() {
        let s = settings(&["Thumbnails.Read"]);
        assert_eq!(s.algorithms, vec![JwtAlgorithm::Rs256]);
        assert_eq!(s.leeway, Duration::from_secs(60));
        assert_eq!(s.jwks_refresh_cooldown, Duration::from_secs(300));
        assert_eq!(s.jwks_cache_ttl, Duration::from_secs(3600));
        assert!(s.validate("auth.jwt").is_ok());
        assert_eq!(s.roles_for(&["Thumbnails.Read"]), vec![Role::Api]);
        assert_eq!(
            s.roles_for(&["Thumbnails.Read", "Thumbnails.Admin"]),
            vec![Role::Api, Role::Admin]
        );
        assert!(s.roles_for(&["Other"]).is_empty());
        // No api_roles: every valid token may call the API, but admin still needs its role.
        assert_eq!(settings(&[]).roles_for(&[]), vec![Role::Api]);
        assert!(s.grants(Role::Api) && s.grants(Role::Admin) && !s.grants(Role::Ops));
    }

    #[test]
    fn jwt_settings_are_checked() {
        let http = "issuer = \"i\"\naudiences = [\"a\"]\njwks_url = \"http://x/keys\"\n";
        assert_eq!(
            toml_settings(http).validate("auth.jwt").unwrap_err().key,
            "auth.jwt.jwks_url"
        );
        let hmac = format!("{http}algorithms = [\"HS256\"]\n");
        assert!(
            figment::Figment::from(Toml::string(&hmac))
                .extract::<JwtSettings>()
                .is_err(),
            "HMAC is not an accepted algorithm"
        );
        let unknown = format!("{http}audience = \"a\"\n");
        assert!(
            figment::Figment::from(Toml::string(&unknown))
                .extract::<JwtSettings>()
                .is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn key_digests() {
        let key = |sha256: &str| ApiKeySettings {
            name: "k".into(),
            sha256: sha256.into(),
            roles: vec![Role::Api],
        };
        let hex = "ab".repeat(32);
        assert_eq!(key(&hex).digest(), Some([0xab; 32]));
        assert_eq!(key(&"ab".repeat(31)).digest(), None);
        assert_eq!(key(&format!("{}zz", "ab".repeat(31))).digest(), None);
        // Multi-byte characters never split a pair.
        assert_eq!(key(&format!("{}é", "a".repeat(62))).digest(), None);
    }
}
