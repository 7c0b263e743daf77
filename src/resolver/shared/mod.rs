//! The shared tier: a Redis that every replica talks to, behind each replica's moka.
//!
//! - Entries: `{prefix}e:{id}`, the rendered entry ([`wire`]) with a `PX` of its validity.
//! - Load locks: `{prefix}l:{id}`, `SET NX PX lock_ttl` with a fencing value; the loader's
//!   write goes through only while it still holds its lock ([`PUT`]), and an invalidation
//!   deletes the lock, so a load that began before an invalidation never lands in Redis after
//!   it (and the replica that ran it loads again, `Inner::load`).
//! - Containers: `{prefix}c:{account}/{container}`, the ids loaded from each, for storage
//!   events.
//! - One channel, `{prefix}notices`: `l:{id}` (loaded: waiters look again), `i:{id}` (drop
//!   it), `c:{account}/{container}` (drop every entry from there), `*` (drop everything).
//!
//! Redis is never a reason to fail a request: every call is bounded by `timeout`, and after a
//! failure the tier is skipped for [`DOWN_FOR`] while requests go to the source.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Client, IntoConnectionInfo, Script};
use tokio::sync::Notify;

use crate::config::{Invalid, SharedCacheSettings};

pub(super) mod listen;
mod through;
pub(super) mod wire;

/// How long the tier is skipped after a call failed or timed out.
const DOWN_FOR: Duration = Duration::from_secs(1);
/// Notices kept while Redis cannot be reached, sent when it can; past this many, one "drop
/// everything" is sent instead.
const PENDING_MAX: usize = 10_000;

/// The loader's write: only while it holds the lock; then the lock goes and waiters are told.
/// KEYS: lock, entry, container set (optional). ARGV: fence, bytes, px, id, set px, channel.
const PUT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
if #KEYS == 3 then
  redis.call('SADD', KEYS[3], ARGV[4])
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
end
redis.call('PUBLISH', ARGV[6], 'l:' .. ARGV[4])
return 1
";

/// A loader that failed lets go of its lock, and the waiters try it themselves.
/// KEYS: lock. ARGV: fence, channel, id.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], 'l:' .. ARGV[3])
end
return 1
";

/// Every entry loaded from one container, and their locks. KEYS: container set.
/// ARGV: key prefix, channel, `{account}/{container}`.
const DROP_CONTAINER: &str = r"
local ids = redis.call('SMEMBERS', KEYS[1])
for _, id in ipairs(ids) do
  redis.call('DEL', ARGV[1] .. 'e:' .. id, ARGV[1] .. 'l:' .. id)
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], 'c:' .. ARGV[3])
return #ids
";

/// Why a shared-tier call gave nothing: the caller goes on without the tier.
#[derive(Debug)]
pub(super) struct Unavailable;

/// A notice on the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Notice {
    Loaded(String),
    Invalidated(String),
    Container(String),
    Everything,
}

impl Notice {
    pub(super) fn parse(payload: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(payload).ok()?;
        if text == "*" {
            return Some(Self::Everything);
        }
        let (kind, rest) = text.split_once(':')?;
        Some(match kind {
            "l" => Self::Loaded(rest.to_owned()),
            "i" => Self::Invalidated(rest.to_owned()),
            "c" => Self::Container(rest.to_owned()),
            _ => return None,
        })
    }

    fn payload(&self) -> String {
        match self {
            Self::Loaded(id) => format!("l:{id}"),
            Self::Invalidated(id) => format!("i:{id}"),
            Self::Container(origin) => format!("c:{origin}"),
            Self::Everything => "*".into(),
        }
    }
}

/// A held load lock.
#[derive(Debug)]
pub(super) struct Fence(String);

pub struct SharedTier {
    client: Client,
    manager: OnceLock<ConnectionManager>,
    prefix: String,
    channel: String,
    timeout: Duration,
    connect_timeout: Duration,
    pub(super) lock_ttl: Duration,
    /// This process's part of every fencing value.
    replica: String,
    fences: AtomicU64,
    /// Skip the tier until this instant (as milliseconds since `epoch`).
    down_until: AtomicU64,
    epoch: Instant,
    /// Whether the notice channel is subscribed right now.
    subscribed: AtomicBool,
    /// Waiters on another replica's load, by asset id.
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
    /// Invalidations that could not be sent yet.
    pending: Mutex<Vec<Notice>>,
    /// Dropped with the tier: the listener stops.
    pub(super) stop: tokio::sync::watch::Sender<()>,
}

impl std::fmt::Debug for SharedTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTier")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl SharedTier {
    /// The tier of `settings` (nothing connects until it is used), or `None` without a URL.
    pub fn new(settings: &SharedCacheSettings) -> Result<Option<Self>, Invalid> {
        let Some(url) = &settings.url else {
            return Ok(None);
        };
        let invalid = |what: &str| Invalid::new("cache.shared.url", what.to_owned());
        let mut info = url
            .expose()
            .into_connection_info()
            .map_err(|_| invalid("is not a Redis URL redis-rs can use"))?;
        if let Some(password) = &settings.password {
            let redis = info
                .redis_settings()
                .clone()
                .set_password(password.expose());
            info = info.set_redis_settings(redis);
        }
        let client = match &settings.ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    Invalid::new(
                        "cache.shared.ca_file",
                        format!("cannot read {}: {}", path.display(), e.kind()),
                    )
                })?;
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                Client::build_with_tls(info, certificates)
                    .map_err(|_| Invalid::new("cache.shared.ca_file", "not a PEM CA certificate"))?
            }
            None => Client::open(info).map_err(|_| invalid("cannot be used"))?,
        };
        Ok(Some(Self {
            client,
            manager: OnceLock::new(),
            channel: format!("{}notices", settings.key_prefix),
            prefix: settings.key_prefix.clone(),
            timeout: settings.timeout,
            connect_timeout: settings.connect_timeout,
            lock_ttl: settings.lock_ttl,
            replica: uuid::Uuid::new_v4().simple().to_string(),
            fences: AtomicU64::new(0),
            down_until: AtomicU64::new(0),
            epoch: Instant::now(),
            subscribed: AtomicBool::new(false),
            waiters: Mutex::default(),
            pending: Mutex::default(),
            stop: tokio::sync::watch::channel(()).0,
        }))
    }

    /// The connection (made on first use, inside the runtime; it reconnects by itself).
    fn connection(&self) -> ConnectionManager {
        self.manager
            .get_or_init(|| {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                ConnectionManager::new_lazy_with_config(self.client.clone(), config)
                    .expect("no push sender asked for")
            })
            .clone()
    }

    fn since_epoch_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether the tier may be called now (not within [`DOWN_FOR`] of a failure).
    pub(super) fn usable(&self) -> bool {
        self.since_epoch_ms() >= self.down_until.load(Ordering::Relaxed)
    }

    /// Whether the tier works now: a `PING` answers in time and the notice channel is
    /// subscribed.
    pub async fn check(&self) -> bool {
        let mut c = self.connection();
        let pong: Result<String, _> = self
            .call("ping", async move {
                redis::cmd("PING").query_async(&mut c).await
            })
            .await;
        pong.is_ok() && self.subscribed.load(Ordering::Relaxed)
    }

    /// One Redis call, bounded by `timeout`; a failure takes the tier out for [`DOWN_FOR`].
    async fn call<T, F>(&self, op: &'static str, f: F) -> Result<T, Unavailable>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        if !self.usable() {
            return Err(Unavailable);
        }
        let failed = match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => e.category().to_owned(),
            Err(_) => "timeout".to_owned(),
        };
        metrics::counter!("shared_cache_errors_total", "op" => op).increment(1);
        let until = self.since_epoch_ms() + DOWN_FOR.as_millis() as u64;
        if self.down_until.swap(until, Ordering::Relaxed) <= self.since_epoch_ms() {
            // Once per outage, without the server's words (they may name the host).
            tracing::warn!(op, error = %failed, "shared cache unavailable: going on without it");
        }
        Err(Unavailable)
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }

    /// The stored entry of `id`, as bytes.
    pub(super) async fn get(&self, id: &str) -> Result<Option<Vec<u8>>, Unavailable> {
        let mut c = self.connection();
        self.call("get", async move { c.get(self.key("e", id)).await })
            .await
    }

    /// Takes the load lock of `id`, unless another replica holds it.
    pub(super) async fn try_lock(&self, id: &str) -> Result<Option<Fence>, Unavailable> {
        let fence = format!(
            "{}-{}",
            self.replica,
            self.fences.fetch_add(1, Ordering::Relaxed)
        );
        let mut c = self.connection();
        let options = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::PX(self.lock_ttl.as_millis() as u64));
        let taken: Option<String> = self
            .call("lock", async {
                c.set_options(self.key("l", id), &fence, options).await
            })
            .await?;
        Ok(taken.map(|_| Fence(fence)))
    }

    /// Whether some replica holds the load lock of `id`.
    pub(super) async fn locked(&self, id: &str) -> Result<bool, Unavailable> {
        let mut c = self.connection();
        self.call("lock", async move { c.exists(self.key("l", id)).await })
            .await
    }

    /// Stores a load's result, if `fence` still holds the lock (an invalidation since took it
    /// away: the result is not stored), and tells the waiters. `origin` files it under its
    /// container for storage events; `keep_set` is how long that record lives.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn put(
        &self,
        id: &str,
        bytes: &[u8],
        px: u64,
        fence: Fence,
        origin: Option<&str>,
        keep_set: Duration,
    ) -> Result<bool, Unavailable> {
        let script = Script::new(PUT);
        let mut invocation = script.key(self.key("l", id));
        invocation.key(self.key("e", id));
        if let Some(origin) = origin {
            invocation.key(self.key("c", origin));
        }
        invocation
            .arg(&fence.0)
            .arg(bytes)
            .arg(px.max(1))
            .arg(id)
            .arg(keep_set.as_millis() as u64)
            .arg(&self.channel);
        let mut c = self.connection();
        let stored: i64 = self
            .call("put", async move { invocation.invoke_async(&mut c).await })
            .await?;
        Ok(stored == 1)
    }

    /// Lets go of a lock whose load failed.
    pub(super) async fn unlock(&self, id: &str, fence: Fence) {
        let script = Script::new(UNLOCK);
        let mut invocation = script.key(self.key("l", id));
        invocation.arg(&fence.0).arg(&self.channel).arg(id);
        let mut c = self.connection();
        let _: Result<i64, _> = self
            .call(
                "unlock",
                async move { invocation.invoke_async(&mut c).await },
            )
            .await;
    }

    /// Drops `id` from Redis and tells every replica to drop it.
    pub(super) async fn invalidate(&self, id: &str) {
        self.send(Notice::Invalidated(id.to_owned())).await;
    }

    /// Drops every entry loaded from `origin` (`{account}/{container}`), everywhere.
    pub(super) async fn invalidate_container(&self, origin: &str) {
        self.send(Notice::Container(origin.to_owned())).await;
    }

    /// Carries out an invalidation in Redis and publishes it; kept for later when Redis
    /// cannot be reached.
    async fn send(&self, notice: Notice) {
        if self.deliver(&notice).await.is_ok() {
            metrics::counter!("shared_cache_invalidations_sent_total").increment(1);
            return;
        }
        let mut pending = self.pending.lock().expect("not poisoned");
        if pending.len() >= PENDING_MAX {
            pending.clear();
            pending.push(Notice::Everything);
        } else if !pending.contains(&Notice::Everything) {
            pending.push(notice);
        }
    }

    async fn deliver(&self, notice: &Notice) -> Result<(), Unavailable> {
        let mut c = self.connection();
        match notice {
            Notice::Invalidated(id) => {
                let mut pipe = redis::pipe();
                pipe.del(&[self.key("e", id), self.key("l", id)])
                    .ignore()
                    .publish(&self.channel, notice.payload())
                    .ignore();
                self.call("invalidate", async move { pipe.query_async(&mut c).await })
                    .await
            }
            Notice::Container(origin) => {
                let script = Script::new(DROP_CONTAINER);
                let mut invocation = script.key(self.key("c", origin));
                invocation.arg(&self.prefix).arg(&self.channel).arg(origin);
                self.call("invalidate", async move {
                    invocation.invoke_async::<i64>(&mut c).await.map(drop)
                })
                .await
            }
            Notice::Everything | Notice::Loaded(_) => {
                self.call("invalidate", async move {
                    c.publish::<_, _, i64>(&self.channel, notice.payload())
                        .await
                        .map(drop)
                })
                .await
            }
        }
    }

    /// Sends the invalidations kept while Redis could not be reached.
    async fn flush_pending(&self) {
        let pending = std::mem::take(&mut *self.pending.lock().expect("not poisoned"));
        for notice in pending {
            self.send(notice).await;
        }
    }

    /// Wakes the waiters on `id`'s load.
    pub(super) fn loaded(&self, id: &str) {
        if let Some(notify) = self.waiters.lock().expect("not poisoned").remove(id) {
            notify.notify_waiters();
        }
    }

    /// What a waiter on `id`'s load waits on.
    pub(super) fn waiter(&self, id: &str) -> Arc<Notify> {
        self.waiters
            .lock()
            .expect("not poisoned")
            .entry(id.to_owned())
            .or_default()
            .clone()
    }

    /// A waiter is done: forget its notifier unless another waits on it too.
    pub(super) fn done_waiting(&self, id: &str, notify: Arc<Notify>) {
        let mut waiters = self.waiters.lock().expect("not poisoned");
        // Two references: the map's and this one.
        if Arc::strong_count(&notify) <= 2
            && waiters.get(id).is_some_and(|n| Arc::ptr_eq(n, &notify))
        {
            waiters.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn notices_read_back_what_was_sent() {
        for notice in [
            Notice::Loaded("a:b".into()),
            Notice::Invalidated("vidéo 1".into()),
            Notice::Container("acct/asset-1".into()),
            Notice::Everything,
        ] {
            assert_eq!(Notice::parse(notice.payload().as_bytes()), Some(notice));
        }
        for junk in [&b""[..], b"x", b"q:1", b"\xff\xfe"] {
            assert_eq!(Notice::parse(junk), None);
        }
    }

    #[test]
    fn settings_become_a_tier_or_a_named_error() {
        let mut settings = SharedCacheSettings::default();
        assert!(
            SharedTier::new(&settings).unwrap().is_none(),
            "no URL, no tier"
        );
        settings.url = Some(Secret::new("redis://127.0.0.1:6379/2"));
        settings.password = Some(Secret::new("from-a-file"));
        let tier = SharedTier::new(&settings).unwrap().unwrap();
        assert_eq!(tier.channel, "ams-thumbnails:notices");
        assert_eq!(tier.key("e", "x"), "ams-thumbnails:e:x");
        settings.url = Some(Secret::new("redis://[::1"));
        let err = SharedTier::new(&settings).unwrap_err();
        assert_eq!(err.key, "cache.shared.url");
        assert!(!err.message.contains("::1"), "the URL is not echoed: {err}");
    }

    #[test]
    fn settings_are_checked() {
        let ok = SharedCacheSettings {
            url: Some(Secret::new("rediss://cache.example:6380")),
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
        let bad = [
            (
                SharedCacheSettings {
                    url: Some(Secret::new("http://x")),
                    ..ok.clone()
                },
                "cache.shared.url",
            ),
            (
                SharedCacheSettings {
                    url: None,
                    password: Some(Secret::new("p")),
                    ..ok.clone()
                },
                "cache.shared.password",
            ),
            (
                SharedCacheSettings {
                    key_prefix: String::new(),
                    ..ok.clone()
                },
                "cache.shared.key_prefix",
            ),
            (
                SharedCacheSettings {
                    timeout: Duration::ZERO,
                    ..ok.clone()
                },
                "cache.shared.timeout",
            ),
            (
                SharedCacheSettings {
                    lock_ttl: Duration::from_millis(10),
                    ..ok.clone()
                },
                "cache.shared.lock_ttl",
            ),
        ];
        for (settings, key) in bad {
            assert_eq!(settings.validate().unwrap_err().key, key);
        }
    }
}
