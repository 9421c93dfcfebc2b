//! Secrets that callers present (the gateway's API keys and dashboard sessions, inventory's access tokens):
//! how one is made, the digest it is stored and looked up by, and the short cache of lookups a gate keeps so
//! that a revocation takes effect within a bound without a database read per call; and ([`tls`]) the
//! certificate files every TLS hop reads, checked at start.

pub mod tls;

use std::{
    collections::HashMap,
    fmt,
    sync::Mutex,
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};

/// A secret as presented by a caller or handed to its owner. `Debug` never shows it, so logging a request
/// or a configuration cannot leak one.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a presented secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// A new secret with a public id: `<prefix>_` and 8 hex digits (32 bits, shown in listings and used to
    /// revoke), then `_` and 128 bits of the OS's randomness (a UUIDv4's 122 random bits in practice).
    /// Returns the id and the secret, which exists nowhere else from then on.
    pub fn generate(prefix: &str) -> (String, Self) {
        let id = format!("{prefix}_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let secret = Self(format!("{id}_{}", uuid::Uuid::new_v4().simple()));
        (id, secret)
    }

    /// The SHA-256 digest the secret is stored and looked up by. A fast digest is enough: the secrets are
    /// random and long, not passwords a person chose, so they cannot be guessed from it.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }

    /// The secret itself, for the one place that sends it or hands it to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A lookup's answer (`None`: not found) and when it was made.
type Entry<V> = (Instant, Option<V>);

/// Lookups by digest, each trusted for `ttl`: found or not, so that neither a live credential nor a flood
/// of made-up ones costs a database read per call, and a revoked one stops working within `ttl`.
pub struct LookupCache<V> {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<[u8; 32], Entry<V>>>,
}

impl<V> fmt::Debug for LookupCache<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookupCache").field("ttl", &self.ttl).field("capacity", &self.capacity).finish()
    }
}

impl<V: Clone> LookupCache<V> {
    /// A cache trusting each lookup for `ttl`, holding at most `capacity` of them: beyond it, expired ones are
    /// dropped, then all.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self { ttl, capacity, entries: Mutex::new(HashMap::new()) }
    }

    /// How long a lookup is trusted: the bound on how late a revocation takes effect.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The answer of a lookup of `digest` made within `ttl`, if there was one (`Some(None)`: looked up and
    /// not found).
    pub fn get(&self, digest: &[u8; 32]) -> Option<Option<V>> {
        let entries = self.entries.lock().expect("lookup cache lock");
        entries.get(digest).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, found)| found.clone())
    }

    /// Keeps the answer of a lookup made now.
    pub fn put(&self, digest: [u8; 32], found: Option<V>) {
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("lookup cache lock");
        if entries.len() >= self.capacity {
            entries.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(digest, (now, found));
    }

    /// Forgets the lookup of `digest` (its credential was just ended here: no need to wait out the ttl).
    pub fn forget(&self, digest: &[u8; 32]) {
        self.entries.lock().expect("lookup cache lock").remove(digest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_secret_starts_with_its_id_and_never_prints() {
        let (id, secret) = Secret::generate("inv");
        assert!(id.starts_with("inv_") && id.len() == 12, "{id}");
        assert!(secret.expose().starts_with(&format!("{id}_")));
        assert!(secret.expose().len() >= 40);
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        let (_, other) = Secret::generate("inv");
        assert_ne!(secret, other);
        assert_ne!(secret.digest(), other.digest());
        assert_eq!(secret.digest(), Secret::new(secret.expose()).digest());
    }

    #[test]
    fn a_lookup_is_trusted_for_its_ttl_only() {
        let cache = LookupCache::new(Duration::from_millis(50), 10);
        let digest = Secret::new("a").digest();
        assert_eq!(cache.get(&digest), None);
        cache.put(digest, Some(7));
        assert_eq!(cache.get(&digest), Some(Some(7)));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get(&digest), None, "an expired lookup is not trusted");
        cache.put(digest, None);
        assert_eq!(cache.get(&digest), Some(None), "a miss is remembered too");
        cache.forget(&digest);
        assert_eq!(cache.get(&digest), None);
    }

    #[test]
    fn a_flood_of_lookups_stays_within_capacity() {
        let cache = LookupCache::new(Duration::from_secs(60), 3);
        for i in 0..10u8 {
            cache.put([i; 32], Some(i));
        }
        assert!(cache.entries.lock().unwrap().len() <= 3);
        assert_eq!(cache.get(&[9; 32]), Some(Some(9)), "the newest lookup is kept");
    }
}
