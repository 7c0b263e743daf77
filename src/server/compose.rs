//! The composition root: the one place that turns settings into the service's parts. Every
//! part is built here once, fallibly (a bad pattern, CA file, catalog or credential names its
//! key), and handed down as a plain value: nothing below rebuilds what was checked here.
//!
//! Order: the leaves first (recogniser, HTTP client), then the backend for the source kind
//! with its Azure parts and encoder, the resolver over the backend, and the HTTP state last.

use std::sync::Arc;

use url::Url;

use crate::azure::{self, AzureBackend, AzureSettings};
use crate::config::EncoderChoice;
use crate::config::{
    AmsSourceSettings, Invalid, MkioSourceSettings, Settings, SourceSettings,
    uses_ams_container_sas,
};
use crate::http::auth::{Guard, JwtValidator};
use crate::http::events::EventsGuard;
use crate::http::{AppParts, AppState};
use crate::jobs::ffmpeg::process::Tools;
use crate::jobs::ffmpeg::{FfmpegJobs, FfmpegParts, OnFinished};
use crate::jobs::rest::{Encoder, RestJobs};
use crate::jobs::{self, Jobs};
use crate::recognise::Recogniser;
use crate::resolver::{Resolver, SharedTier};
use crate::source::{self, Backend, BlobWriter, Catalog, HealthCheck};

/// A backend and, where the source has one, its encoder; and what the ffmpeg encoder would
/// write with (or why it cannot).
pub struct Sourced {
    pub backend: Backend,
    pub encoder: Option<Arc<dyn Encoder>>,
    pub writer: Result<Arc<dyn BlobWriter>, String>,
}

/// The configured backend, instrumented (upstream metrics, concurrency bound, simulated
/// latency). `public_base_url` is where this service is reachable (local-mode URLs);
/// `http` is the client every outbound call shares.
pub fn backend(
    settings: &Settings,
    public_base_url: &Url,
    http: Option<&reqwest::Client>,
) -> Result<Sourced, Invalid> {
    let azure = |http: Option<&reqwest::Client>| {
        azure_parts(
            settings,
            http.expect("an HTTP client is built for every Azure source"),
        )
    };
    let account = &settings.storage.account;
    let writer: Result<Arc<dyn BlobWriter>, String>;
    let (backend, encoder, names): (Backend, Option<Arc<dyn Encoder>>, _) = match &settings.source {
        SourceSettings::Local(local) => {
            writer = Ok(Arc::new(source::local::LocalSource::new(
                local,
                public_base_url,
            )));
            let source = Arc::new(source::local::LocalSource::new(local, public_base_url));
            let backend = Backend {
                catalog: source.clone(),
                store: source.clone(),
                linker: source.clone(),
                health: vec![source.clone()],
                local_root: Some(local.root.clone()),
            };
            (backend, None, ("local", "local"))
        }
        SourceSettings::Storage(storage) => {
            let catalog: Arc<dyn Catalog> = match &storage.catalog {
                Some(path) => Arc::new(source::storage::StorageCatalog::load(path, account)?),
                None => Arc::new(source::storage::StorageCatalog::template(
                    &storage.container_template,
                    account,
                )),
            };
            let azure = azure(http)?;
            writer = azure.writer.clone();
            (
                over_azure(catalog, None, azure),
                None,
                ("storage", "storage"),
            )
        }
        SourceSettings::Mkio(mkio) => {
            let azure = azure(http)?;
            writer = azure.writer.clone();
            let catalog = Arc::new(mkio_catalog(settings, mkio, &azure)?);
            let encoder = Arc::new(jobs::mkio::MkioEncoder::new(catalog.clone()));
            let backend = over_azure(catalog.clone(), Some(catalog), azure);
            (
                backend,
                Some(encoder as Arc<dyn Encoder>),
                ("mkio", "storage"),
            )
        }
        SourceSettings::Ams(ams) => {
            let azure = azure(http)?;
            writer = azure.writer.clone();
            let catalog = Arc::new(ams_catalog(settings, ams, &azure)?);
            let encoder = Arc::new(jobs::ams::AmsEncoder::new(
                catalog.clone(),
                &settings.jobs.transform_api_version,
            ));
            let backend = over_azure(catalog.clone(), Some(catalog), azure);
            (
                backend,
                Some(encoder as Arc<dyn Encoder>),
                ("ams", "storage"),
            )
        }
    };
    let backend = backend.instrumented(
        names.0,
        names.1,
        settings.upstream.max_concurrency,
        settings.bench.upstream_latency,
    );
    Ok(Sourced {
        backend,
        encoder,
        writer,
    })
}

/// The Azure parts (storage access, links, credential) over the shared HTTP client.
fn azure_parts(settings: &Settings, http: &reqwest::Client) -> Result<AzureBackend, Invalid> {
    AzureBackend::new(
        AzureSettings {
            storage: &settings.storage,
            links: &settings.links,
            credential: settings.credential.as_ref(),
            upstream: &settings.upstream,
            media_lifetime: settings.jobs.timeout + std::time::Duration::from_secs(600),
        },
        http.clone(),
    )
}

fn ams_catalog(
    settings: &Settings,
    ams: &AmsSourceSettings,
    azure: &AzureBackend,
) -> Result<source::ams::AmsCatalog, Invalid> {
    let credential = azure
        .credential
        .clone()
        .ok_or_else(|| Invalid::new("credential", "is required by source.kind = \"ams\""))?;
    source::ams::AmsCatalog::new(
        ams,
        &settings.upstream,
        azure.http.clone(),
        credential,
        &settings.storage.account,
        uses_ams_container_sas(&settings.storage, &settings.links)
            .then_some(settings.links.lifetime),
    )
}

fn mkio_catalog(
    settings: &Settings,
    mkio: &MkioSourceSettings,
    azure: &AzureBackend,
) -> Result<source::mkio::MkioCatalog, Invalid> {
    source::mkio::MkioCatalog::new(
        mkio,
        &settings.upstream,
        azure.http.clone(),
        &settings.storage.account,
    )
}

/// What `catalog export` reads: the configured AMS or MK.IO catalog, built as the service
/// builds it (same HTTP client, credential or token, retries).
pub enum ExportSource {
    Ams(source::ams::AmsCatalog),
    Mkio(source::mkio::MkioCatalog),
}

/// The catalog `catalog export` lists, for `source.kind` `ams` or `mkio`.
pub fn export_source(settings: &Settings) -> Result<ExportSource, Invalid> {
    let azure = || azure_parts(settings, &azure::http_client(&settings.upstream)?);
    match &settings.source {
        SourceSettings::Ams(ams) => ams_catalog(settings, ams, &azure()?).map(ExportSource::Ams),
        SourceSettings::Mkio(mkio) => {
            mkio_catalog(settings, mkio, &azure()?).map(ExportSource::Mkio)
        }
        other => Err(Invalid::new(
            "source.kind",
            format!(
                "is \"{}\": catalog export reads an \"ams\" or \"mkio\" source (--from)",
                other.kind()
            ),
        )),
    }
}

/// What `catalog scan` lists: `storage.account`'s containers, with the access the storage
/// source lists blobs with (any source kind but `local`, which has no `[storage]`).
pub fn container_lister(
    settings: &Settings,
) -> Result<azure::containers::ContainerLister, Invalid> {
    if matches!(settings.source, SourceSettings::Local(_)) {
        return Err(Invalid::new(
            "source.kind",
            "is \"local\": catalog scan lists the containers of [storage]; set source.kind = \"storage\" (or \"ams\", \"mkio\") and storage.account",
        ));
    }
    let http = azure::http_client(&settings.upstream)?;
    let containers = azure_parts(settings, &http)?.containers;
    containers.check()?;
    Ok(containers)
}

/// A backend whose blobs are in Blob Storage: `catalog` finds them, the Azure parts list and
/// link them; `/readyz` reports on the catalog's upstream (when it has one) and Storage.
fn over_azure(
    catalog: Arc<dyn Catalog>,
    catalog_health: Option<Arc<dyn HealthCheck>>,
    azure: AzureBackend,
) -> Backend {
    let mut health: Vec<Arc<dyn HealthCheck>> = catalog_health.into_iter().collect();
    health.extend(azure.health);
    Backend {
        catalog,
        store: azure.store,
        linker: azure.linker,
        health,
        local_root: None,
    }
}

/// The shared HTTP client, when something calls out: an Azure source, or a JWKS to fetch
/// (`auth.jwt`, `events.entra`).
pub fn http_client(settings: &Settings) -> Result<Option<reqwest::Client>, Invalid> {
    let needed = !matches!(settings.source, SourceSettings::Local(_))
        || settings.auth.jwt.is_some()
        || settings.events.entra.is_some();
    needed
        .then(|| azure::http_client(&settings.upstream))
        .transpose()
}

/// The resolver alone (the `resolve` command), over the configured backend.
pub fn resolver(settings: &Settings, public_base_url: &Url) -> Result<Resolver, Invalid> {
    let recogniser = Recogniser::new(&settings.recognition)?;
    let http = http_client(settings)?;
    let sourced = backend(settings, public_base_url, http.as_ref())?;
    Ok(Resolver::with_shared_tier(
        settings.cache.clone(),
        settings.server.request_timeout,
        recogniser,
        sourced.backend,
        SharedTier::new(&settings.cache.shared)?,
    ))
}

/// The whole service's state. `wrap` sees the backend last (tests put a probe around it).
pub fn app_state(
    settings: &Settings,
    public_base_url: &Url,
    wrap: impl FnOnce(Backend) -> Backend,
) -> Result<AppState, Invalid> {
    let recogniser = Recogniser::new(&settings.recognition)?;
    jobs::check_settings(&settings.jobs)?;
    let http = http_client(settings)?;
    let Sourced {
        backend,
        encoder,
        writer,
    } = backend(settings, public_base_url, http.as_ref())?;
    let backend = wrap(backend);
    let jwt = settings.auth.jwt.clone().map(|jwt| {
        let http = http
            .clone()
            .expect("an HTTP client is built when auth.jwt is set");
        JwtValidator::new(jwt, http)
    });
    let events_jwt = settings
        .events
        .jwt_settings(settings.auth.jwt.as_ref())
        .map(|jwt| {
            let http = http
                .clone()
                .expect("an HTTP client is built when events.entra is set");
            JwtValidator::new(jwt, http)
        });
    let events = EventsGuard::new(&settings.events, events_jwt);
    let guard = Guard::new(&settings.auth, &settings.rate_limit, jwt, events);
    let health = backend.health.clone();
    let local_root = backend.local_root.clone();
    let (catalog, store) = (backend.catalog.clone(), backend.store.clone());
    let resolver = Resolver::with_shared_tier(
        settings.cache.clone(),
        settings.server.request_timeout,
        recogniser,
        backend,
        SharedTier::new(&settings.cache.shared)?,
    );
    let jobs = generation(settings, encoder, writer, (catalog, store), &resolver)?;
    Ok(AppState::new(AppParts {
        resolver,
        jobs,
        health,
        local_root,
        source_kind: settings.source.kind(),
        guard: Arc::new(guard),
        api: settings.api.clone(),
        server: settings.server.clone(),
        bench: settings.bench.clone(),
        draining: Default::default(),
        metrics_apart: settings.metrics.listen.is_some(),
    }))
}

/// The encoder behind the jobs API (`jobs.encoder`), or why there is none: the backend's own
/// (AMS, MK.IO) where there is one, else ffmpeg when it is installed and the source can be
/// written to. A finished ffmpeg job drops its asset's cached answers on every replica.
fn generation(
    settings: &Settings,
    encoder: Option<Arc<dyn Encoder>>,
    writer: Result<Arc<dyn BlobWriter>, String>,
    (catalog, store): (Arc<dyn Catalog>, Arc<dyn source::BlobStore>),
    resolver: &Resolver,
) -> Result<Result<Jobs, String>, Invalid> {
    let kind = settings.source.kind();
    let rest = |encoder| {
        Ok(Ok(Jobs::new(
            Arc::new(RestJobs::new(encoder, settings.jobs.clone())),
            settings.jobs.clone(),
        )))
    };
    let required = match (settings.jobs.encoder, encoder) {
        (Some(EncoderChoice::Backend) | None, Some(encoder)) => return rest(encoder),
        (Some(EncoderChoice::Backend), None) => {
            return Err(Invalid::new(
                "jobs.encoder",
                format!(
                    "is \"backend\", but the {kind} source has no encoder of its own; use \"ffmpeg\""
                ),
            ));
        }
        (Some(EncoderChoice::Ffmpeg), _) => true,
        (None, None) => false,
    };
    let unavailable = |key: &str, why: String| {
        if required {
            Err(Invalid::new(key, why))
        } else {
            Ok(Err(why))
        }
    };
    let writer = match writer {
        Ok(writer) => writer,
        Err(why) => return unavailable("jobs.encoder", why),
    };
    let tools = match Tools::find(
        &settings.jobs.ffmpeg_path,
        settings.jobs.ffprobe_path.as_deref(),
    ) {
        Ok(tools) => tools,
        Err(why) => return unavailable("jobs.ffmpeg_path", why),
    };
    let resolver = resolver.clone();
    let on_finished: OnFinished = Arc::new(move |location| {
        let resolver = resolver.clone();
        Box::pin(async move {
            resolver
                .invalidate_container(&location.account, &location.container)
                .await;
        })
    });
    let ffmpeg = FfmpegJobs::new(FfmpegParts {
        catalog,
        store,
        writer,
        tools,
        settings: settings.jobs.clone(),
        on_finished,
    });
    Ok(Ok(Jobs::new(Arc::new(ffmpeg), settings.jobs.clone())))
}

/// Everything [`app_state`] builds, checked without serving (`check-config`).
pub fn check(settings: &Settings) -> Result<(), Invalid> {
    let base = settings.server.public_base_url(settings.server.listen);
    app_state(settings, &base, |backend| backend).map(drop)
}
