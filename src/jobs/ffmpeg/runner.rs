//! Running one job on this replica: a slot, the lease kept alive, ffprobe and ffmpeg, the
//! outputs checked and uploaded, the final state written (or the partial outputs removed).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{Mutex, watch};

use super::document::{self, DocumentError, JobDocument};
use super::plan::Plan;
use super::process::{self, RunError, Stop};
use super::{BACKEND, Inner, MAX_TAKEOVERS, Place, TICK, describe, spec_of};
use crate::jobs::JobsError;
use crate::jobs::{JobState, ThumbnailSpec};
use crate::model::{GeneratedOutput, content_type_for};
use crate::source::{Lease, PutCondition, WriteError};

impl Inner {
    /// Takes over a job its runner left (no lease on a document that is not final).
    pub(super) async fn take_over(
        self: Arc<Self>,
        place: &Place,
        doc: JobDocument,
    ) -> Result<(), JobsError> {
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

    pub(super) fn spawn(
        self: Arc<Self>,
        place: Place,
        lease: Lease,
        doc: JobDocument,
        spec: ThumbnailSpec,
    ) {
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
        let progress = Arc::new(AtomicU8::new(0));
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
        progress: Arc<AtomicU8>,
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
            let now = progress.load(Ordering::Relaxed);
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
        progress: &AtomicU8,
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
                    progress.store(percent, Ordering::Relaxed);
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
    pub(super) async fn end_canceled(
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
