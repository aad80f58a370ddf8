//! The replay cache: each accepted code works once. An entry only needs
//! to live until the code's time falls out of the window, after which the
//! time check refuses it anyway, so the cache stays small.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct ReplayCache {
    /// (client name, code) -> unix second after which the entry is moot.
    /// Keyed by name so the cache survives a configuration reload.
    seen: Mutex<HashMap<(String, String), u64>>,
}

impl ReplayCache {
    /// Records the code; false when it was already recorded and still live.
    pub fn claim(&self, client: &str, code: &str, expires: u64, now: u64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, exp| *exp >= now);
        let key = (client.to_owned(), code.to_owned());
        if seen.contains_key(&key) {
            return false;
        }
        seen.insert(key, expires);
        true
    }

    /// Gives a code back when no sequence was handed out for it (a 503), so
    /// the client may try again within its window.
    pub fn release(&self, client: &str, code: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.remove(&(client.to_owned(), code.to_owned()));
    }

    pub fn len(&self) -> usize {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_is_claimed_once() {
        let cache = ReplayCache::default();
        assert!(cache.claim("a", "c", 110, 100));
        assert!(!cache.claim("a", "c", 110, 101));
        assert!(
            cache.claim("b", "c", 110, 101),
            "another client's identical code is its own"
        );
    }

    #[test]
    fn a_released_code_can_be_claimed_again() {
        let cache = ReplayCache::default();
        assert!(cache.claim("a", "c", 110, 100));
        cache.release("a", "c");
        assert!(cache.claim("a", "c", 110, 100));
    }

    #[test]
    fn entries_past_their_window_are_dropped() {
        let cache = ReplayCache::default();
        assert!(cache.claim("a", "old", 104, 100));
        assert!(cache.claim("a", "new", 200, 105));
        assert_eq!(cache.len(), 1);
    }
}
