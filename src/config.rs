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
    pub log: LogSettings,
    pub cache: CacheSettings,
    pub recognition: RecognitionSettings,
    pub source: SourceSettings,
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
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_base_url: None,
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
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
    /// Longest time a resolved asset is served from memory.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
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

impl Settings {
    /// Loads settings: defaults <- `path` (or `AMS_THUMBNAILS_CONFIG`, or `config/default.toml` if
    /// present) <- environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let env_path = std::env::var_os(CONFIG_PATH_ENV).map(PathBuf::from);
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
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
            Figment::from(Serialized::defaults(Settings::default())).merge(Toml::string(toml)),
        )
    }

    fn env() -> Env {
        Env::prefixed(ENV_PREFIX)
            .filter(|key| key.as_str() != "config")
            .split("__")
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let settings: Settings = figment.extract().map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.into(),
            message,
        };
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
        // No setting of this version holds a secret; later ones wrap theirs in `Secret`, which
        // serializes as "<redacted>".
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
    fn public_base_url_follows_bound_port() {
        let s = Settings::default();
        let url = s.public_base_url("0.0.0.0:4321".parse().unwrap());
        assert_eq!(url.as_str(), "http://127.0.0.1:4321/");
    }
}
