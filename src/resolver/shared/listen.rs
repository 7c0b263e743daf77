//! The notice channel's listener: one task per resolver, subscribed to `{prefix}notices`,
//! re-subscribing after any disconnect. After a reconnect it drops every local entry (notices
//! sent meanwhile were missed) and sends the invalidations kept while Redis was away.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;

use super::Notice;
use crate::resolver::Inner;

const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Runs until the resolver is dropped.
pub(in crate::resolver) async fn listen(inner: Weak<Inner>) {
    let Some((client, channel, connect_timeout, mut stop)) = inner.upgrade().and_then(|i| {
        let tier = i.shared.as_ref()?;
        Some((
            tier.client.clone(),
            tier.channel.clone(),
            tier.connect_timeout,
            tier.stop.subscribe(),
        ))
    }) else {
        return;
    };
    let mut retry = RETRY_MIN;
    let mut first = true;
    loop {
        let session = async {
            let mut pubsub = tokio::time::timeout(connect_timeout, client.get_async_pubsub())
                .await
                .ok()?
                .ok()?;
            tokio::time::timeout(connect_timeout, pubsub.subscribe(&channel))
                .await
                .ok()?
                .ok()?;
            Some(pubsub)
        };
        let pubsub = tokio::select! {
            p = session => p,
            _ = stop.changed() => return,
        };
        if let Some(mut pubsub) = pubsub {
            retry = RETRY_MIN;
            let Some(strong) = inner.upgrade() else {
                return;
            };
            let tier = strong.shared.as_ref().expect("a listener has a tier");
            tier.subscribed.store(true, Ordering::Relaxed);
            tier.down_until.store(0, Ordering::Relaxed);
            // Whatever this replica loaded while not subscribed may have been invalidated
            // meanwhile (at start-up too, when Redis came up late): it is dropped.
            if strong.cache.entry_count() > 0 {
                if !first {
                    tracing::info!("shared cache reachable again: local entries dropped");
                }
                strong.drop_everything_local().await;
            }
            tier.flush_pending().await;
            first = false;
            drop(strong);
            let mut messages = pubsub.on_message();
            loop {
                let message = tokio::select! {
                    m = messages.next() => m,
                    _ = stop.changed() => return,
                };
                let Some(message) = message else { break };
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                if let Some(notice) = Notice::parse(message.get_payload_bytes()) {
                    inner.on_notice(notice).await;
                }
            }
            if let Some(i) = inner.upgrade()
                && let Some(tier) = &i.shared
            {
                tier.subscribed.store(false, Ordering::Relaxed);
            }
            tracing::warn!("shared cache notice channel lost: reconnecting");
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = stop.changed() => return,
        }
        retry = (retry * 2).min(RETRY_MAX);
    }
}
