//! `[storage]`, `[links]` and `[credential]`: how the service reaches Blob Storage, what kind
//! of URL clients get, and the one Entra ID credential. They are checked together, with the
//! source kind and the cache's URL validity, because the modes depend on each other.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use super::cache::MAX_URL_LIFETIME;
use super::{Invalid, Settings, SourceSettings};
use crate::secret::Secret;

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
    pub account_key: Option<Secret>,
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
    /// Signed URLs start and end on windows of the wall clock (UNIX-epoch multiples of this),
    /// so every replica signs one blob alike for a whole window and browsers and CDNs see one
    /// URL per blob per window. Zero: each URL is anchored at its signing instant.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// `Cache-Control` Storage answers the image with (the signed `rscc`); `{max_age}` becomes
    /// the seconds every URL still has left at the end of its window (`lifetime - window`).
    pub response_cache_control: Option<String>,
}

impl Default for LinkSettings {
    fn default() -> Self {
        Self {
            mode: LinkMode::default(),
            cdn_base: None,
            lifetime: Duration::from_secs(3600),
            clock_skew: Duration::from_secs(300),
            allow_http: false,
            window: Duration::ZERO,
            response_cache_control: None,
        }
    }
}

/// The Entra ID credential: one chosen explicitly, or `default`, the `DefaultAzureCredential`
/// order over the standard `AZURE_*` variables (what an unset `[credential]` means wherever
/// one is needed).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum CredentialSettings {
    /// The first that gets a token, tried in this order on the first token request and kept:
    /// environment (`AZURE_TENANT_ID` + `AZURE_CLIENT_ID` + `AZURE_CLIENT_SECRET` or
    /// `AZURE_CLIENT_CERTIFICATE_PATH`), workload identity (`AZURE_FEDERATED_TOKEN_FILE`),
    /// managed identity (`AZURE_CLIENT_ID` for a user-assigned one), Azure CLI.
    Default,
    /// App registration with a client secret.
    ClientSecret {
        tenant_id: String,
        client_id: String,
        /// The secret itself, or (better) `client_secret_file`.
        #[serde(default)]
        client_secret: Option<Secret>,
        /// A file holding the secret (a mounted Kubernetes/Docker secret), read at start.
        #[serde(default)]
        client_secret_file: Option<PathBuf>,
        /// Authority host (sovereign clouds, tests); default `https://login.microsoftonline.com`.
        authority_host: Option<Url>,
    },
    /// App registration with a certificate: a signed JWT (`client_assertion`) instead of a
    /// secret.
    ClientCertificate {
        tenant_id: String,
        client_id: String,
        /// A PEM file (the certificate and its unencrypted RSA private key) or a PFX (PKCS#12)
        /// file, read at start.
        certificate_path: PathBuf,
        /// The PFX file's password, if it has one, or (better) `certificate_password_file`.
        #[serde(default)]
        certificate_password: Option<Secret>,
        /// A file holding the PFX password, read at start.
        #[serde(default)]
        certificate_password_file: Option<PathBuf>,
        /// Send the certificate chain (`x5c`), for subject name / issuer authentication.
        #[serde(default)]
        send_certificate_chain: bool,
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

impl CredentialSettings {
    /// The `kind` as written in the file.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::ClientSecret { .. } => "client-secret",
            Self::ClientCertificate { .. } => "client-certificate",
            Self::ManagedIdentity { .. } => "managed-identity",
            Self::WorkloadIdentity { .. } => "workload-identity",
            Self::AzureCli { .. } => "azure-cli",
        }
    }
}

/// Whether the configured modes call Entra ID: the AMS source (ARM), `storage.auth = "entra"`
/// or user delegation SAS links (a local source never does).
pub fn needs_credential(settings: &Settings) -> bool {
    match settings.source {
        SourceSettings::Local(_) => false,
        SourceSettings::Ams(_) => true,
        SourceSettings::Storage(_) | SourceSettings::Mkio(_) => {
            settings.storage.auth == StorageAuth::Entra
                || settings.links.mode == LinkMode::UserDelegationSas
        }
    }
}

/// How far ahead a user delegation key may be asked to expire (Azure: at most 7 days from now;
/// a minute less for clocks that differ).
pub const MAX_KEY_AHEAD: Duration = Duration::from_secs(7 * 24 * 3600 - 60);

/// The placeholder of `links.response_cache_control` for the seconds a URL has left.
pub const MAX_AGE_PLACEHOLDER: &str = "{max_age}";

/// Whether URLs or listing use the container SAS that AMS hands out.
pub fn uses_ams_container_sas(storage: &StorageSettings, links: &LinkSettings) -> bool {
    storage.auth == StorageAuth::AmsContainerSas || links.mode == LinkMode::AmsContainerSas
}

/// Checks the settings every Azure-backed source needs, together.
pub(super) fn validate(settings: &Settings) -> Result<(), Invalid> {
    let storage = &settings.storage;
    let links = &settings.links;
    if storage.account.is_empty() {
        let why = match settings.source.kind() {
            "mkio" => {
                "is required with source.kind = \"mkio\": the account of assets whose MK.IO \
                 storage instance names none, and the one start-up checks the endpoint and \
                 credential with"
            }
            "ams" => "is required with source.kind = \"ams\": the default storage account",
            _ => "is required: the storage account that holds the asset containers",
        };
        return Err(Invalid::new("storage.account", why));
    }
    if !storage
        .account
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        || storage.account.len() > 24
    {
        return Err(Invalid::new(
            "storage.account",
            "must be a storage account name (lower-case letters and digits, at most 24)",
        ));
    }
    let endpoint = storage.endpoint.replace("{account}", &storage.account);
    let endpoint = Url::parse(&endpoint)
        .map_err(|e| Invalid::new("storage.endpoint", format!("not a URL: {e}")))?;
    if !matches!(endpoint.scheme(), "http" | "https") || endpoint.query().is_some() {
        return Err(Invalid::new(
            "storage.endpoint",
            "must be an http(s) URL without a query",
        ));
    }
    if !(1..=5000).contains(&storage.page_size) {
        return Err(Invalid::new("storage.page_size", "must be from 1 to 5000"));
    }
    let http = endpoint.scheme() == "http";
    if http && !links.allow_http {
        return Err(Invalid::new(
            "storage.endpoint",
            "is plain http: set links.allow_http = true (emulators only)",
        ));
    }
    let needs_key =
        storage.auth == StorageAuth::AccountKey || links.mode == LinkMode::AccountKeySas;
    if needs_key && storage.account_key.is_none() {
        return Err(Invalid::new(
            "storage.account_key",
            "is required by storage.auth = \"account-key\" and links.mode = \"account-key-sas\"",
        ));
    }
    let needs_credential =
        storage.auth == StorageAuth::Entra || links.mode == LinkMode::UserDelegationSas;
    if needs_credential && http {
        return Err(Invalid::new(
            "storage.endpoint",
            "must be https for Entra ID authentication",
        ));
    }
    if links.lifetime <= settings.cache.min_validity {
        return Err(Invalid::new(
            "links.lifetime",
            "must be longer than cache.min_validity, or no answer could ever be cached",
        ));
    }
    if links.lifetime > MAX_URL_LIFETIME {
        return Err(Invalid::new("links.lifetime", "must be at most 7 days"));
    }
    validate_window(settings)?;
    if uses_ams_container_sas(storage, links) {
        if !matches!(settings.source, SourceSettings::Ams(_)) {
            return Err(Invalid::new(
                "storage.auth",
                "ams-container-sas needs source.kind = \"ams\"",
            ));
        }
        if links.lifetime >= Duration::from_secs(24 * 3600) {
            return Err(Invalid::new(
                "links.lifetime",
                "must be under 24 hours with AMS container SAS (AMS refuses longer)",
            ));
        }
    }
    if let Some(cdn) = &links.cdn_base
        && (!matches!(cdn.scheme(), "http" | "https") || cdn.query().is_some())
    {
        return Err(Invalid::new(
            "links.cdn_base",
            "must be an http(s) URL without a query",
        ));
    }
    Ok(())
}

/// `links.window` and `links.response_cache_control`: only for the URLs this service signs, and
/// a window short enough that every URL handed out keeps `cache.min_validity`.
fn validate_window(settings: &Settings) -> Result<(), Invalid> {
    let links = &settings.links;
    let signs = matches!(
        links.mode,
        LinkMode::AccountKeySas | LinkMode::UserDelegationSas
    );
    if !links.window.is_zero() {
        if !signs {
            return Err(Invalid::new(
                "links.window",
                "applies to links.mode = \"account-key-sas\" or \"user-delegation-sas\" only",
            ));
        }
        if links.window.subsec_nanos() != 0 {
            return Err(Invalid::new(
                "links.window",
                "must be whole seconds (SAS times are)",
            ));
        }
        // A URL signed at the end of its window has `lifetime - window` left.
        if links.lifetime < links.window + settings.cache.min_validity {
            return Err(Invalid::new(
                "links.window",
                "links.lifetime must be at least links.window + cache.min_validity, or a URL \
                 signed late in its window would be handed out with less than min_validity",
            ));
        }
        if links.mode == LinkMode::UserDelegationSas && links.lifetime > MAX_KEY_AHEAD {
            return Err(Invalid::new(
                "links.lifetime",
                "must be at most 7 days less a minute with links.window in user-delegation-sas \
                 mode (the window's delegation key must outlast its URLs)",
            ));
        }
    }
    if let Some(value) = &links.response_cache_control {
        if !signs {
            return Err(Invalid::new(
                "links.response_cache_control",
                "applies to links.mode = \"account-key-sas\" or \"user-delegation-sas\" only",
            ));
        }
        let rest = value.replace(MAX_AGE_PLACEHOLDER, "");
        if value.trim().is_empty()
            || value.len() > 256
            || !value.chars().all(|c| c == ' ' || c.is_ascii_graphic())
            || rest.contains(['{', '}'])
        {
            return Err(Invalid::new(
                "links.response_cache_control",
                "must be a Cache-Control value of at most 256 printable ASCII characters; the \
                 only placeholder is {max_age}",
            ));
        }
    }
    Ok(())
}
