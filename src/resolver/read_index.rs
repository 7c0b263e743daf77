//! The read index: the cache's found entries in a plain sharded map, read by hits instead of
//! moka. It owns nothing: moka owns the entries, the resolver feeds the index only with
//! entries moka holds, and moka's removal notices take them out again. The one `unsafe` of
//! the service lives here: a prefetch hint, with its SAFETY note.

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::Instant;

use super::entry::Resolved;

/// The cache's found entries in a plain sharded map, which hits read instead of moka.
///
/// A moka read also records the access for its eviction policy (an atomic store in the
/// entry, an operation through a channel, later a move in its LRU list and a frequency count):
/// with many entries, each of those touches memory no other request has in the CPU caches, and
/// measured ~1.5 µs per hit against ~14 µs for a whole bare request. Here a hit is one hash
/// lookup under a read lock. Moka stays the owner of the entries (loads, coalescing, expiry,
/// size bounds, invalidation): its removal notices take entries out of this index, an entry is
/// added only while moka holds it ([`Inner::publish`]), a hit checks the entry's own expiry,
/// and one hit in [`READ_SAMPLE`] is still read through moka so that its recency and
/// frequency follow the reads (moka itself drops read records under load).
pub(super) struct ReadIndex {
    shards: Box<[std::sync::RwLock<HotMap>]>,
    hasher: foldhash::fast::RandomState,
}

/// By the id's 64-bit hash: a lookup reads no key (the entry itself says whose it is, see
/// [`Resolved::is_for`]); two ids of the same hash share a slot, the later one wins and the
/// other is served through moka.
type HotMap = std::collections::HashMap<u64, Slot, BuildHasherDefault<HashIsKey>>;

/// An index entry: the cached entry, and where its JSON answer is.
///
/// A hit on one of many entries finds most of what it reads cold: the entry, the JSON it
/// checks the id against and then writes out, the ETag after it. Read one after the other,
/// each waits for memory in turn (perf put them at ~1.4 µs of a ~13 µs hit over 10,000 ids).
/// With the JSON's place kept next to the pointer to the entry, a hit asks for all of them at
/// once ([`prefetch`]) and waits for memory about once.
struct Slot {
    entry: Arc<Resolved>,
    /// Where the JSON starts (low 48 bits: the address) and how many bytes from there to the
    /// end of the ETag after it (high 16 bits, capped): a prefetch hint, never dereferenced.
    /// One word, so that a slot with its key is 24 bytes.
    hint: u64,
}

impl Slot {
    const ADDRESS_BITS: u32 = 48;

    fn new(entry: Arc<Resolved>) -> Self {
        let address = entry.body().as_ptr() as u64 & ((1 << Self::ADDRESS_BITS) - 1);
        let len = u64::from(entry.etag.start + entry.etag.len - entry.body.start).min(0xffff);
        Self {
            entry,
            hint: address | len << Self::ADDRESS_BITS,
        }
    }

    #[inline]
    fn prefetch(&self) {
        prefetch(Arc::as_ptr(&self.entry) as usize, 128);
        let mask = (1 << Self::ADDRESS_BITS) - 1;
        prefetch(
            (self.hint & mask) as usize,
            (self.hint >> Self::ADDRESS_BITS) as usize,
        );
    }
}

/// Asks the CPU to bring `len` bytes from `addr` into its caches, without waiting for them.
#[inline(always)]
fn prefetch(addr: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    for line in (addr & !63..addr + len).step_by(64) {
        // SAFETY: a prefetch is a hint: it never faults, whatever the address, and changes no
        // memory. The addresses are those of a live entry anyway.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line as *const i8)
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (addr, len);
}

/// The keys are hashes already.
#[derive(Default)]
struct HashIsKey(u64);

impl Hasher for HashIsKey {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl ReadIndex {
    const SHARDS: usize = 64;

    pub(super) fn new() -> Self {
        Self {
            shards: (0..Self::SHARDS).map(|_| Default::default()).collect(),
            hasher: Default::default(),
        }
    }

    #[inline]
    fn slot(&self, key: &str) -> (&std::sync::RwLock<HotMap>, u64) {
        use std::hash::BuildHasher;
        let hash = self.hasher.hash_one(key);
        // The map places entries by the low bits: the shard comes from others.
        (&self.shards[(hash >> 40) as usize % Self::SHARDS], hash)
    }

    /// The entry, while it may still be served at `now`.
    #[inline]
    pub(super) fn get(&self, key: &str, now: Instant) -> Option<Arc<Resolved>> {
        let (shard, hash) = self.slot(key);
        let found = {
            let shard = shard.read().expect("not poisoned");
            let slot = shard.get(&hash)?;
            slot.prefetch();
            slot.entry.clone()
        };
        (found.is_for(key) && now < found.valid_until).then_some(found)
    }

    pub(super) fn insert(&self, key: &str, resolved: Arc<Resolved>) {
        if !resolved.is_for(key) {
            return;
        }
        let (shard, hash) = self.slot(key);
        shard
            .write()
            .expect("not poisoned")
            .insert(hash, Slot::new(resolved));
    }

    /// Removes the key if it still maps to this very entry.
    pub(super) fn remove(&self, key: &str, resolved: &Arc<Resolved>) {
        let (shard, hash) = self.slot(key);
        let mut shard = shard.write().expect("not poisoned");
        if shard
            .get(&hash)
            .is_some_and(|s| Arc::ptr_eq(&s.entry, resolved))
        {
            shard.remove(&hash);
        }
    }

    /// Empties the index (every entry is being dropped).
    pub(super) fn clear(&self) {
        for shard in &self.shards {
            shard.write().expect("not poisoned").clear();
        }
    }

    pub(super) fn forget(&self, key: &str) {
        let (shard, hash) = self.slot(key);
        shard.write().expect("not poisoned").remove(&hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AssetThumbnails;
    use crate::resolver::entry::tests::resolved;
    use crate::resolver::render;

    #[test]
    fn the_read_index_holds_only_what_it_was_given() {
        let index = ReadIndex::new();
        let (a, b) = (resolved("a"), resolved("b"));
        index.insert("a", a.clone());
        index.insert("b", b.clone());
        // An entry under another id is refused.
        index.insert("c", a.clone());
        assert!(index.get("c", Instant::now()).is_none());
        assert!(Arc::ptr_eq(&index.get("a", Instant::now()).unwrap(), &a));
        // Only that very entry is removed.
        index.remove("a", &b);
        assert!(index.get("a", Instant::now()).is_some());
        index.remove("a", &a);
        assert!(index.get("a", Instant::now()).is_none());
        index.forget("b");
        assert!(index.get("b", Instant::now()).is_none());
        // Past its validity an entry is not served.
        let now = Instant::now();
        let rendered = render::render(&AssetThumbnails {
            asset_id: "old".into(),
            thumbnails: vec![],
            storyboard: None,
            expires_at: None,
        })
        .unwrap();
        index.insert(
            "old",
            Arc::new(Resolved::new(rendered, "a/c", None, now, now).unwrap()),
        );
        assert!(index.get("old", Instant::now()).is_none());
    }
}
