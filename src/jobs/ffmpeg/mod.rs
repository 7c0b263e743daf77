//! The ffmpeg encoder: generation for the `storage` and `local` sources, where no AMS encoder
//! is left. Same API as the backends' encoders: request body, defaults, names, idempotency,
//! states, problems.
//!
//! - **Where.** A job works in a folder of the asset itself (`{asset prefix}` +
//!   `jobs.output_folder`, `thumbnails/{spec}` by default): its outputs, named as AMS names them
//!   (`{Basename}_{Label}_{Index}{Extension}`, a `{Basename}_sprite.jpg` with its `.vtt`), and
//!   its state document ([`document`]), so that the usual listing finds them and any replica
//!   answers for the job.
//! - **Names.** `{prefix}-{S}-{I}` as on the backends (then `-2`… for new attempts), where `I`
//!   names the asset's place, followed by `.` and the asset id in base64url: the name alone
//!   leads back to the document (through the catalog, as a read would).
//! - **One runner.** The replica that queues a job holds a blob lease on its document (a file
//!   lock for `local`), renewed while the job waits and runs. A document that is not final and
//!   not leased was left by a replica that died: the next request about it takes the job over
//!   (at most twice, then it is reported failed), so no job stays `Processing` forever.
//! - **Limits.** `jobs.max_concurrent` ffmpeg processes per replica, `jobs.timeout` per job,
//!   `jobs.max_output_bytes` per job; ffmpeg reads only with the input's protocols, from a URL
//!   or path this service made, and its stderr reaches the job's error only summarised.
//! - **Cancel.** The runner's replica stops the process at once; another replica leaves a
//!   marker beside the document that the runner sees within a second. Partial outputs are
//!   deleted and the job ends `Canceled`.

pub mod document;
mod input;
pub mod plan;
pub mod process;
mod runner;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::{Mutex, Semaphore, watch};

use super::{
    GenerateRequest, Generator, Job, JobSettings, JobState, JobsError, MAX_ATTEMPTS, Names, Status,
    Submitted, ThumbnailSpec, spec,
};
use crate::asset_id::AssetId;
use crate::source::rest::Refusal;
use crate::source::{
    AssetLocation, BlobStore, BlobWriter, Catalog, Lease, PutCondition, SourceError, WriteError,
};
use document::{CANCEL_MARKER, DOCUMENT_LIMIT, JOB_DOCUMENT, JobDocument};
use process::{Stop, Tools};

const BACKEND: &str = "ffmpeg";
/// How often the runner looks for a cancel marker and writes progress.
const TICK: Duration = Duration::from_secs(1);
/// Takeovers after which a job whose runners keep dying is reported failed.
const MAX_TAKEOVERS: u32 = 2;

/// Called when a job finished, with the asset's place: drops its cached answers (on every
/// replica, through the shared tier).
pub type OnFinished = Arc<dyn Fn(AssetLocation) -> BoxFuture<'static, ()> + Send + Sync>;

/// What the encoder works with, handed down from the composition root.
pub struct FfmpegParts {
    pub catalog: Arc<dyn Catalog>,
    pub store: Arc<dyn BlobStore>,
    pub writer: Arc<dyn BlobWriter>,
    pub tools: Tools,
    pub settings: JobSettings,
    pub on_finished: OnFinished,
}

#[derive(Clone)]
pub struct FfmpegJobs {
    inner: Arc<Inner>,
}

struct Inner {
    parts: FfmpegParts,
    slots: Semaphore,
    /// Submissions for one place go one at a time on this replica.
    stripes: Vec<Mutex<()>>,
    /// Jobs this replica runs, by document key: how to stop them.
    running: std::sync::Mutex<HashMap<String, watch::Sender<Option<Stop>>>>,
    /// Jobs seen finished (bounded): the answer's cache drop happens once, not per poll.
    finished: moka::future::Cache<String, ()>,
}

/// Where a job lives: the asset, its place, the job's folder.
#[derive(Debug, Clone)]
struct Place {
    id: AssetId,
    location: AssetLocation,
    /// 8 hex digits of the specification.
    digest: String,
    /// 12 hex digits of the asset's place.
    place_digest: String,
    /// The job's folder (no trailing slash), inside the container.
    folder: String,
}

impl Place {
    fn document(&self) -> String {
        format!("{}/{JOB_DOCUMENT}", self.folder)
    }

    fn marker(&self) -> String {
        format!("{}/{CANCEL_MARKER}", self.folder)
    }

    fn key(&self) -> String {
        format!(
            "{}/{}/{}",
            self.location.account,
            self.location.container,
            self.document()
        )
    }

    fn blob(&self, file: &str) -> String {
        format!("{}/{file}", self.folder)
    }
}

impl FfmpegJobs {
    pub fn new(parts: FfmpegParts) -> Self {
        let slots = Semaphore::new(parts.settings.max_concurrent);
        Self {
            inner: Arc::new(Inner {
                parts,
                slots,
                stripes: (0..64).map(|_| Mutex::new(())).collect(),
                running: Default::default(),
                finished: moka::future::Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(Duration::from_secs(24 * 3600))
                    .build(),
            }),
        }
    }
}

#[async_trait]
impl Generator for FfmpegJobs {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn generate(
        &self,
        id: &AssetId,
        request: &GenerateRequest,
    ) -> Result<Submitted, JobsError> {
        let inner = &self.inner;
        let settings = &inner.parts.settings;
        let spec = ThumbnailSpec::resolve(request, &settings.defaults)?;
        let location = inner.parts.catalog.locate(id).await?;
        let place = inner.place(id.clone(), location, spec.digest());
        let stripe = &inner.stripes[stripe_of(&place.key(), inner.stripes.len())];
        let _one_at_a_time = stripe.lock().await;

        let existing = inner.read(&place).await?;
        let attempt = match &existing {
            None => 1,
            Some((doc, leased)) => match doc.state {
                JobState::Finished => return Ok(inner.existing(doc)),
                JobState::Error | JobState::Canceled => {
                    if doc.attempt >= MAX_ATTEMPTS {
                        return Err(JobsError::AttemptsExhausted {
                            last: Box::new(doc.job()),
                        });
                    }
                    doc.attempt + 1
                }
                _ if *leased => return Ok(inner.existing(doc)),
                // Left by a replica that died: taken over here.
                _ => {
                    inner.clone().take_over(&place, doc.clone()).await?;
                    let (doc, _) = inner.read(&place).await?.ok_or(JobsError::JobNotFound)?;
                    return Ok(inner.existing(&doc));
                }
            },
        };
        let video = inner.video(&place).await?;
        let name = inner.job_name(&place, attempt);
        let mut doc = JobDocument {
            version: 1,
            name,
            transform: format!("{}-{}", settings.name_prefix, place.digest),
            asset_id: id.to_string(),
            request: spec.as_request(),
            state: JobState::Queued,
            progress: None,
            input: Some(video),
            created: document::now(),
            started: None,
            ended: None,
            error: None,
            attempt,
            takeovers: 0,
            previous: Vec::new(),
            outputs: Vec::new(),
            sprite: None,
        };
        let lease = match existing {
            None => {
                // Created only if absent: of two replicas asked at once, one creates it.
                match inner.put_document(&place, &doc, PutCondition::Absent).await {
                    Err(JobsError::Source(SourceError::Upstream { message, .. }))
                        if message == "exists" =>
                    {
                        let (doc, _) = inner.read(&place).await?.ok_or(JobsError::JobNotFound)?;
                        return Ok(inner.existing(&doc));
                    }
                    other => other?,
                }
                match inner.acquire(&place).await? {
                    Some(lease) => lease,
                    None => return Ok(inner.existing(&doc)),
                }
            }
            Some((old, _)) => {
                // A new attempt: under the old document's lease, so that one replica makes it.
                let Some(lease) = inner.acquire(&place).await? else {
                    let (doc, _) = inner.read(&place).await?.ok_or(JobsError::JobNotFound)?;
                    return Ok(inner.existing(&doc));
                };
                doc.previous = old.previous.clone();
                doc.previous.push(document::PreviousAttempt {
                    name: old.name.clone(),
                    state: old.state,
                    ended: old.ended.clone(),
                    error: old.error.clone(),
                });
                let _ = inner
                    .parts
                    .writer
                    .delete(&place.location, &place.marker(), None)
                    .await;
                inner
                    .put_document(&place, &doc, PutCondition::Leased(&lease))
                    .await?;
                lease
            }
        };
        metrics::counter!("thumbnail_jobs_submitted_total", "backend" => BACKEND, "result" => "created").increment(1);
        tracing::info!(
            backend = BACKEND,
            job = doc.name,
            asset_id = %place.id,
            attempt,
            "thumbnail job queued"
        );
        let job = doc.job();
        inner.clone().spawn(place, lease, doc, spec);
        Ok(Submitted { job, created: true })
    }

    async fn status(&self, name: &str) -> Result<Status, JobsError> {
        let inner = &self.inner;
        let (place, base) = inner.place_of(name).await?;
        let (mut doc, leased) = inner.read(&place).await?.ok_or(JobsError::JobNotFound)?;
        if base_of(&doc.name) != base {
            let job = doc
                .previous
                .iter()
                .find(|p| base_of(&p.name) == base)
                .and_then(|p| doc.previous_job(&p.name))
                .ok_or(JobsError::JobNotFound)?;
            return Ok(Status {
                job,
                newly_finished: false,
            });
        }
        if !doc.state.is_final() {
            if !leased {
                inner.clone().take_over(&place, doc.clone()).await?;
                doc = inner.read(&place).await?.ok_or(JobsError::JobNotFound)?.0;
            } else if inner.marked(&place).await {
                doc.state = JobState::Canceling;
            }
        }
        let mut newly_finished = false;
        if doc.state.is_final()
            && inner
                .finished
                .entry(doc.name.clone())
                .or_insert(())
                .await
                .is_fresh()
        {
            newly_finished = doc.state == JobState::Finished;
            metrics::counter!("thumbnail_jobs_completed_total", "backend" => BACKEND, "state" => doc.state.as_str()).increment(1);
        }
        Ok(Status {
            job: doc.job(),
            newly_finished,
        })
    }

    async fn cancel(&self, name: &str) -> Result<Job, JobsError> {
        let inner = &self.inner;
        let (place, base) = inner.place_of(name).await?;
        let (doc, leased) = inner.read(&place).await?.ok_or(JobsError::JobNotFound)?;
        if base_of(&doc.name) != base {
            // An earlier attempt: final by definition.
            return doc
                .previous
                .iter()
                .find(|p| base_of(&p.name) == base)
                .and_then(|p| doc.previous_job(&p.name))
                .ok_or(JobsError::JobNotFound);
        }
        if doc.state.is_final() {
            return Ok(doc.job());
        }
        let local = inner
            .running
            .lock()
            .expect("running jobs lock")
            .get(&place.key())
            .cloned();
        if let Some(stop) = local {
            let _ = stop.send(Some(Stop::Canceled));
            // The runner kills ffmpeg and cleans up: usually well within this.
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && inner.is_running(&place) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        } else if leased {
            // Another replica runs it: the marker reaches it within a second.
            inner
                .parts
                .writer
                .put(
                    &place.location,
                    &place.marker(),
                    Bytes::from_static(b"cancel"),
                    "text/plain",
                    PutCondition::Any,
                )
                .await
                .map_err(|e| write_failure(e, "request the cancel"))?;
        } else if let Some(lease) = inner.acquire(&place).await? {
            // Nobody runs it: canceled here.
            let doc = inner.read(&place).await?.ok_or(JobsError::JobNotFound)?.0;
            let state = Arc::new(Mutex::new(doc));
            inner.end_canceled(&place, &lease, &state, None).await;
            let _ = inner.parts.writer.release(&lease).await;
        }
        let (mut doc, _) = inner.read(&place).await?.ok_or(JobsError::JobNotFound)?;
        if !doc.state.is_final() {
            doc.state = JobState::Canceling;
        }
        Ok(doc.job())
    }
}

impl Inner {
    fn place(&self, id: AssetId, location: AssetLocation, digest: String) -> Place {
        let place_digest = spec::hex_digest(
            format!(
                "{}/{}/{}",
                location.account, location.container, location.prefix
            )
            .as_bytes(),
            12,
        );
        let folder = format!(
            "{}{}",
            location.prefix,
            self.parts.settings.output_folder.replace("{spec}", &digest)
        );
        Place {
            id,
            location,
            digest,
            place_digest,
            folder,
        }
    }

    fn job_name(&self, place: &Place, attempt: u32) -> String {
        let prefix = &self.parts.settings.name_prefix;
        let base = format!("{prefix}-{}-{}", place.digest, place.place_digest);
        let base = if attempt > 1 {
            format!("{base}-{attempt}")
        } else {
            base
        };
        format!("{base}.{}", B64.encode(place.id.as_str()))
    }

    /// The place a job name leads to (through the catalog), and the name's base.
    async fn place_of(&self, name: &str) -> Result<(Place, String), JobsError> {
        let prefix = &self.parts.settings.name_prefix;
        let (base, encoded) = name.split_once('.').ok_or(JobsError::InvalidName)?;
        let transform = Names::transform_of(prefix, base).ok_or(JobsError::InvalidName)?;
        let digest = transform[prefix.len() + 1..].to_owned();
        let id = B64
            .decode(encoded)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| AssetId::parse(&s).ok())
            .ok_or(JobsError::InvalidName)?;
        let location = match self.parts.catalog.locate(&id).await {
            Ok(l) => l,
            Err(SourceError::NotFound) => return Err(JobsError::JobNotFound),
            Err(e) => return Err(e.into()),
        };
        let place = self.place(id, location, digest);
        // The name's place must be where the id leads now.
        let named_place = base
            .strip_prefix(&format!("{prefix}-{}-", place.digest))
            .and_then(|rest| rest.split('-').next());
        if named_place != Some(place.place_digest.as_str()) {
            return Err(JobsError::JobNotFound);
        }
        Ok((place, base.to_owned()))
    }

    fn existing(&self, doc: &JobDocument) -> Submitted {
        metrics::counter!("thumbnail_jobs_submitted_total", "backend" => BACKEND, "result" => "existing").increment(1);
        Submitted {
            job: doc.job(),
            created: false,
        }
    }

    fn is_running(&self, place: &Place) -> bool {
        self.running
            .lock()
            .expect("running jobs lock")
            .contains_key(&place.key())
    }

    /// The document and whether a lease is held on it.
    async fn read(&self, place: &Place) -> Result<Option<(JobDocument, bool)>, JobsError> {
        let stored = self
            .parts
            .writer
            .get(&place.location, &place.document(), DOCUMENT_LIMIT)
            .await
            .map_err(|e| write_failure(e, "read the job's state"))?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        let doc = JobDocument::parse(&stored.bytes).map_err(|message| {
            JobsError::Source(SourceError::Upstream {
                backend: BACKEND,
                message,
            })
        })?;
        Ok(Some((doc, stored.leased)))
    }

    async fn marked(&self, place: &Place) -> bool {
        matches!(
            self.parts
                .writer
                .get(&place.location, &place.marker(), 64)
                .await,
            Ok(Some(_))
        )
    }

    async fn put_document(
        &self,
        place: &Place,
        doc: &JobDocument,
        condition: PutCondition<'_>,
    ) -> Result<(), JobsError> {
        match self
            .parts
            .writer
            .put(
                &place.location,
                &place.document(),
                doc.to_bytes(),
                "application/json",
                condition,
            )
            .await
        {
            Err(WriteError::Conflict(_)) if matches!(condition, PutCondition::Absent) => {
                Err(JobsError::Source(SourceError::Upstream {
                    backend: BACKEND,
                    message: "exists".into(),
                }))
            }
            other => other.map_err(|e| write_failure(e, "write the job's state")),
        }
    }

    async fn acquire(&self, place: &Place) -> Result<Option<Lease>, JobsError> {
        self.parts
            .writer
            .acquire(
                &place.location,
                &place.document(),
                self.parts.settings.lease,
            )
            .await
            .map_err(|e| write_failure(e, "lease the job's state"))
    }
}

/// The specification a document was made for (it keeps every field, so the defaults of the
/// replica that takes a job over do not matter).
fn spec_of(doc: &JobDocument, settings: &JobSettings) -> Result<ThumbnailSpec, JobsError> {
    Ok(ThumbnailSpec::resolve(&doc.request, &settings.defaults)?)
}

fn base_of(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

fn stripe_of(key: &str, stripes: usize) -> usize {
    let digest = spec::hex_digest(key.as_bytes(), 8);
    usize::from_str_radix(&digest, 16).unwrap_or(0) % stripes
}

/// A write failure as the API reports it: Storage's refusal is `409 generation-refused`.
fn write_failure(e: WriteError, action: &'static str) -> JobsError {
    match e {
        WriteError::Refused { status, code } => JobsError::Refused {
            backend: "storage",
            action,
            refusal: Refusal {
                status,
                code,
                message: "the service's identity may read but not write here: give it the \
                          Storage Blob Data Contributor role on the container (or an account key)"
                    .into(),
            },
        },
        WriteError::Conflict(code) => JobsError::Source(SourceError::Upstream {
            backend: "storage",
            message: format!("{action}: conflict {code}"),
        }),
        WriteError::Source(s) => JobsError::Source(s),
    }
}

fn describe(e: &WriteError) -> String {
    match e {
        WriteError::Refused { status, code } => {
            format!("storage refused the write (HTTP {status} {code})")
        }
        WriteError::Conflict(code) => format!("conflict {code}"),
        WriteError::Source(s) => s.to_string(),
    }
}
