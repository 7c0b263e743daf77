//! Loading through the shared tier: an entry another replica stored is taken as it is; a
//! missing one is loaded by the one replica that takes the asset's lock, while the others
//! wait for its notice (or look again every [`POLL`]) and take its result from Redis.

use std::time::{Duration, Instant};

use super::wire::{self, Clocks};
use super::{Notice, SharedTier};
use crate::asset_id::AssetId;
use crate::resolver::Inner;
use crate::resolver::entry::Entry;
use crate::source::SourceError;

/// How often a waiter looks again when no notice came.
const POLL: Duration = Duration::from_millis(25);

/// What one look into the tier found.
enum Found {
    /// Fresh: served as it is.
    Fresh(Entry),
    /// Past its freshness but still valid: served if loading fails.
    Stale(Entry),
    Nothing,
}

impl Inner {
    /// The entry of `id`: from Redis when another replica loaded it, else loaded here once
    /// for all replicas. Without Redis (down, slow), loaded here as if there were no tier.
    pub(in crate::resolver) async fn load_through(
        &self,
        tier: &SharedTier,
        id: &AssetId,
    ) -> Result<Entry, SourceError> {
        let mut fallback = None;
        match self.look(tier, id).await {
            Some(Found::Fresh(entry)) => {
                metrics::counter!("shared_cache_hits_total").increment(1);
                return Ok(entry);
            }
            Some(Found::Stale(entry)) => fallback = Some(entry),
            Some(Found::Nothing) => {}
            None => return self.load_from_source(id).await,
        }
        metrics::counter!("shared_cache_misses_total").increment(1);
        let give_up_at = Instant::now() + tier.lock_ttl;
        loop {
            let Ok(lock) = tier.try_lock(id.as_str()).await else {
                return self.load_from_source(id).await;
            };
            if let Some(fence) = lock {
                // Another replica may have stored it between the first look and the lock.
                if let Some(Found::Fresh(entry)) = self.look(tier, id).await {
                    tier.unlock(id.as_str(), fence).await;
                    return Ok(entry);
                }
                return self.load_and_share(tier, id, fence, fallback).await;
            }
            metrics::counter!("shared_cache_lock_waits_total").increment(1);
            let notify = tier.waiter(id.as_str());
            let outcome = async {
                loop {
                    let notified = notify.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    match self.look(tier, id).await {
                        Some(Found::Fresh(entry)) => return Some(Ok(entry)),
                        None => return Some(self.load_from_source(id).await),
                        _ => {}
                    }
                    if Instant::now() >= give_up_at {
                        // The loader is slower than its lock: load here.
                        return Some(self.load_from_source(id).await);
                    }
                    match tier.locked(id.as_str()).await {
                        // The loader failed or died: try the lock again.
                        Ok(false) => return None,
                        Ok(true) => {}
                        Err(_) => return Some(self.load_from_source(id).await),
                    }
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep(POLL) => {}
                    }
                }
            }
            .await;
            tier.done_waiting(id.as_str(), notify);
            if let Some(result) = outcome {
                return result;
            }
        }
    }

    /// One look into the tier (`None`: it cannot be reached).
    async fn look(&self, tier: &SharedTier, id: &AssetId) -> Option<Found> {
        let bytes = tier.get(id.as_str()).await.ok()?;
        let Some(bytes) = bytes else {
            return Some(Found::Nothing);
        };
        let clocks = Clocks::read();
        Some(match wire::decode(&bytes, clocks) {
            Some(entry @ Entry::Found(_)) if entry_fresh(&entry, clocks.now) => Found::Fresh(entry),
            Some(entry @ Entry::NotFound { .. }) if entry.valid_until() > clocks.now => {
                Found::Fresh(entry)
            }
            Some(entry) if entry.valid_until() > clocks.now => Found::Stale(entry),
            _ => Found::Nothing,
        })
    }

    /// Loads `id` from the source under the lock, stores the result for every replica and
    /// lets go of the lock (a failure stores nothing).
    async fn load_and_share(
        &self,
        tier: &SharedTier,
        id: &AssetId,
        fence: super::Fence,
        fallback: Option<Entry>,
    ) -> Result<Entry, SourceError> {
        match self.load_from_source(id).await {
            Ok(entry) => {
                let clocks = Clocks::read();
                let px = clocks.ms_until(entry.valid_until());
                let origin = match &entry {
                    Entry::Found(r) => Some(r.origin()),
                    Entry::NotFound { .. } => None,
                };
                if px > 0 {
                    let bytes = wire::encode(&entry, clocks);
                    let keep_set = self.policy.ttl + self.policy.max_stale;
                    let stored = tier
                        .put(id.as_str(), &bytes, px, fence, origin.as_deref(), keep_set)
                        .await;
                    if let Ok(false) = stored {
                        // The lock was taken away while loading: an invalidation (or a load
                        // slower than `lock_ttl`). What was loaded may predate the change: it
                        // was not stored, and `Inner::load` loads it again (once, however the
                        // invalidation's notice and this refusal race).
                        metrics::counter!("shared_cache_fenced_out_total").increment(1);
                        self.note_invalidated(id.as_str());
                    }
                } else {
                    tier.unlock(id.as_str(), fence).await;
                }
                Ok(entry)
            }
            Err(e) => {
                tier.unlock(id.as_str(), fence).await;
                match fallback {
                    Some(stale) => {
                        metrics::counter!("cache_refresh_failures_total").increment(1);
                        Ok(stale)
                    }
                    None => Err(e),
                }
            }
        }
    }

    /// A notice from another replica (or this one: an invalidation reaches its sender too).
    pub(in crate::resolver) async fn on_notice(&self, notice: Notice) {
        let Some(tier) = &self.shared else { return };
        match notice {
            Notice::Loaded(id) => tier.loaded(&id),
            Notice::Invalidated(id) => {
                metrics::counter!("shared_cache_invalidations_received_total").increment(1);
                self.drop_local(&id).await;
            }
            Notice::Container(origin) => {
                metrics::counter!("shared_cache_invalidations_received_total").increment(1);
                if let Some((account, container)) = origin.split_once('/') {
                    self.drop_local_container(account, container).await;
                }
            }
            Notice::Everything => {
                metrics::counter!("shared_cache_invalidations_received_total").increment(1);
                self.drop_everything_local().await;
            }
        }
    }
}

fn entry_fresh(entry: &Entry, now: Instant) -> bool {
    match entry {
        Entry::Found(r) => r.fresh_until() > now,
        Entry::NotFound { valid_until } => *valid_until > now,
    }
}
