//! Typed settings: built-in defaults <- TOML file <- `AMS_THUMBNAILS_*` environment variables.
//!
//! One file per section holds its type and the checks of its values; this file only assembles
//! them (figment layers, secret files) and runs the checks that span sections. Configuration
//! sits below every service module: it imports none of them (a test in `tests/it` fails when
//! it does), and what needs building to be checked (patterns, clients, credentials) is built
//! once, when `server::compose` puts the service together.
//!
//! Every field has a default so that an empty file (or none) yields a service that runs on the
//! bundled sample library. Unknown keys are rejected so that a typo fails start-up instead of
//! being silently ignored.

mod api;
mod auth;
mod azure;
mod cache;
mod cidr;
mod error;
mod events;
mod jobs;
mod layers;
mod log;
mod metrics;
mod recognition;
mod server;
mod source;
mod upstream;

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use self::metrics::MetricsSettings;
pub use api::{ApiSettings, BenchSettings};
pub use auth::{
    ApiKeySettings, AuthMode, AuthSettings, JwtAlgorithm, JwtSettings, RateLimitSettings, Role,
};
pub use azure::{
    CredentialSettings, LinkMode, LinkSettings, MAX_AGE_PLACEHOLDER, MAX_KEY_AHEAD, StorageAuth,
    StorageSettings, uses_ams_container_sas,
};
pub use cache::{CacheSettings, MAX_URL_LIFETIME, SharedCacheSettings};
pub use cidr::Cidr;
pub use error::{ConfigError, Invalid};
pub use events::{
    EVENT_GRID_ROLE, EventsEntraSettings, EventsSettings, MIN_SECRET_LEN, SECRET_PARAMETER,
};
pub use jobs::{EncoderChoice, GenerateDefaults, JobSettings};
pub use log::{LogFormat, LogSettings};
pub use recognition::{LayerSize, RecognitionSettings, Timing};
pub use server::ServerSettings;
pub use source::{
    AmsSourceSettings, LocalSourceSettings, MkioSourceSettings, SourceSettings,
    StorageSourceSettings, is_bearer_token,
};
pub use upstream::UpstreamSettings;

use crate::secret::Secret;

/// Prefix of the environment variables that override the file; `__` separates nesting levels.
pub const ENV_PREFIX: &str = "AMS_THUMBNAILS_";
/// Environment variable naming the configuration file (the `--config` flag wins over it).
pub const CONFIG_PATH_ENV: &str = "AMS_THUMBNAILS_CONFIG";
/// The file read when neither `--config` nor `AMS_THUMBNAILS_CONFIG` names one (if it exists).
pub const DEFAULT_CONFIG_PATH: &str = "config/default.toml";
/// `--config none` / `AMS_THUMBNAILS_CONFIG=none`: no file, only defaults and the environment.
pub const NO_FILE: &str = "none";

/// `source.kind` as a TOML file sets it (lower-case), if it does.
fn source_kind_in(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let value: toml::Table = text.parse().ok()?;
    let kind = value.get("source")?.get("kind")?.as_str()?;
    Some(kind.to_ascii_lowercase())
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    /// What the HTTP API offers browsers and batch callers.
    pub api: ApiSettings,
    /// Who may call which routes.
    pub auth: AuthSettings,
    /// Requests per client identity (API key, else IP address).
    pub rate_limit: RateLimitSettings,
    pub log: LogSettings,
    /// Where Prometheus scrapes `/metrics` (a second listener, when set).
    pub metrics: MetricsSettings,
    pub cache: CacheSettings,
    pub recognition: RecognitionSettings,
    pub source: SourceSettings,
    /// How to reach and authenticate to Blob Storage (sources other than `local`).
    pub storage: StorageSettings,
    /// What kind of URL clients get (sources other than `local`).
    pub links: LinkSettings,
    /// The Entra ID credential, shared by every Azure client (ARM, `storage.auth = "entra"`,
    /// user delegation SAS); `default` (the chain) when unset and one of those needs it.
    pub credential: Option<CredentialSettings>,
    /// Timeouts, retries and trust for every outbound call.
    pub upstream: UpstreamSettings,
    /// Thumbnail generation through the backend's encoder (sources `ams` and `mkio`).
    pub jobs: JobSettings,
    /// Benchmark aids (bench/run); off by default.
    pub bench: BenchSettings,
    /// `POST /events/storage`: Event Grid deliveries of Blob Storage events; off by default.
    pub events: EventsSettings,
}

/// Built-in defaults as a figment layer. `source` is left out: its variant is chosen by
/// `source.kind`, and the default variant's fields must not leak into another kind (serde's
/// default supplies the local source when no layer names one).
fn defaults() -> serde_json::Value {
    let mut value = serde_json::to_value(Settings::default()).expect("defaults serialize");
    if let Some(map) = value.as_object_mut() {
        map.remove("source");
    }
    value
}

impl Settings {
    /// Loads settings: defaults <- `path` (or `AMS_THUMBNAILS_CONFIG`, or `config/default.toml` if
    /// present) <- environment. [`NO_FILE`] as the path loads no file at all.
    ///
    /// A layer that sets `source.kind` to another kind than a layer below drops that layer's
    /// whole `[source]` table: the sample file's local `root` must not leak into the storage
    /// source that the environment asks for.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_as(path, None)
    }

    /// As [`Settings::load`], with `source.kind` set to `kind` above every layer (`catalog
    /// export --from`). Like a variable `AMS_THUMBNAILS_SOURCE__KIND`, it drops the file's
    /// `[source]` table when the file names another kind: that kind's settings then come from
    /// the environment (`AMS_THUMBNAILS_SOURCE__*`).
    pub fn load_as(path: Option<&Path>, kind: Option<&str>) -> Result<Self, ConfigError> {
        let env_path = std::env::var_os(CONFIG_PATH_ENV).map(PathBuf::from);
        let file = match path.map(Path::to_path_buf).or(env_path) {
            Some(p) if p.as_os_str() == NO_FILE => None,
            // An explicitly named file must exist (`/dev/null` does: an empty file).
            Some(p) => {
                if !p.exists() || p.is_dir() {
                    return Err(Invalid::new(
                        CONFIG_PATH_ENV,
                        format!("configuration file {} does not exist", p.display()),
                    )
                    .into());
                }
                Some(p)
            }
            None => Some(PathBuf::from(DEFAULT_CONFIG_PATH)).filter(|p| p.is_file()),
        };
        let mut figment = Figment::from(Serialized::defaults(defaults()));
        if let Some(p) = file {
            let env_kind = kind
                .map(str::to_owned)
                .or_else(|| std::env::var(format!("{ENV_PREFIX}SOURCE__KIND")).ok());
            let file_kind = source_kind_in(&p);
            let layer = layers::WithoutSource {
                inner: Toml::file_exact(&p),
                drop: env_kind.is_some_and(|k| Some(k.to_ascii_lowercase()) != file_kind),
            };
            figment = figment.merge(layer);
        }
        let mut figment = figment.merge(Self::env());
        if let Some(kind) = kind {
            figment = figment.merge(Serialized::default("source.kind", kind));
        }
        Self::from_figment(figment)
    }

    /// Loads settings from a TOML string layered over the defaults (tests, examples).
    pub fn from_toml(toml: &str) -> Result<Self, ConfigError> {
        Self::from_figment(
            Figment::from(Serialized::defaults(defaults())).merge(Toml::string(toml)),
        )
    }

    fn env() -> Env {
        Env::prefixed(ENV_PREFIX)
            .filter(|key| !key.as_str().eq_ignore_ascii_case("config"))
            .split("__")
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let mut settings: Settings = figment
            .extract()
            .map_err(|e| Box::new(layers::blame(&figment, e)))?;
        // Unset where Entra ID is needed: the default chain, shown as such by `check-config`.
        if settings.credential.is_none() && azure::needs_credential(&settings) {
            settings.credential = Some(CredentialSettings::Default);
        }
        settings.read_secret_files()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Secrets may come from files (`*_file`): read once, here, so the rest sees one value.
    fn read_secret_files(&mut self) -> Result<(), Invalid> {
        fn read(key: &str, path: &Path) -> Result<Secret, Invalid> {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Invalid::new(key, format!("cannot read {}: {}", path.display(), e.kind()))
            })?;
            Ok(Secret::new(text.trim()))
        }
        let both = |key: &str| Invalid::new(key, "set the secret or its file, not both");
        if let Some(path) = self.storage.account_key_file.clone() {
            if self.storage.account_key.is_some() {
                return Err(both("storage.account_key_file"));
            }
            self.storage.account_key = Some(read("storage.account_key_file", &path)?);
        }
        if let Some(path) = self.cache.shared.password_file.clone() {
            if self.cache.shared.password.is_some() {
                return Err(both("cache.shared.password_file"));
            }
            self.cache.shared.password = Some(read("cache.shared.password_file", &path)?);
        }
        if let Some(path) = self.events.secret_file.clone() {
            if self.events.secret.is_some() {
                return Err(both("events.secret_file"));
            }
            self.events.secret = Some(read("events.secret_file", &path)?);
        }
        if let Some(CredentialSettings::ClientSecret {
            client_secret,
            client_secret_file,
            ..
        }) = &mut self.credential
        {
            match (client_secret.is_some(), client_secret_file.clone()) {
                (true, Some(_)) => return Err(both("credential.client_secret_file")),
                (false, Some(path)) => {
                    *client_secret = Some(read("credential.client_secret_file", &path)?)
                }
                (false, None) => {
                    return Err(Invalid::new(
                        "credential.client_secret",
                        "is required (or credential.client_secret_file)",
                    ));
                }
                (true, None) => {}
            }
        }
        if let Some(CredentialSettings::ClientCertificate {
            certificate_password,
            certificate_password_file: Some(path),
            ..
        }) = &mut self.credential
        {
            if certificate_password.is_some() {
                return Err(both("credential.certificate_password_file"));
            }
            // A password is taken as written, not trimmed like the other secrets' files:
            // only a final line break goes.
            let text = std::fs::read_to_string(&*path).map_err(|e| {
                Invalid::new(
                    "credential.certificate_password_file",
                    format!("cannot read {}: {}", path.display(), e.kind()),
                )
            })?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            *certificate_password = Some(Secret::new(text.strip_suffix('\r').unwrap_or(text)));
        }
        Ok(())
    }

    /// Each section's own checks, then those that span sections.
    fn validate(&self) -> Result<(), Invalid> {
        self.jobs.validate()?;
        self.auth.validate()?;
        self.rate_limit.validate()?;
        self.server.validate()?;
        self.metrics.validate(self.server.listen)?;
        self.api.validate()?;
        self.upstream.validate()?;
        self.cache.validate()?;
        self.recognition.validate()?;
        self.source.validate()?;
        self.events.validate(self.auth.jwt.as_ref())?;
        // A batch is charged one allowance per distinct id: a burst smaller than the batch
        // limit would refuse every full batch.
        if self.rate_limit.requests_per_second > 0.0
            && (self.rate_limit.burst as usize) < self.api.batch_limit
        {
            return Err(Invalid::new(
                "rate_limit.burst",
                format!(
                    "must be at least api.batch_limit ({}): a batch costs one request per distinct id",
                    self.api.batch_limit
                ),
            ));
        }
        match &self.source {
            SourceSettings::Local(_) => {}
            SourceSettings::Storage(_) | SourceSettings::Mkio(_) | SourceSettings::Ams(_) => {
                azure::validate(self)?
            }
        }
        let signed =
            !matches!(self.source, SourceSettings::Local(_)) && self.links.mode != LinkMode::Public;
        if signed && self.auth.api == AuthMode::None && !self.auth.allow_anonymous_signed_urls {
            return Err(Invalid::new(
                "auth.api",
                "signed URLs would be handed to anyone who asks: set auth.api = \"api-key\", or \
                 auth.allow_anonymous_signed_urls = true to accept that (e.g. behind a gateway \
                 that authenticates)",
            ));
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets redacted (`check-config`): secrets are
    /// `Secret`s, which serialize as "<redacted>".
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string(self).expect("settings serialize as TOML")
    }
}

#[cfg(test)]
mod tests;
