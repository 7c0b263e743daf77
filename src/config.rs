//! Typed settings: built-in defaults <- TOML file <- `AMS_THUMBNAILS_*` environment variables.
//!
//! Every field has a default so that an empty file (or none) yields a service that runs on the
//! bundled sample library. Unknown keys are rejected so that a typo fails start-up instead of
//! being silently ignored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use url::Url;

/// Prefix of the environment variables that override the file; `__` separates nesting levels.
pub const ENV_PREFIX: &str = "AMS_THUMBNAILS_";
/// Environment variable naming the configuration file (the `--config` flag wins over it).
pub const CONFIG_PATH_ENV: &str = "AMS_THUMBNAILS_CONFIG";
/// The file read when neither `--config` nor `AMS_THUMBNAILS_CONFIG` names one (if it exists).
pub const DEFAULT_CONFIG_PATH: &str = "config/default.toml";

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
    pub cache: CacheSettings,
    pub recognition: RecognitionSettings,
    pub source: SourceSettings,
    /// How to reach and authenticate to Blob Storage (sources other than `local`).
    pub storage: StorageSettings,
    /// What kind of URL clients get (sources other than `local`).
    pub links: LinkSettings,
    /// The Entra ID credential, shared by every Azure client (`storage.auth = "entra"`,
    /// user delegation SAS).
    pub credential: Option<CredentialSettings>,
    /// Timeouts, retries and trust for every outbound call.
    pub upstream: UpstreamSettings,
    /// Thumbnail generation through the backend's encoder (sources `ams` and `mkio`).
    pub jobs: crate::jobs::JobSettings,
    /// Benchmark aids (bench/run); off by default.
    pub bench: BenchSettings,
}

/// Benchmark aids, used by `bench/run` only.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct BenchSettings {
    /// Serve `GET /bench/bare/{assetId}`: a static body of this many bytes through the same
    /// middleware, the baseline the cached route is measured against. 0: no such route.
    pub bare_body_bytes: usize,
    /// Delay added to every catalog lookup (simulated upstream latency).
    #[serde(with = "humantime_serde")]
    pub upstream_latency: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address the HTTP server binds to.
    pub listen: SocketAddr,
    /// Base URL under which clients reach this service; used for URLs the service itself serves
    /// (local mode). Defaults to `http://{listen}` with an unspecified address shown as 127.0.0.1.
    pub public_base_url: Option<Url>,
    /// Upper bound on the time one request may take before it is answered with 504.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long in-flight requests may run on after SIGTERM/SIGINT before the process exits.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Requests handled at once; more wait in a queue (health and metrics routes are exempt).
    pub max_concurrent_requests: usize,
    /// Requests allowed to wait; past this, `503 overloaded` at once instead of a slow timeout.
    pub max_queued_requests: usize,
    /// Longest wait in the queue before `503 overloaded`.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// Threads for blocking work (local folder walks and file reads, DNS lookups). Tokio's own
    /// bound is 512: a flood of cold local assets grew the pool to that, each thread with its
    /// stack, and glibc spread the transient allocations over every arena it has.
    pub blocking_threads: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_base_url: None,
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            max_concurrent_requests: 1024,
            max_queued_requests: 2048,
            queue_timeout: Duration::from_secs(5),
            blocking_threads: 16,
        }
    }
}

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
    pub jwt: Option<crate::http::auth::JwtSettings>,
    /// Start even though signed URLs are handed out to anyone who asks (no `auth.api`).
    pub allow_anonymous_signed_urls: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// Sustained requests per second per client identity; 0 turns limiting off.
    pub requests_per_second: f64,
    /// Requests a client may make in a burst above the sustained rate.
    pub burst: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            requests_per_second: 0.0,
            burst: 100,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// Origins allowed to call the API from a browser (`["*"]` for any); none by default.
    pub cors_allowed_origins: Vec<String>,
    /// Most asset ids in one `POST /assets:batchGet`.
    pub batch_limit: usize,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            cors_allowed_origins: Vec::new(),
            batch_limit: 100,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// `tracing_subscriber::EnvFilter` directives; `RUST_LOG` overrides when set.
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            filter: "info,ams_thumbnails=info".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// How long a resolved asset is fresh. Past it, it is served stale while one background
    /// refresh runs.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How long past `ttl` an entry may still be served when refreshing fails (the upstream is
    /// down). Never with URLs below `min_validity`.
    #[serde(with = "humantime_serde")]
    pub max_stale: Duration,
    /// How long "asset not found" is remembered.
    #[serde(with = "humantime_serde")]
    pub not_found_ttl: Duration,
    /// Every URL handed out stays valid at least this long: an entry leaves the cache this long
    /// before its earliest URL expires.
    #[serde(with = "humantime_serde")]
    pub min_validity: Duration,
    /// Memory budget of the cache, in bytes (entries are weighed by their size).
    pub max_bytes: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(300),
            max_stale: Duration::from_secs(3600),
            not_found_ttl: Duration::from_secs(30),
            min_validity: Duration::from_secs(300),
            max_bytes: 256 * 1024 * 1024,
        }
    }
}

/// How thumbnails are recognised among an asset's blobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecognitionSettings {
    /// AMS `filenamePattern`s, in priority order (the first that explains a name best wins).
    pub patterns: Vec<String>,
    /// Image extensions (case-insensitive, without the dot).
    pub extensions: Vec<String>,
    /// Sizes of the preset's layers, by label: reported as width/height of matching thumbnails.
    pub layers: Vec<LayerSize>,
    /// The preset's start and step, when thumbnails have no storyboard to take times from.
    pub timing: Option<Timing>,
}

impl Default for RecognitionSettings {
    fn default() -> Self {
        Self {
            patterns: [
                "Thumbnail{Index}{Extension}",
                "Thumbnail-{Basename}-{Index}{Extension}",
                "{Basename}_{Resolution}_{Index}{Extension}",
                "{Basename}_{Label}_{Index}{Extension}",
                "{Basename}_{Index}{Extension}",
                // MediaKind MK.IO's ThumbnailGeneratorPreset outputs.
                "{BaseFilename}_{Label}{Index}{Extension}",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            extensions: ["jpg", "jpeg", "png", "bmp"]
                .into_iter()
                .map(String::from)
                .collect(),
            layers: Vec::new(),
            timing: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LayerSize {
    pub label: String,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Timing {
    /// Time of the thumbnail with index 1.
    #[serde(with = "humantime_serde")]
    pub start: Duration,
    /// Time between two consecutive indices.
    #[serde(with = "humantime_serde")]
    pub step: Duration,
}

/// Where assets come from. Tagged by `kind`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceSettings {
    /// A folder on disk with one sub-folder per asset, served by this service under `/local/`.
    Local(LocalSourceSettings),
    /// Blob Storage alone (AMS retired): asset id -> container by template or catalog file.
    Storage(StorageSourceSettings),
    /// Azure Media Services metadata through ARM (needs `[credential]`).
    Ams(AmsSourceSettings),
    /// MediaKind MK.IO metadata through its Media API (token: `source.token`,
    /// `source.token_file` or the MKIO_TOKEN environment variable).
    Mkio(crate::source::mkio::MkioSourceSettings),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmsSourceSettings {
    pub subscription_id: String,
    pub resource_group: String,
    /// The Media Services account name.
    pub account_name: String,
    /// ARM endpoint (sovereign clouds, tests).
    #[serde(default = "default_arm_endpoint")]
    pub arm_endpoint: Url,
    /// Token audience for ARM.
    #[serde(default = "default_arm_audience")]
    pub arm_audience: String,
    #[serde(default = "default_ams_api_version")]
    pub api_version: String,
}

fn default_arm_endpoint() -> Url {
    Url::parse("https://management.azure.com").expect("valid URL")
}

fn default_arm_audience() -> String {
    "https://management.azure.com".into()
}

fn default_ams_api_version() -> String {
    "2023-01-01".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSourceSettings {
    /// Container of an asset; `{assetId}` is replaced by the id (a GUID is lower-cased, as AMS
    /// named containers `asset-<guid>`).
    pub container_template: String,
    /// A catalog exported while AMS was alive (CSV or JSON rows: name, alternateId, assetId,
    /// container, storageAccount): assets are then found by name, alternate id or GUID.
    pub catalog: Option<PathBuf>,
}

impl Default for StorageSourceSettings {
    fn default() -> Self {
        Self {
            container_template: "asset-{assetId}".into(),
            catalog: None,
        }
    }
}

/// How the service authenticates its own Blob Storage calls (listing, reading the VTT).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StorageAuth {
    /// Entra ID bearer tokens from `[credential]` (needs an https endpoint).
    #[default]
    Entra,
    /// A container SAS (`sp=l`) signed with `storage.account_key`; it never leaves the service.
    AccountKey,
    /// No authentication: the containers allow public listing.
    Anonymous,
    /// (AMS source, live account) A container SAS from AMS `listContainerSas`, for services
    /// without a storage credential of their own.
    AmsContainerSas,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// Default storage account (assets whose metadata names none live here).
    pub account: String,
    /// Blob service endpoint; `{account}` is replaced by the account name. For Azurite:
    /// `http://127.0.0.1:10000/{account}`.
    pub endpoint: String,
    pub auth: StorageAuth,
    /// Key of `account` (base64), for `auth = "account-key"` and account-key SAS links.
    pub account_key: Option<crate::secret::Secret>,
    /// A file holding the account key, read at start (instead of `account_key`).
    pub account_key_file: Option<PathBuf>,
    /// Blobs per List Blobs page (1 to 5000).
    pub page_size: u32,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            account: String::new(),
            endpoint: "https://{account}.blob.core.windows.net".into(),
            auth: StorageAuth::default(),
            account_key: None,
            account_key_file: None,
            page_size: 5000,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LinkMode {
    /// Plain blob URLs (public containers), or under `links.cdn_base`.
    Public,
    /// Read-only, one-blob user delegation SAS from an Entra ID credential: no key shared.
    #[default]
    UserDelegationSas,
    /// Read-only, one-blob service SAS signed with `storage.account_key`.
    AccountKeySas,
    /// Opt-in: the AMS container SAS itself, in every URL. It grants read and list of the whole
    /// container (videos included) to whoever gets a URL.
    AmsContainerSas,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkSettings {
    pub mode: LinkMode,
    /// Replaces the storage origin (`https://acct.blob.core.windows.net`) in URLs:
    /// `{cdn_base}/{container}/{blob}`, SAS query kept.
    pub cdn_base: Option<Url>,
    /// How long a signed URL is valid.
    #[serde(with = "humantime_serde")]
    pub lifetime: Duration,
    /// Signed URLs start this long in the past, for clients whose clocks run behind.
    #[serde(with = "humantime_serde")]
    pub clock_skew: Duration,
    /// Allow `spr=https,http` (an emulator over plain HTTP). Never against real Azure.
    pub allow_http: bool,
}

impl Default for LinkSettings {
    fn default() -> Self {
        Self {
            mode: LinkMode::default(),
            cdn_base: None,
            lifetime: Duration::from_secs(3600),
            clock_skew: Duration::from_secs(300),
            allow_http: false,
        }
    }
}

/// The Entra ID credential, chosen explicitly (there is no "default chain").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum CredentialSettings {
    /// App registration with a client secret.
    ClientSecret {
        tenant_id: String,
        client_id: String,
        /// The secret itself, or (better) `client_secret_file`.
        #[serde(default)]
        client_secret: Option<crate::secret::Secret>,
        /// A file holding the secret (a mounted Kubernetes/Docker secret), read at start.
        #[serde(default)]
        client_secret_file: Option<PathBuf>,
        /// Authority host (sovereign clouds, tests); default `https://login.microsoftonline.com`.
        authority_host: Option<Url>,
    },
    /// Managed identity: system-assigned, or user-assigned by client id.
    ManagedIdentity { client_id: Option<String> },
    /// Workload identity federation (AKS): `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`,
    /// `AZURE_FEDERATED_TOKEN_FILE` from the environment unless given here.
    WorkloadIdentity {
        tenant_id: Option<String>,
        client_id: Option<String>,
        token_file: Option<PathBuf>,
    },
    /// The signed-in Azure CLI (development machines).
    AzureCli { tenant_id: Option<String> },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSettings {
    /// Time to establish a connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time for one upstream call (each try).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries of a failed call (5xx, 429, connection errors).
    pub max_retries: u32,
    /// Upper bound on the time spent retrying one call.
    #[serde(with = "humantime_serde")]
    pub retry_budget: Duration,
    /// Extra PEM CA certificate to trust (a private CA, an emulator's test CA).
    pub ca_file: Option<PathBuf>,
    /// Calls in flight to each upstream at once (more wait): no retry storm can swamp it.
    pub max_concurrency: usize,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(20),
            max_retries: 3,
            retry_budget: Duration::from_secs(15),
            ca_file: None,
            max_concurrency: 64,
        }
    }
}

impl Default for SourceSettings {
    fn default() -> Self {
        Self::Local(LocalSourceSettings::default())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalSourceSettings {
    /// Folder holding one sub-folder ("container") per asset.
    pub root: PathBuf,
    /// Container name for an asset id; `{assetId}` is replaced by the id.
    pub container_template: String,
}

impl Default for LocalSourceSettings {
    fn default() -> Self {
        Self {
            root: PathBuf::from("samples"),
            container_template: "{assetId}".into(),
        }
    }
}

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {}", describe(.0))]
    Load(#[from] Box<figment::Error>),
    #[error("invalid configuration: key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

/// One line per error: the key (lower-case, dotted, as in the TOML file), what is wrong, and
/// which source (file or environment) it came from.
fn describe(error: &figment::Error) -> String {
    error
        .clone()
        .into_iter()
        .map(|e| {
            let key = e.path.join(".").to_lowercase();
            let source = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            if key.is_empty() {
                format!("{}{source}", e.kind)
            } else {
                format!("key `{key}`: {}{source}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
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
    /// present) <- environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let env_path = std::env::var_os(CONFIG_PATH_ENV).map(PathBuf::from);
        let mut figment = Figment::from(Serialized::defaults(defaults()));
        match path.map(Path::to_path_buf).or(env_path) {
            // An explicitly named file must exist.
            Some(p) => {
                if !p.is_file() {
                    return Err(ConfigError::Invalid {
                        key: CONFIG_PATH_ENV.into(),
                        message: format!("configuration file {} does not exist", p.display()),
                    });
                }
                figment = figment.merge(Toml::file_exact(p));
            }
            None => {
                let default = Path::new(DEFAULT_CONFIG_PATH);
                if default.is_file() {
                    figment = figment.merge(Toml::file_exact(default));
                }
            }
        }
        Self::from_figment(figment.merge(Self::env()))
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
        let mut settings: Settings = figment.extract().map_err(Box::new)?;
        settings.read_secret_files()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Secrets may come from files (`*_file`): read once, here, so the rest sees one value.
    fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        fn read(key: &str, path: &Path) -> Result<crate::secret::Secret, ConfigError> {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
                key: key.into(),
                message: format!("cannot read {}: {}", path.display(), e.kind()),
            })?;
            Ok(crate::secret::Secret::new(text.trim()))
        }
        let both = |key: &str| ConfigError::Invalid {
            key: key.into(),
            message: "set the secret or its file, not both".into(),
        };
        if let Some(path) = self.storage.account_key_file.clone() {
            if self.storage.account_key.is_some() {
                return Err(both("storage.account_key_file"));
            }
            self.storage.account_key = Some(read("storage.account_key_file", &path)?);
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
                    return Err(ConfigError::Invalid {
                        key: "credential.client_secret".into(),
                        message: "is required (or credential.client_secret_file)".into(),
                    });
                }
                (true, None) => {}
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.into(),
            message,
        };
        self.jobs.validate()?;
        for (i, key) in self.auth.api_keys.iter().enumerate() {
            if key.sha256.len() != 64 || !key.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(
                    &format!("auth.api_keys[{i}].sha256"),
                    "must be the SHA-256 of the key as 64 hex digits (`printf %s KEY | sha256sum`)"
                        .into(),
                ));
            }
            if key.name.trim().is_empty() || key.roles.is_empty() {
                return Err(invalid(
                    &format!("auth.api_keys[{i}]"),
                    "needs a name and at least one role".into(),
                ));
            }
        }
        if let Some(jwt) = &self.auth.jwt {
            jwt.check("auth.jwt")
                .map_err(|(key, message)| invalid(&key, message))?;
            // The JWKS is fetched with the upstream client: a bad upstream.ca_file fails here.
            crate::azure::http_client(&self.upstream)?;
        }
        for (mode, role, key) in [
            (self.auth.api, Role::Api, "auth.api"),
            (self.auth.ops, Role::Ops, "auth.ops"),
        ] {
            if mode == AuthMode::ApiKey
                && !self.auth.api_keys.iter().any(|k| k.roles.contains(&role))
                && !self.auth.jwt.as_ref().is_some_and(|jwt| jwt.grants(role))
            {
                return Err(invalid(
                    key,
                    format!(
                        "is \"api-key\" but no key in auth.api_keys has the role {role:?} \
                         (nor does auth.jwt grant it)"
                    ),
                ));
            }
        }
        if !(self.rate_limit.requests_per_second >= 0.0
            && self.rate_limit.requests_per_second.is_finite())
        {
            return Err(invalid(
                "rate_limit.requests_per_second",
                "must be 0 (off) or a positive number".into(),
            ));
        }
        if let Some(url) = &self.server.public_base_url {
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                return Err(invalid(
                    "server.public_base_url",
                    "must be an absolute http(s) URL".into(),
                ));
            }
            if url.query().is_some() || url.fragment().is_some() {
                return Err(invalid(
                    "server.public_base_url",
                    "must not have a query or fragment".into(),
                ));
            }
        }
        if self.server.request_timeout.is_zero() {
            return Err(invalid(
                "server.request_timeout",
                "must be greater than 0".into(),
            ));
        }
        for (i, origin) in self.api.cors_allowed_origins.iter().enumerate() {
            let ok = origin == "*"
                || Url::parse(origin).is_ok_and(|u| {
                    matches!(u.scheme(), "http" | "https")
                        && u.path() == "/"
                        && !origin.ends_with('/')
                        && u.query().is_none()
                });
            if !ok {
                return Err(invalid(
                    &format!("api.cors_allowed_origins[{i}]"),
                    format!(
                        "{origin:?} is not an origin like \"https://app.example.com\" or \"*\""
                    ),
                ));
            }
        }
        if !(1..=10_000).contains(&self.api.batch_limit) {
            return Err(invalid("api.batch_limit", "must be from 1 to 10000".into()));
        }
        if self.server.max_concurrent_requests == 0 {
            return Err(invalid(
                "server.max_concurrent_requests",
                "must be greater than 0".into(),
            ));
        }
        if self.server.blocking_threads == 0 {
            return Err(invalid(
                "server.blocking_threads",
                "must be greater than 0".into(),
            ));
        }
        if self.upstream.max_concurrency == 0 {
            return Err(invalid(
                "upstream.max_concurrency",
                "must be greater than 0".into(),
            ));
        }
        if self.cache.max_bytes == 0 {
            return Err(invalid("cache.max_bytes", "must be greater than 0".into()));
        }
        if self.cache.min_validity >= Duration::from_secs(7 * 24 * 3600) {
            return Err(invalid(
                "cache.min_validity",
                "must be shorter than 7 days (the longest a signed URL can live)".into(),
            ));
        }
        crate::recognise::Recogniser::new(&self.recognition)
            .map_err(|e| invalid(&e.key, e.message))?;
        if let Some(t) = &self.recognition.timing
            && t.step.is_zero()
        {
            return Err(invalid(
                "recognition.timing.step",
                "must be greater than 0".into(),
            ));
        }
        match &self.source {
            SourceSettings::Local(local) => {
                if !local.container_template.contains("{assetId}") {
                    return Err(invalid(
                        "source.container_template",
                        "must contain {assetId}".into(),
                    ));
                }
            }
            SourceSettings::Storage(storage) => {
                if storage.catalog.is_none() && !storage.container_template.contains("{assetId}") {
                    return Err(invalid(
                        "source.container_template",
                        "must contain {assetId}".into(),
                    ));
                }
                self.validate_azure()?;
            }
            SourceSettings::Mkio(mkio) => {
                mkio.validate()?;
                self.validate_azure()?;
            }
            SourceSettings::Ams(ams) => {
                for (key, value) in [
                    ("source.subscription_id", &ams.subscription_id),
                    ("source.resource_group", &ams.resource_group),
                    ("source.account_name", &ams.account_name),
                ] {
                    if value.trim().is_empty() {
                        return Err(invalid(key, "must not be empty".into()));
                    }
                }
                if self.credential.is_none() {
                    return Err(invalid(
                        "credential",
                        "is required by source.kind = \"ams\" (ARM calls need a token)".into(),
                    ));
                }
                if ams.arm_endpoint.scheme() != "https" {
                    return Err(invalid("source.arm_endpoint", "must be https".into()));
                }
                self.validate_azure()?;
            }
        }
        let signed =
            !matches!(self.source, SourceSettings::Local(_)) && self.links.mode != LinkMode::Public;
        if signed && self.auth.api == AuthMode::None && !self.auth.allow_anonymous_signed_urls {
            return Err(invalid(
                "auth.api",
                "signed URLs would be handed to anyone who asks: set auth.api = \"api-key\", or \
                 auth.allow_anonymous_signed_urls = true to accept that (e.g. behind a gateway \
                 that authenticates)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Checks the settings every Azure-backed source needs.
    fn validate_azure(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        };
        let storage = &self.storage;
        if storage.account.is_empty()
            || !storage
                .account
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            || storage.account.len() > 24
        {
            return Err(invalid(
                "storage.account",
                "must be a storage account name (lower-case letters and digits, at most 24)",
            ));
        }
        let endpoint = storage.endpoint.replace("{account}", &storage.account);
        let endpoint = Url::parse(&endpoint)
            .map_err(|e| invalid("storage.endpoint", &format!("not a URL: {e}")))?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.query().is_some() {
            return Err(invalid(
                "storage.endpoint",
                "must be an http(s) URL without a query",
            ));
        }
        if !(1..=5000).contains(&storage.page_size) {
            return Err(invalid("storage.page_size", "must be from 1 to 5000"));
        }
        let http = endpoint.scheme() == "http";
        if http && !self.links.allow_http {
            return Err(invalid(
                "storage.endpoint",
                "is plain http: set links.allow_http = true (emulators only)",
            ));
        }
        let needs_key =
            storage.auth == StorageAuth::AccountKey || self.links.mode == LinkMode::AccountKeySas;
        if needs_key && storage.account_key.is_none() {
            return Err(invalid(
                "storage.account_key",
                "is required by storage.auth = \"account-key\" and links.mode = \"account-key-sas\"",
            ));
        }
        let needs_credential =
            storage.auth == StorageAuth::Entra || self.links.mode == LinkMode::UserDelegationSas;
        if needs_credential && self.credential.is_none() {
            return Err(invalid(
                "credential",
                "is required by storage.auth = \"entra\" and links.mode = \"user-delegation-sas\"",
            ));
        }
        if needs_credential && http {
            return Err(invalid(
                "storage.endpoint",
                "must be https for Entra ID authentication",
            ));
        }
        if self.links.lifetime <= self.cache.min_validity {
            return Err(invalid(
                "links.lifetime",
                "must be longer than cache.min_validity, or no answer could ever be cached",
            ));
        }
        if self.links.lifetime > Duration::from_secs(7 * 24 * 3600) {
            return Err(invalid("links.lifetime", "must be at most 7 days"));
        }
        let container_sas = storage.auth == StorageAuth::AmsContainerSas
            || self.links.mode == LinkMode::AmsContainerSas;
        if container_sas {
            if !matches!(self.source, SourceSettings::Ams(_)) {
                return Err(invalid(
                    "storage.auth",
                    "ams-container-sas needs source.kind = \"ams\"",
                ));
            }
            if self.links.lifetime >= Duration::from_secs(24 * 3600) {
                return Err(invalid(
                    "links.lifetime",
                    "must be under 24 hours with AMS container SAS (AMS refuses longer)",
                ));
            }
        }
        if let Some(cdn) = &self.links.cdn_base
            && (!matches!(cdn.scheme(), "http" | "https") || cdn.query().is_some())
        {
            return Err(invalid(
                "links.cdn_base",
                "must be an http(s) URL without a query",
            ));
        }
        Ok(())
    }

    /// The base URL clients use to reach this service, given the address actually bound.
    pub fn public_base_url(&self, bound: SocketAddr) -> Url {
        if let Some(url) = &self.server.public_base_url {
            return url.clone();
        }
        let host = if bound.ip().is_unspecified() {
            SocketAddr::new([127, 0, 0, 1].into(), bound.port())
        } else {
            bound
        };
        Url::parse(&format!("http://{host}")).expect("socket address forms a valid URL")
    }

    /// The effective configuration as TOML, secrets redacted (`check-config`).
    pub fn to_redacted_toml(&self) -> String {
        // Secrets are `Secret`s, which serialize as "<redacted>".
        toml_string(self)
    }
}

fn toml_string(settings: &Settings) -> String {
    let value = serde_json::to_value(settings).expect("settings serialize");
    let mut out = String::new();
    write_toml_table(&mut out, "", &value);
    out
}

/// Renders a JSON value as TOML (figment has no serializer of its own; this avoids a dependency).
fn write_toml_table(out: &mut String, prefix: &str, value: &serde_json::Value) {
    use serde_json::Value;
    let Value::Object(map) = value else { return };
    let is_table = |v: &Value| {
        matches!(v, Value::Object(_))
            || matches!(v, Value::Array(a) if !a.is_empty() && a.iter().all(|x| x.is_object()))
    };
    for (key, v) in map.iter().filter(|(_, v)| !is_table(v) && !v.is_null()) {
        out.push_str(&format!("{key} = {}\n", toml_inline(v)));
    }
    for (key, v) in map.iter().filter(|(_, v)| is_table(v)) {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match v {
            Value::Array(items) => {
                for item in items {
                    out.push_str(&format!("\n[[{path}]]\n"));
                    write_toml_table(out, &path, item);
                }
            }
            _ => {
                out.push_str(&format!("\n[{path}]\n"));
                write_toml_table(out, &path, v);
            }
        }
    }
}

fn toml_inline(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::String(s) => serde_json::to_string(s).expect("string serializes"),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(toml_inline).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::Object(map) => {
            let parts: Vec<String> = map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("{k} = {}", toml_inline(v)))
                .collect();
            format!("{{ {} }}", parts.join(", "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_local() {
        let s = Settings::from_toml("").unwrap();
        assert!(matches!(s.source, SourceSettings::Local(_)));
        assert_eq!(s.cache.ttl, Duration::from_secs(300));
    }

    #[test]
    fn invalid_value_names_the_key() {
        let err = Settings::from_toml("[cache]\nttl = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cache.ttl"), "{err}");
        let err = Settings::from_toml("[server]\nlisten = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.listen"), "{err}");
        let err = Settings::from_toml("[recognition]\npatterns = [\"Thumb{Extension}\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("recognition.patterns[0]"), "{err}");
        let err = Settings::from_toml("[server]\nblocking_threads = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.blocking_threads"), "{err}");
        let s = Settings::from_toml("[server]\nblocking_threads = 4\n").unwrap();
        assert_eq!(s.server.blocking_threads, 4);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Settings::from_toml("[cache]\nttll = \"5m\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ttll"), "{err}");
    }

    #[test]
    fn redacted_toml_round_trips() {
        let s = Settings::from_toml("[recognition]\nlayers = [{label = \"large\", width = 640, height = 360}]\ntiming = { start = \"1s\", step = \"2s\" }\n").unwrap();
        let text = s.to_redacted_toml();
        let back = Settings::from_toml(&text).unwrap();
        assert_eq!(back.recognition.layers, s.recognition.layers);
        assert_eq!(back.recognition.timing, s.recognition.timing);
        assert_eq!(back.cache.ttl, s.cache.ttl);
    }

    #[test]
    fn secrets_are_redacted_in_check_config() {
        let s = Settings::from_toml(
            "[source]\nkind = \"storage\"\n[storage]\naccount = \"acct\"\nauth = \"account-key\"\naccount_key = \"c2VjcmV0LWtleQ==\"\n[links]\nmode = \"account-key-sas\"\n[auth]\nallow_anonymous_signed_urls = true\n[credential]\nkind = \"client-secret\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"s3cr3t-value\"\n",
        )
        .unwrap();
        let text = s.to_redacted_toml();
        assert!(!text.contains("c2VjcmV0LWtleQ=="), "{text}");
        assert!(!text.contains("s3cr3t-value"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
        assert!(!format!("{s:?}").contains("s3cr3t-value"));
    }

    #[test]
    fn azure_settings_are_checked_together() {
        let base = "[source]\nkind = \"storage\"\n[storage]\naccount = \"acct\"\n";
        let err = |extra: &str| {
            Settings::from_toml(&format!("{base}{extra}"))
                .unwrap_err()
                .to_string()
        };
        assert!(err("").contains("credential"), "entra needs a credential");
        assert!(
            err("auth = \"account-key\"\n[links]\nmode = \"account-key-sas\"\n")
                .contains("storage.account_key")
        );
        assert!(
            err("auth = \"anonymous\"\nendpoint = \"http://127.0.0.1:1/{account}\"\n[links]\nmode = \"public\"\n")
                .contains("links.allow_http")
        );
        assert!(
            err("auth = \"anonymous\"\n[links]\nmode = \"public\"\nlifetime = \"1m\"\n")
                .contains("links.lifetime")
        );
        assert!(
            Settings::from_toml(&format!(
                "{base}auth = \"anonymous\"\n[links]\nmode = \"public\"\n"
            ))
            .is_ok()
        );
        let bad_account = Settings::from_toml(
            "[source]\nkind = \"storage\"\n[storage]\naccount = \"Bad_Account\"\nauth = \"anonymous\"\n[links]\nmode = \"public\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(bad_account.contains("storage.account"), "{bad_account}");
    }

    #[test]
    fn public_base_url_follows_bound_port() {
        let s = Settings::default();
        let url = s.public_base_url("0.0.0.0:4321".parse().unwrap());
        assert_eq!(url.as_str(), "http://127.0.0.1:4321/");
    }
}
