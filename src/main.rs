use std::path::PathBuf;
use std::process::ExitCode;

use ams_thumbnails::asset_id::AssetId;
use ams_thumbnails::catalog_tools::{self, CatalogCommand};
use ams_thumbnails::resolver::ResolveError;
use ams_thumbnails::server::{StartError, compose};
use ams_thumbnails::{Server, Settings, server, telemetry};
use clap::{Parser, Subcommand};

/// jemalloc, with background threads that hand freed pages back: see Cargo.toml.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Turns a video asset id into ready-to-use thumbnail URLs.
///
/// Sources (`source.kind`): `local` (a folder, the bundled samples by default), `storage`
/// (Azure Blob Storage alone: the containers AMS left behind, by template or catalog), `ams`
/// (Azure Media Services metadata through ARM, for accounts still reachable) and `mkio`
/// (MediaKind MK.IO, the AMS-compatible successor: `source.subscription`, a token, and
/// `storage.account` for its storage). Every setting can also come from the environment:
/// AMS_THUMBNAILS_<SECTION>__<KEY>. See README.md.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Configuration file (TOML); default: $AMS_THUMBNAILS_CONFIG, else config/default.toml
    /// when present; `none`: no file (defaults and environment only).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service (the default).
    Serve,
    /// Print the JSON answer for one asset, as `GET /assets/{id}/thumbnails` would.
    Resolve { asset_id: String },
    /// Print the effective configuration (secrets redacted) and exit.
    CheckConfig,
    /// Ask the running service's /healthz (on server.listen) and exit 0 when it answers 200:
    /// the container's health check, without a shell or curl.
    Healthcheck,
    /// Write the catalog file of `source.kind = "storage"` (`source.catalog`): `export` it
    /// from a still-reachable AMS account or MK.IO project, or `scan` the storage account's
    /// `asset-<GUID>` containers. Exit 2: configuration; 1: upstream or output failure.
    #[command(subcommand)]
    Catalog(CatalogCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The catalog tools load the settings themselves (`--from` may choose the source kind).
    let command = match cli.command {
        Some(Command::Catalog(command)) => {
            return catalog_tools::main(cli.config.as_deref(), command);
        }
        other => other,
    };
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ams-thumbnails: {e}");
            return ExitCode::from(2);
        }
    };
    match command.unwrap_or(Command::Serve) {
        // Everything the service would build is built (and so checked), nothing is served.
        Command::CheckConfig => run(settings.server.blocking_threads, async move {
            match compose::check(&settings) {
                Ok(()) => {
                    print!("{}", settings.to_redacted_toml());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ams-thumbnails: invalid configuration: {e}");
                    ExitCode::from(2)
                }
            }
        }),
        Command::Resolve { asset_id } => run(
            settings.server.blocking_threads,
            resolve(settings, asset_id),
        ),
        Command::Serve => run(settings.server.blocking_threads, serve(settings)),
        Command::Catalog(_) => unreachable!("handled before the settings are loaded"),
        Command::Healthcheck => run(1, async move {
            match server::healthcheck::check(settings.server.listen).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ams-thumbnails: unhealthy: {e}");
                    ExitCode::FAILURE
                }
            }
        }),
    }
}

fn run(blocking_threads: usize, fut: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(blocking_threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(fut),
        Err(e) => {
            eprintln!("ams-thumbnails: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> ExitCode {
    let tracing = match telemetry::init(&settings.log) {
        Ok(tracing) => tracing,
        Err(e) => {
            eprintln!("ams-thumbnails: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let code = serve_traced(settings).await;
    // The spans still queued leave before the process does.
    let _ = tokio::task::spawn_blocking(move || tracing.shutdown()).await;
    code
}

async fn serve_traced(settings: Settings) -> ExitCode {
    match server::fd_limit::raise() {
        Ok(limit) => tracing::debug!(open_files = limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "open-file limit not raised"),
    }
    let server = match Server::bind(settings).await {
        Ok(s) => s,
        Err(StartError::Config(e)) => {
            eprintln!("ams-thumbnails: invalid configuration: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = server::shutdown_after_delay(server.state().clone());
    match server.run_until(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}

async fn resolve(settings: Settings, raw_id: String) -> ExitCode {
    let id = match AssetId::parse(&raw_id) {
        Ok(id) => id,
        Err(e) => {
            eprintln!("ams-thumbnails: invalid asset id: {e}");
            return ExitCode::from(2);
        }
    };
    let base_url = settings.server.public_base_url(settings.server.listen);
    let resolver = match compose::resolver(&settings, &base_url) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ams-thumbnails: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    match resolver.resolve(&id).await {
        Ok(resolved) => {
            println!("{}", String::from_utf8_lossy(resolved.body()));
            ExitCode::SUCCESS
        }
        Err(ResolveError::NotFound) => {
            eprintln!("ams-thumbnails: asset {id} not found");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("ams-thumbnails: {e}");
            ExitCode::FAILURE
        }
    }
}
