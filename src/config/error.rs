//! The configuration's errors: a leaf, so that every module can say which key is at fault
//! without knowing anything else of configuration.

/// A value that cannot work, naming its key (lower-case, dotted, as in the TOML file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key `{key}`: {message}")]
pub struct Invalid {
    pub key: String,
    pub message: String,
}

impl Invalid {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A configuration problem: unreadable or mistyped (figment), or a value that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {}", describe(.0))]
    Load(#[from] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Invalid),
}

/// One line per error: the key (lower-case, dotted, as in the TOML file), what is wrong, and
/// which source (file or environment) it came from.
fn describe(error: &figment::Error) -> String {
    error
        .clone()
        .into_iter()
        .map(|e| {
            let mut path = e.path.clone();
            if let figment::error::Kind::UnknownField(field, _) = &e.kind {
                path.push(field.clone());
            }
            let key = e.path.join(".").to_lowercase();
            let source = e
                .metadata
                .as_ref()
                .map(|m| match &m.source {
                    // A file: its path.
                    Some(source) => format!(" (from {} {source})", m.name),
                    // The environment: the very variable, when the key is known.
                    None if !path.is_empty() && m.name.contains("environment") => format!(
                        " (from environment variable {}{})",
                        super::ENV_PREFIX,
                        path.join("__").to_uppercase()
                    ),
                    None => format!(" (from {})", m.name),
                })
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
