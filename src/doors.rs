//! The doors: one knockd process with one one-time door each (design,
//! facts 4 and 8). An issue leases a free door; the lease is held until
//! the sequence is used or withdrawn and gives the door back when
//! dropped. Requests that find every door busy wait first come, first
//! served. A door whose knockd failed is set aside (logged once) while
//! others work, and comes back when its knockd re-opens the door file.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::settings::DoorSettings;
use crate::watcher::DoorEvents;

/// A door set aside is tried again after this long even without a sign
/// of life, in case its knockd came back without re-opening the file.
const RETRY_DOWN_DOOR_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Down {
    since: Instant,
    opens_seen: u64,
    why: String,
}

#[derive(Debug)]
pub struct Door {
    pub settings: DoorSettings,
    pub events: Arc<DoorEvents>,
    down: Mutex<Option<Down>>,
}

impl Door {
    pub fn new(settings: DoorSettings) -> Self {
        Door {
            settings,
            events: Arc::new(DoorEvents::default()),
            down: Mutex::new(None),
        }
    }

    pub fn index(&self) -> usize {
        self.settings.index
    }

    fn down(&self) -> MutexGuard<'_, Option<Down>> {
        self.down.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the door aside; logs only on the change from working.
    pub fn mark_down(&self, why: &str) {
        let mut down = self.down();
        if down.is_none() {
            log::error!("event=door-down door={} reason=\"{why}\"", self.index());
        }
        *down = Some(Down {
            since: Instant::now(),
            opens_seen: self.events.opens_so_far(),
            why: why.to_owned(),
        });
    }

    pub fn mark_up(&self) {
        if self.down().take().is_some() {
            log::info!("event=door-up door={}", self.index());
        }
    }

    /// Working, or its knockd has opened the door file since it failed.
    pub fn is_up(&self) -> bool {
        match &*self.down() {
            None => true,
            Some(d) => self.events.opens_so_far() != d.opens_seen,
        }
    }

    /// Why the door is set aside, unless its knockd has shown life since.
    pub fn down_reason(&self) -> Option<String> {
        match &*self.down() {
            Some(d) if self.events.opens_so_far() == d.opens_seen => Some(d.why.clone()),
            _ => None,
        }
    }

    fn retry_due(&self) -> bool {
        self.down()
            .as_ref()
            .is_none_or(|d| d.since.elapsed() >= RETRY_DOWN_DOOR_AFTER)
    }
}

#[derive(Debug, Default)]
struct PoolState {
    free: Vec<usize>,
    waiters: VecDeque<oneshot::Sender<Lease>>,
}

#[derive(Debug)]
pub struct Pool {
    doors: Vec<Arc<Door>>,
    state: Mutex<PoolState>,
}

/// The right to use one door; dropping it makes the door free again.
#[derive(Debug)]
pub struct Lease {
    pool: Arc<Pool>,
    index: Option<usize>,
}

impl Lease {
    pub fn door(&self) -> &Arc<Door> {
        &self.pool.doors[self.index.expect("a lease holds a door until dropped")]
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(index) = self.index.take() {
            self.pool.release(index);
        }
    }
}

impl Pool {
    pub fn new(doors: Vec<DoorSettings>) -> Arc<Pool> {
        let doors: Vec<Arc<Door>> = doors.into_iter().map(|d| Arc::new(Door::new(d))).collect();
        let free = (0..doors.len()).collect();
        Arc::new(Pool {
            doors,
            state: Mutex::new(PoolState {
                free,
                waiters: VecDeque::new(),
            }),
        })
    }

    pub fn doors(&self) -> &[Arc<Door>] {
        &self.doors
    }

    fn state(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Doors currently leased.
    pub fn busy(&self) -> usize {
        self.doors.len() - self.state().free.len()
    }

    /// A door worth handing out: working, due for a retry, or the only
    /// kind left (when every door is down, a request should fail fast
    /// rather than wait for the queue timeout).
    fn eligible(&self, index: usize) -> bool {
        let door = &self.doors[index];
        door.is_up() || door.retry_due() || self.doors.iter().all(|d| !d.is_up())
    }

    /// Waits up to `timeout` for a door; `None` when none came in time.
    pub async fn acquire(self: &Arc<Self>, timeout: Duration) -> Option<Lease> {
        let rx = {
            let mut st = self.state();
            if let Some(lease) = self.take_free(&mut st) {
                return Some(lease);
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.push_back(tx);
            log::debug!("event=queued waiting={}", st.waiters.len());
            rx
        };
        // A lease sent just as the timeout fires is dropped with `rx` and
        // so goes back to the pool: no door is ever lost.
        tokio::time::timeout(timeout, rx).await.ok()?.ok()
    }

    /// A free door now, without queueing; `None` when there is none.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Lease> {
        let mut st = self.state();
        self.take_free(&mut st)
    }

    fn take_free(self: &Arc<Self>, st: &mut PoolState) -> Option<Lease> {
        while st.waiters.front().is_some_and(|w| w.is_closed()) {
            st.waiters.pop_front();
        }
        // Late arrivals do not overtake requests already waiting. The door
        // freed longest ago goes first, so every knockd takes turns and a
        // dead one is noticed early.
        if !st.waiters.is_empty() {
            return None;
        }
        let pick = st
            .free
            .iter()
            .position(|&i| self.doors[i].is_up())
            .or_else(|| st.free.iter().position(|&i| self.eligible(i)))?;
        let index = st.free.remove(pick);
        Some(Lease {
            pool: self.clone(),
            index: Some(index),
        })
    }

    fn release(self: &Arc<Self>, index: usize) {
        let mut lease = Lease {
            pool: self.clone(),
            index: Some(index),
        };
        if self.eligible(index) {
            loop {
                let waiter = self.state().waiters.pop_front();
                let Some(tx) = waiter else { break };
                match tx.send(lease) {
                    Ok(()) => return,
                    Err(back) => lease = back,
                }
            }
        }
        lease.index = None;
        self.state().free.push(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::KnockdLocator;

    fn pool(n: usize) -> Arc<Pool> {
        let doors = (0..n)
            .map(|index| DoorSettings {
                index,
                sequence_file: format!("/tmp/door-{index}.seq").into(),
                knockd: KnockdLocator::Unmanaged,
            })
            .collect();
        Pool::new(doors)
    }

    #[tokio::test]
    async fn each_door_goes_to_one_request_at_a_time() {
        let p = pool(2);
        let a = p.acquire(Duration::ZERO).await.unwrap();
        let b = p.acquire(Duration::ZERO).await.unwrap();
        assert_ne!(a.door().index(), b.door().index());
        assert!(p.acquire(Duration::from_millis(10)).await.is_none());
        assert_eq!(p.busy(), 2);
        drop(a);
        assert_eq!(p.busy(), 1);
        assert!(p.acquire(Duration::ZERO).await.is_some());
    }

    #[tokio::test]
    async fn waiting_requests_are_served_in_order_as_doors_free() {
        let p = pool(1);
        let first = p.acquire(Duration::ZERO).await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for n in 0..3 {
            let (p2, tx) = (p.clone(), tx.clone());
            tokio::spawn(async move {
                let lease = p2.acquire(Duration::from_secs(30)).await.unwrap();
                tx.send(n).unwrap();
                drop(lease);
            });
            // Let each waiter queue before the next one starts.
            while p.state().waiters.len() < n + 1 {
                tokio::task::yield_now().await;
            }
        }
        drop(first);
        let order: Vec<usize> = vec![
            rx.recv().await.unwrap(),
            rx.recv().await.unwrap(),
            rx.recv().await.unwrap(),
        ];
        assert_eq!(order, vec![0, 1, 2]);
        assert_eq!(p.busy(), 0);
    }

    #[tokio::test]
    async fn a_waiter_that_gave_up_does_not_swallow_the_door() {
        let p = pool(1);
        let first = p.acquire(Duration::ZERO).await.unwrap();
        assert!(p.acquire(Duration::from_millis(5)).await.is_none());
        drop(first);
        assert!(p.acquire(Duration::ZERO).await.is_some());
    }

    #[tokio::test]
    async fn one_request_after_another_takes_the_doors_in_turn() {
        let p = pool(3);
        let mut used = Vec::new();
        for _ in 0..6 {
            used.push(p.acquire(Duration::ZERO).await.unwrap().door().index());
        }
        assert_eq!(used, vec![0, 1, 2, 0, 1, 2]);
    }

    #[tokio::test]
    async fn a_down_door_is_skipped_while_another_works() {
        let p = pool(2);
        p.doors()[1].mark_down("test");
        for _ in 0..3 {
            let lease = p.acquire(Duration::ZERO).await.unwrap();
            assert_eq!(lease.door().index(), 0);
        }
        p.doors()[0].mark_down("test");
        assert!(
            p.acquire(Duration::ZERO).await.is_some(),
            "with every door down, one is tried"
        );
    }

    #[tokio::test]
    async fn a_down_door_is_back_once_its_knockd_opens_the_file() {
        let p = pool(2);
        p.doors()[1].mark_down("test");
        assert!(!p.doors()[1].is_up());
        p.doors()[1].events.opened.send_modify(|n| *n += 1);
        assert!(p.doors()[1].is_up());
    }
}
