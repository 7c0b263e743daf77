//! `ams-thumbnails catalog export|scan`: write the catalog file the storage source reads
//! (`source.kind = "storage"`, `source.catalog`), from a still-reachable AMS account or MK.IO
//! project, or from the `asset-<GUID>` containers of the storage account.
//!
//! The parts come from [`crate::server::compose`], built from the usual settings (file and
//! `AMS_THUMBNAILS_*`), exactly as the service builds them. Rows go to `--output` (written
//! whole, then renamed into place) or stdout; progress goes to stderr. Exit codes: 0 done,
//! 2 configuration, 1 upstream or output failure.

mod output;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};

use crate::config::{ConfigError, Invalid, Settings};
use crate::server::compose::{self, ExportSource};
use crate::source::SourceError;
use crate::source::storage::CatalogRow;
pub use output::Format;
use output::{Output, Progress};

/// `ams-thumbnails catalog ...`
#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Write the catalog of a still-reachable AMS account or MK.IO project: one row per asset
    /// (name,alternateId,assetId,container,storageAccount,prefix,storageEncryptionFormat),
    /// every page of the asset list followed.
    Export {
        /// The upstream to list; default: `source.kind` when it is `ams` or `mkio`. Given, it
        /// sets `source.kind` above the file and the environment (a file whose `[source]`
        /// names another kind loses that table: the AMS_THUMBNAILS_SOURCE__* variables then
        /// configure the source).
        #[arg(long = "from", value_enum)]
        from: Option<Upstream>,
        /// Where to write the catalog (written whole, then renamed into place); default: stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Default: by the output's extension (`.json` -> json), else csv.
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Write one row per container of `storage.account` named `asset-<GUID>` (assetId = the
    /// GUID; name and alternateId empty): the catalog of an account AMS left behind.
    Scan {
        /// Where to write the catalog (written whole, then renamed into place); default: stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Default: by the output's extension (`.json` -> json), else csv.
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
}

/// The upstreams a catalog can be exported from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Upstream {
    Ams,
    Mkio,
}

impl Upstream {
    fn kind(self) -> &'static str {
        match self {
            Upstream::Ams => "ams",
            Upstream::Mkio => "mkio",
        }
    }
}

/// Why a command failed: its exit code and message.
enum Failure {
    /// Exit 2.
    Config(String),
    /// Exit 1.
    Failed(String),
}

impl From<Invalid> for Failure {
    fn from(e: Invalid) -> Self {
        Failure::Config(format!("invalid configuration: {e}"))
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Config(e.to_string())
    }
}

/// Runs a `catalog` command with the settings of `config` (as `--config` names it).
pub fn main(config: Option<&Path>, command: CatalogCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ams-thumbnails: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match command {
            CatalogCommand::Export {
                from,
                output,
                format,
            } => {
                export(
                    config,
                    from,
                    Output::new(output, format).map_err(Failure::Config)?,
                )
                .await
            }
            CatalogCommand::Scan { output, format } => {
                scan(
                    config,
                    Output::new(output, format).map_err(Failure::Config)?,
                )
                .await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(message)) => {
            eprintln!("ams-thumbnails: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(message)) => {
            eprintln!("ams-thumbnails: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn export(
    config: Option<&Path>,
    from: Option<Upstream>,
    output: Output,
) -> Result<(), Failure> {
    let settings = Settings::load_as(config, from.map(Upstream::kind))?;
    let source = compose::export_source(&settings)?;
    let mut progress = Progress::on_stderr();
    let mut rows: Vec<CatalogRow> = Vec::new();
    let mut skipped = 0usize;
    let mut on_page = |page: crate::source::storage::ExportPage| {
        for why in page.skipped {
            skipped += 1;
            progress.warn(&format!("skipped {why}"));
        }
        for row in page.rows {
            match output::unwritable(&row) {
                Some(why) => {
                    skipped += 1;
                    progress.warn(&format!("skipped {}: {why}", row.name));
                }
                None => rows.push(row),
            }
        }
        progress.show(&format!("exported {} assets", rows.len()));
    };
    let (listed, backend) = match &source {
        ExportSource::Ams(ams) => (ams.export(&mut on_page).await, "AMS"),
        ExportSource::Mkio(mkio) => (mkio.export(&mut on_page).await, "MK.IO"),
    };
    progress.finish();
    listed.map_err(|e| upstream_failure(backend, e))?;
    write(&output, &rows)?;
    let skipped = match skipped {
        0 => String::new(),
        n => format!(", skipped {n}"),
    };
    eprintln!(
        "ams-thumbnails: exported {} assets from {backend}{skipped} to {}",
        rows.len(),
        output.describe()
    );
    Ok(())
}

async fn scan(config: Option<&Path>, output: Output) -> Result<(), Failure> {
    let settings = Settings::load(config)?;
    let lister = compose::container_lister(&settings)?;
    let account = lister.account().to_owned();
    let mut progress = Progress::on_stderr();
    let mut rows: Vec<CatalogRow> = Vec::new();
    let mut listed = 0usize;
    let result = lister
        .list("asset-", |names| {
            listed += names.len();
            rows.extend(names.into_iter().filter_map(|container| {
                let guid = asset_guid(&container)?;
                Some(CatalogRow {
                    asset_id: guid,
                    container,
                    storage_account: account.clone(),
                    ..CatalogRow::default()
                })
            }));
            progress.show(&format!(
                "found {} asset containers ({listed} containers listed)",
                rows.len()
            ));
        })
        .await;
    progress.finish();
    result.map_err(|e| match e {
        SourceError::NotFound => Failure::Failed(
            "listing the containers failed: the storage endpoint answered 404 (check \
             storage.endpoint and storage.account)"
                .into(),
        ),
        e => upstream_failure("Blob Storage", e),
    })?;
    write(&output, &rows)?;
    eprintln!(
        "ams-thumbnails: found {} asset containers in {account} ({listed} listed) to {}",
        rows.len(),
        output.describe()
    );
    Ok(())
}

/// The GUID of a container named `asset-<GUID>` (lower-case, hyphenated, as AMS named them).
fn asset_guid(container: &str) -> Option<String> {
    let rest = container.strip_prefix("asset-")?;
    let guid = uuid::Uuid::try_parse(rest).ok()?.hyphenated().to_string();
    (guid == rest).then_some(guid)
}

fn write(output: &Output, rows: &[CatalogRow]) -> Result<(), Failure> {
    output
        .write(rows)
        .map_err(|e| Failure::Failed(format!("cannot write {}: {e}", output.describe())))
}

/// An upstream's failure, said plainly (domain errors carry no secrets).
fn upstream_failure(backend: &str, e: SourceError) -> Failure {
    let hint = match &e {
        SourceError::Misconfigured { .. } => " (check the credential or token and its role)",
        SourceError::Unavailable { .. } => " (is the endpoint reachable?)",
        _ => "",
    };
    Failure::Failed(format!("listing {backend} failed: {e}{hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_asset_guid_containers_are_assets() {
        assert_eq!(
            asset_guid("asset-1b4f8e2a-5c3d-4e6f-9a7b-0c1d2e3f4a5b").as_deref(),
            Some("1b4f8e2a-5c3d-4e6f-9a7b-0c1d2e3f4a5b")
        );
        for other in [
            "asset-",
            "asset-intro",
            "asset-1b4f8e2a5c3d4e6f9a7b0c1d2e3f4a5b",
            "asset-1b4f8e2a-5c3d-4e6f-9a7b-0c1d2e3f4a5b-old",
            "media",
            "thumbs-1b4f8e2a-5c3d-4e6f-9a7b-0c1d2e3f4a5b",
        ] {
            assert_eq!(asset_guid(other), None, "{other}");
        }
    }
}
