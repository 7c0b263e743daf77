//! The embedded default source: a folder with one sub-folder per asset, laid out like AMS
//! containers, whose files this service serves itself under `/local/`.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use url::Url;

use super::{AssetLocation, BlobStore, Catalog, HealthCheck, Linker, SourceError};
use crate::asset_id::AssetId;
use crate::config::LocalSourceSettings;
use crate::model::{BlobEntry, Link, content_type_for};
use crate::url_path::{encode_blob_name, encode_segment};

/// Route prefix under which the service serves the local folder.
pub const ROUTE_PREFIX: &str = "/local";

const BACKEND: &str = "local";

#[derive(Debug, Clone)]
pub struct LocalSource {
    root: PathBuf,
    container_template: String,
    /// `{public_base_url}/local/`, ready to append `{container}/{blob}`.
    files_base: String,
}

impl LocalSource {
    pub fn new(settings: &LocalSourceSettings, public_base_url: &Url) -> Self {
        let base = public_base_url.as_str().trim_end_matches('/');
        Self {
            root: settings.root.clone(),
            container_template: settings.container_template.clone(),
            files_base: format!("{base}{ROUTE_PREFIX}/"),
        }
    }

    fn container_dir(&self, location: &AssetLocation) -> PathBuf {
        self.root.join(&location.container)
    }
}

#[async_trait]
impl Catalog for LocalSource {
    async fn locate(&self, id: &AssetId) -> Result<AssetLocation, SourceError> {
        let container = self.container_template.replace("{assetId}", id.as_str());
        let location = AssetLocation::new(BACKEND, container);
        match tokio::fs::metadata(self.container_dir(&location)).await {
            Ok(m) if m.is_dir() => Ok(location),
            Ok(_) => Err(SourceError::NotFound),
            // A name the file system cannot hold (over 255 bytes) cannot be an asset here.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidFilename => Err(SourceError::NotFound),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // No such asset, unless the whole folder is gone: that is the operator's problem,
                // and must not be remembered as "not found".
                match tokio::fs::metadata(&self.root).await {
                    Ok(m) if m.is_dir() => Err(SourceError::NotFound),
                    _ => Err(SourceError::Misconfigured {
                        backend: BACKEND,
                        message: "the local source folder does not exist".into(),
                    }),
                }
            }
            Err(e) => Err(io_error(e)),
        }
    }
}

#[async_trait]
impl BlobStore for LocalSource {
    async fn list(&self, location: &AssetLocation) -> Result<Vec<BlobEntry>, SourceError> {
        let dir = self.container_dir(location);
        tokio::task::spawn_blocking(move || walk(&dir))
            .await
            .map_err(|e| SourceError::Upstream {
                backend: BACKEND,
                message: format!("listing task failed: {e}"),
            })?
    }

    async fn read(
        &self,
        location: &AssetLocation,
        name: &str,
        limit: usize,
    ) -> Result<Bytes, SourceError> {
        if name
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(SourceError::NotFound);
        }
        let path = self.container_dir(location).join(name);
        let meta = tokio::fs::metadata(&path).await.map_err(io_error)?;
        if meta.len() > limit as u64 {
            return Err(SourceError::Upstream {
                backend: BACKEND,
                message: format!("{name} is larger than {limit} bytes"),
            });
        }
        tokio::fs::read(&path)
            .await
            .map(Bytes::from)
            .map_err(io_error)
    }
}

#[async_trait]
impl Linker for LocalSource {
    async fn link(
        &self,
        location: &AssetLocation,
        names: &[&str],
    ) -> Result<Vec<Link>, SourceError> {
        let container = encode_segment(&location.container);
        Ok(names
            .iter()
            .map(|name| Link {
                url: format!("{}{container}/{}", self.files_base, encode_blob_name(name)),
                expires_at: None,
            })
            .collect())
    }
}

#[async_trait]
impl HealthCheck for LocalSource {
    fn name(&self) -> &str {
        "local"
    }

    fn required(&self) -> bool {
        true
    }

    async fn check(&self) -> Result<(), String> {
        match tokio::fs::read_dir(&self.root).await {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("sample folder is not readable: {}", e.kind())),
        }
    }
}

fn io_error(e: std::io::Error) -> SourceError {
    if e.kind() == std::io::ErrorKind::NotFound {
        return SourceError::NotFound;
    }
    SourceError::Upstream {
        backend: BACKEND,
        message: format!("file system: {}", e.kind()),
    }
}

/// Lists every regular file below `dir` as a blob named by its relative path (`/`-separated).
fn walk(dir: &Path) -> Result<Vec<BlobEntry>, SourceError> {
    let mut out = Vec::new();
    let mut pending = vec![(dir.to_path_buf(), String::new())];
    while let Some((path, prefix)) = pending.pop() {
        for entry in std::fs::read_dir(&path).map_err(io_error)? {
            let entry = entry.map_err(io_error)?;
            let Ok(file_name) = entry.file_name().into_string() else {
                continue; // Not UTF-8: cannot be a blob name.
            };
            // Symlinks are not followed: the served tree is exactly the folder's own files.
            let kind = entry.file_type().map_err(io_error)?;
            let name = format!("{prefix}{file_name}");
            if kind.is_dir() {
                pending.push((entry.path(), format!("{name}/")));
            } else if kind.is_file() {
                let size = entry.metadata().map_err(io_error)?.len();
                let content_type = content_type_for(&name);
                let dimensions = content_type
                    .starts_with("image/")
                    .then(|| imagesize::size(entry.path()).ok())
                    .flatten()
                    .and_then(|s| {
                        Some((u32::try_from(s.width).ok()?, u32::try_from(s.height).ok()?))
                    });
                out.push(BlobEntry {
                    name,
                    size,
                    content_type: Some(content_type),
                    dimensions,
                });
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
