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
pub mod plan;
pub mod process;

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
use crate::model::{GeneratedOutput, content_type_for};
use crate::source::rest::Refusal;
use crate::source::{
    AssetLocation, BlobStore, BlobWriter, Catalog, Lease, PutCondition, SourceError, WriteError,
};
use document::{CANCEL_MARKER, DOCUMENT_LIMIT, DocumentError, JOB_DOCUMENT, JobDocument};
use plan::Plan;
use process::{RunError, Stop, Tools};

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

    /// The input video: the configured pattern's largest match, else the largest `.mp4`
    /// beside an `.ism` manifest, else the largest `.mp4`. Outputs of jobs are never inputs.
    async fn video(&self, place: &Place) -> Result<String, JobsError> {
        let blobs = self.parts.store.list(&place.location).await?;
        let outputs_root = self
            .parts
            .settings
            .output_folder
            .split("{spec}")
            .next()
            .unwrap_or_default()
            .to_owned();
        let candidates: Vec<_> = blobs
            .iter()
            .filter(|b| {
                let relative = b
                    .name
                    .strip_prefix(&place.location.prefix)
                    .unwrap_or(&b.name);
                outputs_root.is_empty() || !relative.starts_with(&outputs_root)
            })
            .collect();
        let chosen = match &self.parts.settings.input_pattern {
            Some(pattern) => candidates
                .iter()
                .filter(|b| {
                    let relative = b
                        .name
                        .strip_prefix(&place.location.prefix)
                        .unwrap_or(&b.name);
                    glob(pattern, relative)
                })
                .max_by_key(|b| b.size)
                .copied(),
            None => {
                let mp4s: Vec<_> = candidates
                    .iter()
                    .filter(|b| b.name.to_ascii_lowercase().ends_with(".mp4"))
                    .collect();
                let ism_folders: Vec<&str> = candidates
                    .iter()
                    .filter(|b| b.name.to_ascii_lowercase().ends_with(".ism"))
                    .map(|b| folder_of(&b.name))
                    .collect();
                mp4s.iter()
                    .filter(|b| ism_folders.contains(&folder_of(&b.name)))
                    .max_by_key(|b| b.size)
                    .or_else(|| mp4s.iter().max_by_key(|b| b.size))
                    .map(|b| **b)
            }
        };
        chosen
            .map(|b| b.name.clone())
            .ok_or_else(|| JobsError::NoVideo {
                pattern: self.parts.settings.input_pattern.clone(),
            })
    }

    /// Takes over a job its runner left (no lease on a document that is not final).
    async fn take_over(self: Arc<Self>, place: &Place, doc: JobDocument) -> Result<(), JobsError> {
        let Some(lease) = self.acquire(place).await? else {
            return Ok(()); // another replica was faster
        };
        let mut doc = doc;
        if doc.state == JobState::Canceling || self.marked(place).await {
            let state = Arc::new(Mutex::new(doc));
            self.end_canceled(place, &lease, &state, None).await;
            let _ = self.parts.writer.release(&lease).await;
            return Ok(());
        }
        doc.takeovers += 1;
        if doc.takeovers > MAX_TAKEOVERS {
            doc.state = JobState::Error;
            doc.ended = Some(document::now());
            doc.error = Some(DocumentError::new(
                "WorkerLost",
                format!(
                    "the replicas running this job stopped {} times; not tried again",
                    doc.takeovers
                ),
            ));
            let saved = self
                .put_document(place, &doc, PutCondition::Leased(&lease))
                .await;
            let _ = self.parts.writer.release(&lease).await;
            return saved;
        }
        tracing::warn!(
            job = doc.name,
            takeovers = doc.takeovers,
            "thumbnail job taken over from a replica that stopped"
        );
        doc.state = JobState::Queued;
        doc.progress = None;
        self.put_document(place, &doc, PutCondition::Leased(&lease))
            .await?;
        let spec = spec_of(&doc, &self.parts.settings)?;
        self.spawn(place.clone(), lease, doc, spec);
        Ok(())
    }

    fn spawn(self: Arc<Self>, place: Place, lease: Lease, doc: JobDocument, spec: ThumbnailSpec) {
        let (stop, stopped) = watch::channel(None);
        self.running
            .lock()
            .expect("running jobs lock")
            .insert(place.key(), stop.clone());
        metrics::gauge!("thumbnail_jobs_running", "backend" => BACKEND).increment(1.0);
        tokio::spawn(async move {
            let key = place.key();
            self.run(place, lease, doc, spec, stop, stopped).await;
            self.running.lock().expect("running jobs lock").remove(&key);
            metrics::gauge!("thumbnail_jobs_running", "backend" => BACKEND).decrement(1.0);
        });
    }

    /// A job, from waiting for a slot to its final state.
    async fn run(
        self: &Arc<Self>,
        place: Place,
        lease: Lease,
        doc: JobDocument,
        spec: ThumbnailSpec,
        stop: watch::Sender<Option<Stop>>,
        mut stopped: watch::Receiver<Option<Stop>>,
    ) {
        let state = Arc::new(Mutex::new(doc));
        let progress = Arc::new(std::sync::atomic::AtomicU8::new(0));
        let keeper = tokio::spawn(self.clone().keep(
            place.clone(),
            lease.clone(),
            state.clone(),
            progress.clone(),
            stop.clone(),
        ));
        let outcome = async {
            let _slot = tokio::select! {
                permit = self.slots.acquire() => permit.expect("the slots are never closed"),
                reason = stopped.wait_for(Option::is_some) => {
                    let reason = reason.ok().and_then(|r| r.clone()).unwrap_or(Stop::Abandoned);
                    return Err(RunError::Stopped(reason));
                }
            };
            {
                let mut doc = state.lock().await;
                doc.state = JobState::Processing;
                doc.progress = Some(0);
                doc.started = Some(document::now());
                self.save(&place, &lease, &doc).await;
            }
            let started = Instant::now();
            let result = self
                .execute(&place, &spec, &state, &progress, stopped.clone())
                .await;
            metrics::histogram!("thumbnail_job_duration_seconds", "backend" => BACKEND)
                .record(started.elapsed().as_secs_f64());
            result
        }
        .await;
        keeper.abort();
        match outcome {
            Ok(()) => {
                {
                    let mut doc = state.lock().await;
                    doc.state = JobState::Finished;
                    doc.progress = Some(100);
                    doc.ended = Some(document::now());
                    self.save(&place, &lease, &doc).await;
                    tracing::info!(
                        job = doc.name,
                        thumbnails = doc.outputs.len(),
                        "thumbnail job finished"
                    );
                }
                (self.parts.on_finished)(place.location.clone()).await;
            }
            Err(RunError::Stopped(Stop::Canceled)) => {
                self.end_canceled(&place, &lease, &state, None).await;
            }
            Err(RunError::Stopped(Stop::Abandoned)) => {
                // The lease was lost (or the replica stops): the job is someone else's now.
                tracing::warn!(asset_id = %place.id, "thumbnail job abandoned: its lease was lost");
                return;
            }
            Err(RunError::Stopped(Stop::TimedOut)) => {
                let timeout = self.parts.settings.timeout;
                self.end_failed(
                    &place,
                    &lease,
                    &state,
                    DocumentError::new(
                        "JobTimedOut",
                        format!(
                            "the job ran longer than jobs.timeout ({}) and was stopped",
                            format_args!("{} s", timeout.as_secs())
                        ),
                    ),
                )
                .await;
            }
            Err(RunError::Failed(failure)) => {
                self.end_failed(
                    &place,
                    &lease,
                    &state,
                    DocumentError::new(failure.code, failure.message),
                )
                .await;
            }
        }
        let _ = self
            .parts
            .writer
            .delete(&place.location, &place.marker(), None)
            .await;
        let _ = self.parts.writer.release(&lease).await;
    }

    /// While a job waits or runs: renews its lease, stops it on a cancel marker or at its
    /// timeout, writes its progress.
    async fn keep(
        self: Arc<Self>,
        place: Place,
        lease: Lease,
        state: Arc<Mutex<JobDocument>>,
        progress: Arc<std::sync::atomic::AtomicU8>,
        stop: watch::Sender<Option<Stop>>,
    ) {
        let renew_every = self.parts.settings.lease / 3;
        let deadline = Instant::now() + self.parts.settings.timeout;
        let mut renewed = Instant::now();
        let mut written = 0u8;
        loop {
            tokio::time::sleep(TICK).await;
            if Instant::now() >= deadline {
                let _ = stop.send(Some(Stop::TimedOut));
                return;
            }
            if renewed.elapsed() >= renew_every {
                match self.parts.writer.renew(&lease).await {
                    Ok(()) => renewed = Instant::now(),
                    Err(WriteError::Conflict(_)) => {
                        let _ = stop.send(Some(Stop::Abandoned));
                        return;
                    }
                    // A passing failure: tried again next tick, the lease still has 2/3 left.
                    Err(_) => {}
                }
            }
            if self.marked(&place).await {
                let _ = stop.send(Some(Stop::Canceled));
                return;
            }
            let now = progress.load(std::sync::atomic::Ordering::Relaxed);
            if now != written {
                let mut doc = state.lock().await;
                if doc.state == JobState::Processing {
                    doc.progress = Some(now);
                    self.save(&place, &lease, &doc).await;
                    written = now;
                }
            }
        }
    }

    /// Probe, plan, run ffmpeg, check and upload: the outputs are in the document after.
    async fn execute(
        &self,
        place: &Place,
        spec: &ThumbnailSpec,
        state: &Mutex<JobDocument>,
        progress: &std::sync::atomic::AtomicU8,
        stopped: watch::Receiver<Option<Stop>>,
    ) -> Result<(), RunError> {
        let writer = &self.parts.writer;
        let failed = |code: &'static str, message: String| {
            RunError::Failed(process::Failure { code, message })
        };
        let video = state.lock().await.input.clone().unwrap_or_default();
        let input = writer
            .media_input(&place.location, &video, self.parts.settings.timeout)
            .await
            .map_err(|e| failed("InputUnreadable", describe(&e)))?;
        let probe = self
            .parts
            .tools
            .probe(&input)
            .await
            .map_err(RunError::Failed)?;
        let plan = Plan::new(spec, probe, &video).map_err(|e| failed(e.code, e.message))?;
        let work = WorkDir::new()
            .map_err(|e| failed("EncoderFailed", format!("no work folder: {}", e.kind())))?;
        let args = plan.arguments(
            &input.target,
            input.protocols,
            input.ca_file.as_deref(),
            work.path(),
        );
        // The command as run, the input shown as `<input>` (a URL with a SAS, or a path):
        // what `bench/encode.py` runs directly to measure this service's overhead.
        let shown: Vec<&str> = args
            .iter()
            .map(|a| {
                if *a == input.target {
                    "<input>"
                } else {
                    a.as_str()
                }
            })
            .collect();
        let job = state.lock().await.name.clone();
        tracing::info!(job, args = ?shown, output = %work.path().display(), "ffmpeg started");
        let span = (plan.end - plan.start).max(0.001);
        self.parts
            .tools
            .run(
                &args,
                &input.target,
                |done| {
                    let percent = (done / span * 100.0).clamp(0.0, 99.0) as u8;
                    progress.store(percent, std::sync::atomic::Ordering::Relaxed);
                },
                stopped.clone(),
            )
            .await?;

        // What ffmpeg wrote, checked before anything is uploaded.
        let mut files = Vec::new();
        let mut total = 0u64;
        for index in 1..=plan.times.len() {
            let path = work
                .path()
                .join(format!("t_{index:06}.{}", plan.extension()));
            match std::fs::metadata(&path) {
                Ok(m) => {
                    total += m.len();
                    files.push(path);
                }
                Err(_) => break,
            }
        }
        let sprite_path = work.path().join("sprite.jpg");
        if plan.grid.is_some() {
            total += std::fs::metadata(&sprite_path)
                .map(|m| m.len())
                .unwrap_or(0);
        }
        if files.is_empty() {
            return Err(failed(
                "ContentMalformed",
                "ffmpeg decoded no frame at the requested times".into(),
            ));
        }
        if total > self.parts.settings.max_output_bytes {
            return Err(failed(
                "OutputTooLarge",
                format!(
                    "the outputs take {total} bytes, more than jobs.max_output_bytes ({})",
                    self.parts.settings.max_output_bytes
                ),
            ));
        }

        let mut outputs = Vec::with_capacity(files.len());
        for (i, path) in files.iter().enumerate() {
            let reason = stopped.borrow().clone();
            if let Some(reason) = reason {
                state.lock().await.outputs = outputs;
                return Err(RunError::Stopped(reason));
            }
            let name = place.blob(&plan.thumbnail_name(i + 1));
            let body = tokio::fs::read(path)
                .await
                .map_err(|e| failed("EncoderFailed", format!("output unreadable: {}", e.kind())))?;
            self.upload(place, &name, body.into()).await?;
            outputs.push(GeneratedOutput {
                name,
                index: (i + 1) as u64,
                time: plan.times[i],
            });
        }
        let mut sprite = None;
        if plan.grid.is_some() {
            let mut kept = plan.clone();
            kept.times.truncate(files.len());
            let first = std::fs::read(&files[0]).unwrap_or_default();
            let (w, h) = imagesize::blob_size(&first)
                .map(|s| (s.width as u32, s.height as u32))
                .map_err(|_| failed("EncoderFailed", "a thumbnail's size is unreadable".into()))?;
            let image = place.blob(&plan.sprite_name());
            let vtt = place.blob(&plan.vtt_name());
            let body = tokio::fs::read(&sprite_path)
                .await
                .map_err(|_| failed("EncoderFailed", "ffmpeg wrote no sprite".into()))?;
            self.upload(place, &image, body.into()).await?;
            self.upload(place, &vtt, Bytes::from(kept.vtt(w, h)))
                .await?;
            sprite = Some(document::GeneratedSprite { image, vtt });
        }
        let mut doc = state.lock().await;
        doc.outputs = outputs;
        doc.sprite = sprite;
        Ok(())
    }

    async fn upload(&self, place: &Place, name: &str, body: Bytes) -> Result<(), RunError> {
        let content_type = if name.ends_with(".vtt") {
            "text/vtt".to_owned()
        } else {
            content_type_for(name)
        };
        self.parts
            .writer
            .put(
                &place.location,
                name,
                body,
                &content_type,
                PutCondition::Any,
            )
            .await
            .map_err(|e| {
                RunError::Failed(process::Failure {
                    code: match e {
                        WriteError::Refused { .. } => "WriteRefused",
                        _ => "WriteFailed",
                    },
                    message: format!("writing {name}: {}", describe(&e)),
                })
            })
    }

    /// Writes the document under the lease; a failure is logged (the next write, or the
    /// lease's expiry, sets things right).
    async fn save(&self, place: &Place, lease: &Lease, doc: &JobDocument) {
        if let Err(e) = self
            .put_document(place, doc, PutCondition::Leased(lease))
            .await
        {
            tracing::warn!(job = doc.name, error = %e, "job state not written");
        }
    }

    async fn end_failed(
        &self,
        place: &Place,
        lease: &Lease,
        state: &Mutex<JobDocument>,
        error: DocumentError,
    ) {
        let mut doc = state.lock().await;
        self.remove_outputs(place, &doc).await;
        tracing::warn!(
            job = doc.name,
            code = error.code,
            message = error.message,
            "thumbnail job failed"
        );
        doc.state = JobState::Error;
        doc.ended = Some(document::now());
        doc.error = Some(error);
        doc.outputs.clear();
        doc.sprite = None;
        self.save(place, lease, &doc).await;
    }

    /// Removes partial outputs and ends the job `Canceled`.
    async fn end_canceled(
        &self,
        place: &Place,
        lease: &Lease,
        state: &Mutex<JobDocument>,
        _why: Option<&str>,
    ) {
        let mut doc = state.lock().await;
        self.remove_outputs(place, &doc).await;
        doc.state = JobState::Canceled;
        doc.ended = Some(document::now());
        doc.outputs.clear();
        doc.sprite = None;
        self.save(place, lease, &doc).await;
        let _ = self
            .parts
            .writer
            .delete(&place.location, &place.marker(), None)
            .await;
        tracing::info!(job = doc.name, "thumbnail job canceled");
    }

    /// Deletes what a job wrote besides its document: every blob of its folder.
    async fn remove_outputs(&self, place: &Place, doc: &JobDocument) {
        let _ = doc;
        let Ok(blobs) = self.parts.store.list(&place.location).await else {
            return;
        };
        let folder = format!("{}/", place.folder);
        for blob in blobs {
            if blob.name.starts_with(&folder)
                && blob.name != place.document()
                && !blob.name.ends_with(".lock")
            {
                let _ = self
                    .parts
                    .writer
                    .delete(&place.location, &blob.name, None)
                    .await;
            }
        }
    }
}

/// The specification a document was made for (it keeps every field, so the defaults of the
/// replica that takes a job over do not matter).
fn spec_of(doc: &JobDocument, settings: &JobSettings) -> Result<ThumbnailSpec, JobsError> {
    Ok(ThumbnailSpec::resolve(&doc.request, &settings.defaults)?)
}

/// ffmpeg's output folder under the temporary directory (`TMPDIR`; an `emptyDir` in
/// Kubernetes), removed with everything in it when the job ends.
struct WorkDir(std::path::PathBuf);

impl WorkDir {
    fn new() -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "ams-thumbnails-job-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir(&path)?;
        Ok(Self(path))
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn base_of(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

fn folder_of(name: &str) -> &str {
    name.rsplit_once('/').map_or("", |(f, _)| f)
}

fn stripe_of(key: &str, stripes: usize) -> usize {
    let digest = spec::hex_digest(key.as_bytes(), 8);
    usize::from_str_radix(&digest, 16).unwrap_or(0) % stripes
}

/// `*` (any run of characters) and `?` (one character), over the whole name.
fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
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

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs_match_whole_names() {
        assert!(glob("*.mp4", "video_1280x720.mp4"));
        assert!(glob("media/*_????.mp4", "media/a_1080.mp4"));
        assert!(!glob("*.mp4", "video.mp4.bak"));
        assert!(!glob("media/*.mp4", "other/v.mp4"));
        assert!(glob("*", ""));
    }
}
