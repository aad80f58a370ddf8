//! The service core, between the HTTP layer and knockd: a verified
//! request leases a door, gets a fresh sequence written to that door's
//! file, waits until the door's knockd has re-read it, and answers. The
//! lease then follows the sequence until it is used or withdrawn.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::auth::{Accepted, Verifier};
use crate::door_file;
use crate::doors::{Door, Lease, Pool};
use crate::error::StartupError;
use crate::knockd;
use crate::limits::Limits;
use crate::metrics::{DoorGauge, Metrics};
use crate::query::KnockQuery;
use crate::replay::ReplayCache;
use crate::sequence::Sequence;
use crate::settings::{ReloadMode, Settings};
use crate::teapot::Reason;
use crate::watcher;

/// Seconds since the epoch; a clock before 1970 counts as 0 (and every
/// code then fails the window check rather than panicking).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Why a verified request got no sequence: each is a 503.
#[derive(Debug)]
pub enum IssueError {
    /// Every door stayed busy for `queue_timeout_ms`.
    QueueTimeout,
    /// The door could not be made ready; the detail is already logged.
    DoorFailed,
}

pub struct Service {
    /// The settings the service started with. `[[clients]]` and `[auth]`
    /// may since have been replaced by a reload (see `reload_clients`).
    pub settings: Settings,
    verifier: RwLock<Arc<Verifier>>,
    replay: ReplayCache,
    pub pool: Arc<Pool>,
    pub metrics: Metrics,
    pub limits: Limits,
    file_mode: u32,
}

impl Service {
    /// Builds the service and starts watching the door files. Must run
    /// inside a tokio runtime.
    pub fn new(settings: Settings) -> Result<Arc<Service>, StartupError> {
        let verifier = Verifier::new(
            settings.clients.clone(),
            settings.window,
            settings.replay_protection,
        );
        let pool = Pool::new(settings.doors.clone());
        let files = pool
            .doors()
            .iter()
            .map(|d| (d.settings.sequence_file.clone(), d.events.clone()))
            .collect();
        watcher::spawn(files).map_err(|source| StartupError::Io {
            action: "cannot watch the door files' directory",
            path: settings.doors[0].sequence_file.clone(),
            source,
        })?;
        let limits = Limits::new(settings.reject_budget, settings.issue_budget);
        Ok(Arc::new(Service {
            settings,
            verifier: RwLock::new(Arc::new(verifier)),
            replay: ReplayCache::default(),
            pool,
            metrics: Metrics::default(),
            limits,
            file_mode: door_file::mode_for_this_process(),
        }))
    }

    fn verifier(&self) -> Arc<Verifier> {
        self.verifier
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Verifies a request from `addr` with the current clients.
    pub fn verify(
        &self,
        query: &KnockQuery,
        addr: &str,
        now: u64,
    ) -> Result<Accepted, (Reason, Option<String>)> {
        self.verifier().verify(query, addr, now, &self.replay)
    }

    /// Gives the code of a request that got no sequence back to its client.
    pub fn release_code(&self, accepted: &Accepted) {
        self.replay.release(&accepted.name, &accepted.code);
    }

    pub fn client_count(&self) -> usize {
        self.verifier().clients().len()
    }

    /// Takes new clients, keys and time window from a re-read
    /// configuration; requests in flight finish with the old ones and the
    /// replay cache carries over. Other sections need a restart.
    pub fn reload_clients(&self, new: &Settings) {
        let verifier = Verifier::new(new.clients.clone(), new.window, new.replay_protection);
        *self.verifier.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(verifier);
    }

    /// Every door's state for `/healthz` and `/metrics`: `Err` says why a
    /// door cannot open now (its knockd is gone or did not take a reload).
    pub async fn door_health(&self) -> Vec<(usize, Result<(), String>)> {
        let mut out = Vec::new();
        for door in self.pool.doors() {
            let state = match door.down_reason() {
                Some(why) => Err(why),
                None if self.settings.reload == ReloadMode::None => Ok(()),
                None => match door.settings.knockd.pid_source() {
                    Some(src) => knockd::find_pid(src)
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string()),
                    None => Ok(()),
                },
            };
            out.push((door.index(), state));
        }
        out
    }

    pub async fn metrics_text(&self) -> String {
        let doors: Vec<DoorGauge> = self
            .door_health()
            .await
            .into_iter()
            .map(|(index, state)| DoorGauge {
                index,
                knockd_up: state.is_ok(),
            })
            .collect();
        self.metrics.render(self.pool.busy(), &doors)
    }

    /// Gives every door fresh decoys, so knockd can start and no sequence
    /// from before this start stays valid. A door whose knockd does not
    /// answer is set aside, not fatal: it may be started later.
    pub async fn prepare_doors(self: &Arc<Self>) -> Result<(), StartupError> {
        let mut leases = Vec::new();
        while let Some(lease) = self.pool.try_acquire() {
            leases.push(lease);
        }
        for lease in &leases {
            let door = lease.door();
            let contents = self
                .decoys()
                .map_err(|e| StartupError::Other(format!("cannot draw decoys: {e}")))?;
            let path = &door.settings.sequence_file;
            let stale = door_file::remove_stale_temps(path);
            if stale > 0 {
                log::warn!(
                    "event=stale-temp-removed door={} count={stale}",
                    door.index()
                );
            }
            door_file::write_atomic(path, &contents, self.file_mode).map_err(|source| {
                StartupError::Io {
                    action: "cannot write the door file",
                    path: path.clone(),
                    source,
                }
            })?;
        }
        let reloads = leases.iter().map(|lease| async move {
            // The file is already written; only the reload is repeated here.
            if let Ok(elapsed) = self.reload_and_confirm(lease.door()).await {
                log::info!(
                    "event=door-ready door={} reload_ms={:.1}",
                    lease.door().index(),
                    ms(elapsed)
                );
            }
        });
        futures_util::future::join_all(reloads).await;
        Ok(())
    }

    fn decoys(&self) -> Result<String, rand::rngs::SysError> {
        let spec = &self.settings.sequence;
        Ok(door_file::contents(&spec.draw()?, &spec.draw()?))
    }

    /// Issues a sequence to a verified client at `addr`.
    pub async fn issue(
        self: &Arc<Self>,
        who: &Accepted,
        addr: IpAddr,
    ) -> Result<Sequence, IssueError> {
        let waited = Instant::now();
        // A door whose knockd turns out to be gone is set aside and the
        // request tries another, so one dead knockd costs nobody a 503
        // while other doors work.
        for _ in 0..self.pool.doors().len() {
            let left = self.settings.queue_timeout.saturating_sub(waited.elapsed());
            let Some(lease) = self.pool.acquire(left).await else {
                log::warn!(
                    "event=unavailable client={} addr={addr} reason=queue-timeout waited_ms={:.0}",
                    who.name,
                    ms(waited.elapsed())
                );
                self.metrics.unavailable(true);
                return Err(IssueError::QueueTimeout);
            };
            let door = lease.door().clone();
            match self.issue_on(&door, who, addr).await {
                Ok((sequence, used, reload_time)) => {
                    log::info!(
                        "event=issue client={} addr={addr} door={} knocks={} reload_ms={:.1} \
                            waited_ms={:.0}",
                        who.name,
                        door.index(),
                        sequence.knocks().len(),
                        ms(reload_time),
                        ms(waited.elapsed())
                    );
                    self.metrics.issue();
                    let service = self.clone();
                    let client = who.name.clone();
                    tokio::spawn(async move { service.follow(lease, used, client).await });
                    return Ok(sequence);
                }
                Err(()) if self.pool.doors().iter().any(|d| d.is_up()) => continue,
                Err(()) => break,
            }
        }
        log::warn!(
            "event=unavailable client={} addr={addr} reason=door-failed",
            who.name
        );
        self.metrics.unavailable(false);
        Err(IssueError::DoorFailed)
    }

    /// Draws a sequence and installs it on `door`; failures are logged.
    async fn issue_on(
        &self,
        door: &Arc<Door>,
        who: &Accepted,
        addr: IpAddr,
    ) -> Result<(Sequence, tokio::sync::watch::Receiver<u64>, Duration), ()> {
        let spec = &self.settings.sequence;
        let (sequence, decoy) = match (spec.draw(), spec.draw()) {
            (Ok(s), Ok(d)) => (s, d),
            (Err(e), _) | (_, Err(e)) => {
                log::error!(
                    "event=no-randomness client={} addr={addr} error=\"{e}\"",
                    who.name
                );
                return Err(());
            }
        };
        // Subscribe before knockd can see the sequence, so no use is missed.
        let used = door.events.next_modify();
        let contents = door_file::contents(&sequence, &decoy);
        let reload_time = self.install(door, &contents).await?;
        Ok((sequence, used, reload_time))
    }

    /// Holds the door until knockd marks the sequence used or the TTL
    /// passes; then withdraws it with decoys. Dropping the lease frees it.
    async fn follow(
        self: Arc<Self>,
        lease: Lease,
        mut used: tokio::sync::watch::Receiver<u64>,
        client: String,
    ) {
        let door = lease.door().clone();
        let issued = Instant::now();
        let ttl = self.settings.ttl;
        tokio::select! {
            changed = used.changed() => {
                if changed.is_ok() {
                    self.metrics.used();
                    log::info!("event=used door={} client={client} \
                        after_ms={:.0}", door.index(), ms(issued.elapsed()));
                }
            }
            () = tokio::time::sleep(ttl) => {
                let withdrawn = match self.decoys() {
                    Ok(contents) => self.install(&door, &contents).await.is_ok(),
                    Err(_) => false,
                };
                if withdrawn {
                    self.metrics.withdrawn();
                    log::info!("event=withdrawn door={} client={client} \
                        after_s={}", door.index(), ttl.as_secs());
                } else {
                    log::error!("event=withdraw-failed door={} client={client} note=\"the sequence \
                        may stay valid until the next issue on this door\"", door.index());
                }
            }
        }
        drop(lease);
    }

    /// Writes the door file and makes its knockd take it; returns how long
    /// knockd took. Failures are logged here, with what to fix.
    async fn install(&self, door: &Arc<Door>, contents: &str) -> Result<Duration, ()> {
        let path = door.settings.sequence_file.clone();
        let (text, mode) = (contents.to_owned(), self.file_mode);
        let written =
            tokio::task::spawn_blocking(move || door_file::write_atomic(&path, &text, mode)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                log::error!(
                    "event=door-write-failed door={} path={} error=\"{e}\" fix=\"check space and \
                        permissions of the directory\"",
                    door.index(),
                    door.settings.sequence_file.display()
                );
                return Err(());
            }
            Err(_) => return Err(()),
        }
        self.reload_and_confirm(door).await
    }

    async fn reload_and_confirm(&self, door: &Arc<Door>) -> Result<Duration, ()> {
        let result = self.reload_and_confirm_once(door).await;
        if self.settings.reload != ReloadMode::None {
            self.metrics.reload(result);
        }
        result
    }

    async fn reload_and_confirm_once(&self, door: &Arc<Door>) -> Result<Duration, ()> {
        let started = Instant::now();
        if self.settings.reload == ReloadMode::None {
            return Ok(started.elapsed());
        }
        let timeout = self.settings.confirm_timeout;
        let mut opened = door.events.next_open();
        let pid = match knockd::reload(&door.settings.knockd, timeout).await {
            Ok(pid) => pid,
            Err(e) => {
                door.mark_down(&e.to_string());
                return Err(());
            }
        };
        // knockd re-opens the file by path while re-reading its config; until
        // then the new sequence is not armed (design, fact 5).
        let left = timeout.saturating_sub(started.elapsed());
        if !matches!(
            tokio::time::timeout(left, opened.changed()).await,
            Ok(Ok(()))
        ) {
            door.mark_down(&format!(
                "knockd did not re-open {} within {} ms; check that it runs with this door file \
                    and can read it",
                door.settings.sequence_file.display(),
                timeout.as_millis()
            ));
            return Err(());
        }
        if let Some(pid) = pid {
            let left = timeout.saturating_sub(started.elapsed());
            if let Err(e) = knockd::wait_until_idle(pid, left).await {
                door.mark_down(&e.to_string());
                return Err(());
            }
        }
        door.mark_up();
        Ok(started.elapsed())
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
