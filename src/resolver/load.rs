//! Loading an asset: locate -> list -> read storyboards -> recognise -> link -> render, into
//! one cached entry. Runs once per miss or refresh, however many requests wait on it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tracing::Instrument;

use super::entry::{Entry, Resolved};
use super::{Inner, render};
use crate::asset_id::AssetId;
use crate::model::{AssetThumbnails, Link, Storyboard, Thumbnail, content_type_for};
use crate::recognise::{ParsedStoryboard, vtt};
use crate::source::{AssetLocation, SourceError};

/// Largest storyboard VTT read (a 10-hour video at one tile a second is ~600 KB).
const VTT_LIMIT: usize = 2 * 1024 * 1024;
/// At most this many VTT files are read per asset.
const VTT_MAX_FILES: usize = 4;

/// Largest job document read.
const JOB_DOCUMENT_LIMIT: usize = 16 * 1024 * 1024;
/// At most this many job documents are read per asset.
const JOB_DOCUMENT_MAX_FILES: usize = 8;

/// What this service's ffmpeg jobs left in the asset ([`crate::model::JOB_DOCUMENT`]).
#[derive(Default)]
struct Generated {
    /// Frame time of each generated thumbnail, by blob name.
    times: std::collections::HashMap<String, f64>,
    /// Folders (with their trailing `/`) of jobs that have not finished.
    unfinished: Vec<String>,
}

/// The storyboards read for one load.
#[derive(Default)]
struct Storyboards {
    parsed: Vec<(String, ParsedStoryboard)>,
    /// A read failed for a reason that may pass.
    degraded: bool,
}

impl Inner {
    /// The entry of `id`: through the shared tier when there is one, else from the source.
    pub(super) async fn load(&self, id: &AssetId) -> Result<Entry, SourceError> {
        let span = tracing::info_span!("load", asset_id = %id, shared_tier = self.shared.is_some());
        async {
            let started = Instant::now();
            let loaded = match &self.shared {
                Some(tier) => self.load_through(tier, id).await,
                None => self.load_from_source(id).await,
            };
            // Invalidated while loading (moka's invalidation does not stop a load in flight,
            // which would then cache what it read before the change): loaded once more.
            if self.invalidated_since(id.as_str(), started) {
                return match &self.shared {
                    Some(tier) => self.load_through(tier, id).await,
                    None => self.load_from_source(id).await,
                };
            }
            loaded
        }
        .instrument(span)
        .await
    }

    pub(super) async fn load_from_source(&self, id: &AssetId) -> Result<Entry, SourceError> {
        self.stats.loads.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = self.load_found(id).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(resolved) => {
                tracing::debug!(asset_id = %id, elapsed_ms, thumbnails = resolved.spans().len(), "asset loaded");
                Ok(Entry::Found(Arc::new(resolved)))
            }
            Err(SourceError::NotFound) => {
                tracing::debug!(asset_id = %id, elapsed_ms, "asset not found");
                Ok(Entry::NotFound {
                    valid_until: Instant::now() + self.policy.not_found_ttl,
                })
            }
            Err(e) => {
                tracing::warn!(asset_id = %id, elapsed_ms, error = %e, "asset load failed");
                Err(e)
            }
        }
    }

    async fn load_found(&self, id: &AssetId) -> Result<Resolved, SourceError> {
        let location = self.backend.catalog.locate(id).await?;
        let mut blobs = self.backend.store.list(&location).await?;
        let generated = self.read_job_documents(id, &location, &blobs).await;
        // What a job is still writing (or failed to finish) is not listed.
        blobs.retain(|b| {
            !generated
                .unfinished
                .iter()
                .any(|folder| b.name.starts_with(folder.as_str()))
        });
        let storyboards = self.read_storyboards(id, &location, &blobs).await;
        let mut recognition = self.recogniser.recognise(&blobs, &storyboards.parsed);
        // A generated thumbnail's time is the one its job recorded.
        for thumbnail in &mut recognition.thumbnails {
            if let Some(time) = generated.times.get(&thumbnail.blob.name) {
                thumbnail.time = Some(*time);
            }
        }

        let mut names: Vec<&str> = recognition
            .thumbnails
            .iter()
            .map(|t| t.blob.name.as_str())
            .collect();
        if let Some(sb) = &recognition.storyboard {
            names.push(&sb.sprite.name);
        }
        let links = self.backend.linker.link(&location, &names).await?;
        if links.len() != names.len() {
            return Err(SourceError::Upstream {
                backend: "linker",
                message: format!("{} links for {} blobs", links.len(), names.len()),
            });
        }
        let expires_at = links.iter().filter_map(|l| l.expires_at).min();
        let mut links = links.into_iter();
        let mut next_url = || links.next().map(|l: Link| l.url).unwrap_or_default();

        let thumbnails = recognition
            .thumbnails
            .into_iter()
            .map(|r| Thumbnail {
                index: r.index,
                url: next_url(),
                content_type: content_type(&r.blob),
                size: r.blob.size,
                label: r.label,
                width: r.width,
                height: r.height,
                time: r.time,
                name: r.blob.name,
            })
            .collect();
        let storyboard = recognition.storyboard.map(|sb| Storyboard {
            url: next_url(),
            content_type: content_type(&sb.sprite),
            width: sb.sprite.dimensions.map(|d| d.0),
            height: sb.sprite.dimensions.map(|d| d.1),
            name: sb.sprite.name,
            vtt_name: sb.vtt_name,
            tiles: sb.tiles,
        });
        let asset = AssetThumbnails {
            asset_id: id.to_string(),
            thumbnails,
            storyboard,
            expires_at,
        };
        let rendered = render::render(&asset).map_err(|e| SourceError::Upstream {
            backend: "render",
            message: e.to_string(),
        })?;
        self.stats.renders.fetch_add(1, Ordering::Relaxed);
        let (mut fresh_for, keep_for) = self.lifetimes(expires_at);
        if storyboards.degraded {
            fresh_for = fresh_for.min(self.policy.not_found_ttl);
        }
        let now = Instant::now();
        let origin = format!("{}/{}", location.account, location.container);
        Resolved::new(
            rendered,
            &origin,
            expires_at,
            now + fresh_for,
            now + keep_for,
        )
        .map_err(|message| SourceError::Upstream {
            backend: "render",
            message,
        })
    }

    /// How long an entry is fresh (`cache.ttl`) and how long it may be kept at all (fresh, then
    /// stale up to `cache.max_stale`), both shortened so that every URL in it still has
    /// `min_validity` left when it is last served (zero: not cached at all).
    fn lifetimes(&self, expires_at: Option<OffsetDateTime>) -> (Duration, Duration) {
        let keep = self.policy.ttl + self.policy.max_stale;
        let Some(expires_at) = expires_at else {
            return (self.policy.ttl, keep);
        };
        let left = expires_at - OffsetDateTime::now_utc() - self.policy.min_validity;
        let left = Duration::try_from(left).unwrap_or(Duration::ZERO);
        if left.is_zero() {
            tracing::warn!(
                "signed URLs expire within cache.min_validity: answers are not cached; \
                 lengthen the URL lifetime or shorten cache.min_validity"
            );
        }
        (left.min(self.policy.ttl), left.min(keep))
    }

    /// The job documents among the blobs: the times of finished jobs' thumbnails, and the
    /// folders of jobs still at work. A document that cannot be read costs its thumbnails
    /// their times, nothing more.
    async fn read_job_documents(
        &self,
        id: &AssetId,
        location: &AssetLocation,
        blobs: &[crate::model::BlobEntry],
    ) -> Generated {
        #[derive(serde::Deserialize)]
        struct Document {
            state: String,
            #[serde(default)]
            outputs: Vec<crate::model::GeneratedOutput>,
        }
        let mut out = Generated::default();
        let suffix = format!("/{}", crate::model::JOB_DOCUMENT);
        let documents = blobs
            .iter()
            .filter(|b| b.name.ends_with(&suffix) && b.size <= JOB_DOCUMENT_LIMIT as u64)
            .take(JOB_DOCUMENT_MAX_FILES);
        for blob in documents {
            let folder = &blob.name[..blob.name.len() - crate::model::JOB_DOCUMENT.len()];
            let read = self
                .backend
                .store
                .read(location, &blob.name, JOB_DOCUMENT_LIMIT)
                .await;
            let parsed = read
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Document>(&bytes).ok());
            match parsed {
                Some(doc) if doc.state == "Finished" => {
                    out.times
                        .extend(doc.outputs.into_iter().map(|o| (o.name, o.time)));
                }
                Some(_) => out.unfinished.push(folder.to_owned()),
                None => {
                    tracing::warn!(asset_id = %id, blob = %blob.name, "job document not used");
                }
            }
        }
        out
    }

    /// The storyboard VTTs among the blobs, parsed. A VTT that cannot be used costs the asset
    /// its storyboard from that file, never its thumbnails: each such file is logged and
    /// counted (`storyboard_read_failures_total{reason}`). `degraded` says whether a read
    /// failed for a reason that may pass (a timeout, throttling, a 5xx): the entry is then kept
    /// fresh only briefly, so that the storyboard is looked for again soon.
    async fn read_storyboards(
        &self,
        id: &AssetId,
        location: &AssetLocation,
        blobs: &[crate::model::BlobEntry],
    ) -> Storyboards {
        let mut out = Storyboards::default();
        let vtts = blobs
            .iter()
            .filter(|b| b.name.to_ascii_lowercase().ends_with(".vtt"))
            .take(VTT_MAX_FILES);
        for blob in vtts {
            let failed = |reason: &'static str, detail: &dyn std::fmt::Display| {
                metrics::counter!("storyboard_read_failures_total", "reason" => reason)
                    .increment(1);
                // The blob's name only: never a URL, which may carry a SAS.
                tracing::warn!(asset_id = %id, blob = %blob.name, reason, %detail, "storyboard VTT not used");
            };
            if blob.size > VTT_LIMIT as u64 {
                failed(
                    "too_large",
                    &format_args!("{} bytes, over {VTT_LIMIT}", blob.size),
                );
                continue;
            }
            let bytes = match self
                .backend
                .store
                .read(location, &blob.name, VTT_LIMIT)
                .await
            {
                Ok(b) => b,
                // Deleted between list and read.
                Err(SourceError::NotFound) => {
                    failed("not_found", &"deleted since the listing");
                    continue;
                }
                Err(e) => {
                    failed("read_error", &e);
                    out.degraded = true;
                    continue;
                }
            };
            let Ok(text) = std::str::from_utf8(&bytes) else {
                failed("not_utf8", &"not UTF-8 text");
                continue;
            };
            match vtt::parse(&blob.name, text) {
                Some(parsed) => out.parsed.push((blob.name.clone(), parsed)),
                // Captions, chapters: a VTT, but not a map of a sprite. Counted, not warned.
                None => {
                    metrics::counter!("storyboard_read_failures_total", "reason" => "not_storyboard")
                        .increment(1);
                    tracing::debug!(asset_id = %id, blob = %blob.name, "a VTT that maps no sprite");
                }
            }
        }
        out
    }
}

fn content_type(blob: &crate::model::BlobEntry) -> String {
    blob.content_type
        .clone()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| content_type_for(&blob.name))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use bytes::Bytes;

    use super::*;
    use crate::config::{CacheSettings, RecognitionSettings};
    use crate::model::BlobEntry;
    use crate::recognise::Recogniser;
    use crate::resolver::Resolver;
    use crate::source::{Backend, BlobStore, Catalog, Linker};

    const VTT: &str = "WEBVTT\n\n00:00:00.000 --> 00:00:02.000\nsprite.jpg#xywh=0,0,160,90\n\n\
                       00:00:02.000 --> 00:00:04.000\nsprite.jpg#xywh=160,0,160,90\n";

    /// One asset: two thumbnails, a sprite and its VTT, whose read answers `read`.
    struct Fake {
        vtt_size: u64,
        read: Mutex<Option<Result<Bytes, SourceError>>>,
    }

    #[async_trait]
    impl Catalog for Fake {
        async fn locate(&self, _: &AssetId) -> Result<AssetLocation, SourceError> {
            Ok(AssetLocation::new("acct", "asset"))
        }
    }

    #[async_trait]
    impl BlobStore for Fake {
        async fn list(&self, _: &AssetLocation) -> Result<Vec<BlobEntry>, SourceError> {
            let blob = |name: &str, size| BlobEntry {
                name: name.into(),
                size,
                content_type: None,
                dimensions: None,
            };
            Ok(vec![
                blob("Thumbnail000001.jpg", 10),
                blob("Thumbnail000002.jpg", 10),
                blob("sprite.jpg", 10),
                blob("sprite.vtt", self.vtt_size),
            ])
        }
        async fn read(&self, _: &AssetLocation, _: &str, _: usize) -> Result<Bytes, SourceError> {
            self.read
                .lock()
                .unwrap()
                .take()
                .expect("the VTT is read at most once")
        }
    }

    #[async_trait]
    impl Linker for Fake {
        async fn link(&self, _: &AssetLocation, names: &[&str]) -> Result<Vec<Link>, SourceError> {
            Ok(names
                .iter()
                .map(|n| Link {
                    url: format!("https://x/{n}"),
                    expires_at: None,
                })
                .collect())
        }
    }

    fn failures(reason: &str) -> u64 {
        let text = crate::metrics::handle().render();
        let series = format!(
            "{}_storyboard_read_failures_total{{reason=\"{reason}\"}} ",
            crate::metrics::PREFIX
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    async fn resolve(vtt_size: u64, read: Result<Bytes, SourceError>) -> Arc<Resolved> {
        crate::metrics::handle();
        let fake = Arc::new(Fake {
            vtt_size,
            read: Mutex::new(Some(read)),
        });
        let backend = Backend {
            catalog: fake.clone(),
            store: fake.clone(),
            linker: fake,
            health: Vec::new(),
            local_root: None,
        };
        let resolver = Resolver::new(
            CacheSettings::default(),
            Duration::from_secs(5),
            Recogniser::new(&RecognitionSettings::default()).unwrap(),
            backend,
        );
        let id = AssetId::parse("asset").unwrap();
        resolver.resolve(&id).await.expect("resolves").resolved
    }

    #[tokio::test]
    async fn a_readable_storyboard_is_kept() {
        let r = resolve(VTT.len() as u64, Ok(Bytes::from(VTT))).await;
        assert!(r.storyboard_json().is_some());
        assert_eq!(r.thumbnails().count(), 2);
    }

    #[tokio::test]
    async fn an_unusable_vtt_costs_the_storyboard_not_the_thumbnails() {
        let cases: [(&str, u64, Result<Bytes, SourceError>, bool); 5] = [
            ("not_found", 100, Err(SourceError::NotFound), false),
            (
                "read_error",
                100,
                Err(SourceError::Timeout { backend: "storage" }),
                true,
            ),
            (
                "not_utf8",
                4,
                Ok(Bytes::from_static(b"\xff\xfe\xfd\xfc")),
                false,
            ),
            (
                "not_storyboard",
                30,
                Ok(Bytes::from_static(
                    b"WEBVTT\n\n00:00.000 --> 00:01.000\nHello\n",
                )),
                false,
            ),
            (
                "too_large",
                VTT_LIMIT as u64 + 1,
                Err(SourceError::Upstream {
                    backend: "storage",
                    message: "never read".into(),
                }),
                false,
            ),
        ];
        for (reason, size, read, degraded) in cases {
            let before = failures(reason);
            let r = resolve(size, read).await;
            assert_eq!(r.thumbnails().count(), 2, "{reason}");
            assert!(r.storyboard_json().is_none(), "{reason}");
            assert!(
                !String::from_utf8_lossy(r.body()).contains("storyboard"),
                "{reason}"
            );
            assert!(failures(reason) > before, "{reason} is counted");
            // A failure that may pass keeps the entry fresh only as long as "not found" is.
            let fresh_for = r.fresh_until().saturating_duration_since(Instant::now());
            let not_found_ttl = CacheSettings::default().not_found_ttl;
            assert_eq!(
                fresh_for <= not_found_ttl,
                degraded,
                "{reason}: {fresh_for:?}"
            );
        }
    }
}
