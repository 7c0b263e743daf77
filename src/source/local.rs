//! The embedded default source: a folder with one sub-folder per asset, laid out like AMS
//! containers, whose files this service serves itself under `/local/`.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use url::Url;

use super::{
    AssetLocation, BlobStore, BlobWriter, Catalog, HealthCheck, Lease, Linker, MediaInput,
    PutCondition, SourceError, Stored, WriteError,
};
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

/// The ffmpeg encoder writes into the asset's folder; a job's "lease" is an exclusive lock on
/// `{name}.lock` beside its state file (released by the system when the process dies).
#[async_trait]
impl BlobWriter for LocalSource {
    async fn media_input(
        &self,
        location: &AssetLocation,
        name: &str,
        _lifetime: std::time::Duration,
    ) -> Result<MediaInput, WriteError> {
        let path = self.file(location, name)?;
        let path = tokio::fs::canonicalize(&path).await.map_err(io_error)?;
        Ok(MediaInput {
            target: path.to_string_lossy().into_owned(),
            protocols: "file",
            ca_file: None,
        })
    }

    async fn get(
        &self,
        location: &AssetLocation,
        name: &str,
        limit: usize,
    ) -> Result<Option<Stored>, WriteError> {
        let path = self.file(location, name)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.len() > limit as u64 => {
                return Err(WriteError::Source(SourceError::Upstream {
                    backend: BACKEND,
                    message: format!("{name} is larger than {limit} bytes"),
                }));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(e).into()),
        }
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => Bytes::from(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(e).into()),
        };
        let leased = match std::fs::File::open(lock_path(&path)) {
            Ok(file) => match file.try_lock() {
                Ok(()) => {
                    let _ = file.unlock();
                    false
                }
                Err(_) => true,
            },
            Err(_) => false,
        };
        Ok(Some(Stored { bytes, leased }))
    }

    async fn put(
        &self,
        location: &AssetLocation,
        name: &str,
        body: Bytes,
        _content_type: &str,
        condition: PutCondition<'_>,
    ) -> Result<(), WriteError> {
        let path = self.file(location, name)?;
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(write_error)?;
        }
        if matches!(condition, PutCondition::Absent) {
            use tokio::io::AsyncWriteExt;
            let mut file = match tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .await
            {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(WriteError::Conflict("BlobAlreadyExists".into()));
                }
                Err(e) => return Err(write_error(e)),
            };
            file.write_all(&body).await.map_err(write_error)?;
            return file.sync_all().await.map_err(write_error);
        }
        // Whole or not at all: written aside, then renamed over.
        let aside = path.with_file_name(format!(
            ".{}.{}",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("blob"),
            uuid::Uuid::new_v4().simple()
        ));
        tokio::fs::write(&aside, &body).await.map_err(write_error)?;
        tokio::fs::rename(&aside, &path).await.map_err(|e| {
            let _ = std::fs::remove_file(&aside);
            write_error(e)
        })
    }

    async fn delete(
        &self,
        location: &AssetLocation,
        name: &str,
        _lease: Option<&Lease>,
    ) -> Result<(), WriteError> {
        let path = self.file(location, name)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(write_error(e)),
        }
    }

    async fn acquire(
        &self,
        location: &AssetLocation,
        name: &str,
        _duration: std::time::Duration,
    ) -> Result<Option<Lease>, WriteError> {
        let path = self.file(location, name)?;
        if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Err(WriteError::Conflict("BlobNotFound".into()));
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(lock_path(&path))
            .map_err(write_error)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Lease {
                location: location.clone(),
                name: name.to_owned(),
                id: uuid::Uuid::new_v4().to_string(),
                lock: Some(std::sync::Arc::new(file)),
            })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(write_error(e)),
        }
    }

    /// A lock held by a live process does not expire: nothing to renew.
    async fn renew(&self, lease: &Lease) -> Result<(), WriteError> {
        match &lease.lock {
            Some(_) => Ok(()),
            None => Err(WriteError::Conflict("LeaseNotPresent".into())),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<(), WriteError> {
        if let Some(file) = &lease.lock {
            let _ = file.unlock();
        }
        Ok(())
    }
}

impl LocalSource {
    /// The file of blob `name`, refusing names that would leave the asset's folder.
    fn file(&self, location: &AssetLocation, name: &str) -> Result<PathBuf, WriteError> {
        if name
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(WriteError::Source(SourceError::Upstream {
                backend: BACKEND,
                message: "not a blob name".into(),
            }));
        }
        Ok(self.container_dir(location).join(name))
    }
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    path.with_file_name(name)
}

/// A write the file system refused: permissions are a refusal, like Storage's 403.
fn write_error(e: std::io::Error) -> WriteError {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
            WriteError::Refused {
                status: 403,
                code: "PermissionDenied".into(),
            }
        }
        _ => WriteError::Source(io_error(e)),
    }
}
