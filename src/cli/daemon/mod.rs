//! `tgknock run`: reconcile the firewall, then long-poll Telegram forever. A second thread
//! closes openings at their deadlines, whatever the poll is doing.
//!
//! The rooms: `ask` (one command being handled), `poll` (one long poll and its batch), `offset` (where the daemon is in
//! Telegram's queue, and [`Daemon::carry_out`], the one way a change from chat is saved
//! with it), `chat` (the dispatcher: every [`Action`] has its arm), `change` (opening,
//! closing, bans, actions), `second_factor` (codes: asked, waiting, checked), `denied`
//! (strangers' summary), `drift` (other programs changing the rules), `backoff` (Telegram
//! failing), `skew` (the board's clock against Telegram's), `expiry` (the deadline thread).
//! The daemon talks to Telegram only through the [`Bot`] trait.
//!
//! [`Action`]: crate::chat::decide::Action

mod ask;
mod backoff;
mod change;
mod chat;
mod denied;
mod drift;
mod expiry;
mod offset;
mod poll;
mod second_factor;
mod skew;
#[cfg(test)]
mod testing;

use crate::base::ids::ChatId;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::Instant;

use crate::base::duration;
use crate::base::error::{Error, Result};
use crate::chat::bot::Bot;
use crate::chat::report;
use crate::chat::telegram::BotApi;
use crate::firewall::keeper::Keeper;
use crate::firewall::watch::Watcher;
use crate::os::clock::{self, SystemAlarm};
use crate::store::actions;
use crate::store::config::Config;
use crate::store::state::{Heartbeat, Paths, PidLock, State, StateLock};

pub(crate) use expiry::Expiry;
pub(crate) use skew::clock_is_off;

/// Updates asked for per poll (Telegram's maximum).
const BATCH: u32 = 100;

pub(crate) struct Daemon {
    keeper: Arc<Keeper>,
    api: Arc<dyn Bot>,
    bot_name: String,
    offset: offset::Offset,
    poll: poll::Poll,
    clock: skew::Skew,
    denied: denied::Denied,
    drift: Arc<drift::Drift>,
    codes: second_factor::SecondFactor,
    /// The actions running now.
    running: actions::Running,
    /// Logins waiting for approval (`approve-login`), each served by its own thread.
    approvals: Arc<crate::cli::approve_server::Approvals>,
}

/// The daemon's whole life. Returns only on a fatal error (exit 1, or 3 for the token).
pub(crate) fn run(cfg: Config) -> Result<()> {
    clock::test_hook_from_env();
    // Temporaries older than this start are a crash's, unless their writer holds them.
    let started_at = std::time::SystemTime::now();
    let token = cfg.require_bot()?.clone();
    for w in &cfg.warnings {
        log::warn!("{w}");
    }
    if crate::os::clock::clock_before_build() {
        log::warn!(
            "the system clock says {}, before this binary was built: TLS will fail until the clock is set (NTP)",
            duration::utc_full(crate::os::clock::now())
        );
    }
    let api = BotApi::new(&cfg.telegram, &token)?;
    let keeper = Arc::new(Keeper::new(cfg));
    let (_pid, start_lock) = take_over(&keeper, started_at)?;
    let fw = &keeper.cfg.firewall;
    if keeper.fw.fell_back() {
        log::info!(
            "TGKNOCK_FIREWALL=auto: {} does not exist, so tgknock uses nftables ({}, {})",
            fw.iptables.display(),
            fw.nft.display(),
            keeper.fw.place()
        );
    }
    let poll_timeout = poll_timeout(&keeper.cfg);
    let wake = keeper.paths.wake();
    let _ = std::fs::remove_file(&wake);
    let socket = UnixDatagram::bind(&wake).map_err(|e| Error::file(&wake, "bind", e))?;
    let (state, watcher) = reconcile(&keeper, start_lock)?;
    spawn_expiry(&keeper, socket)?;
    let seed = clock::wall().as_nanos() as u64 ^ u64::from(std::process::id());
    let mut d = Daemon::new(keeper, Arc::new(api.clone()), &state, poll_timeout, seed);
    crate::cli::approve_server::serve(
        &d.keeper.paths.approve(),
        d.keeper.cfg.clone(),
        api,
        Arc::clone(&d.approvals),
    );
    d.drift.spawn_watcher(watcher);
    d.log_in()?;
    loop {
        d.poll_once();
    }
}

/// Takes the daemon's place: the pid lock for its life, and the state lock, held to the
/// end of the reconcile; the gates are closed if that cannot be done (another daemon
/// running aside).
fn take_over(keeper: &Keeper, started_at: std::time::SystemTime) -> Result<(PidLock, StateLock)> {
    let dir = keeper
        .paths
        .state_dir()
        .map_err(|e| fail_closed(keeper, e))?;
    let pid = match PidLock::acquire(&keeper.paths) {
        Ok(p) => p,
        // Another daemon runs: its rules are its own.
        Err(e) if PidLock::holder(&keeper.paths).is_some() => return Err(e),
        Err(e) => return Err(fail_closed(keeper, e)),
    };
    // The state lock is held from here to the end of the reconcile: a console command
    // writing the state right now keeps its temporary file (and any other live writer's
    // is kept by its lock or its age), and one that comes meanwhile (`status` right after
    // a restart) waits for the reconcile rather than seeing it half done.
    let start_lock = StateLock::acquire(&keeper.paths).map_err(|e| fail_closed(keeper, e))?;
    // The state lock and the pid lock are held: no live writer of these can exist.
    dir.remove_temporaries(started_at, crate::store::state::GUARDED_FILES);
    alive(&keeper.paths, None);
    Ok((pid, start_lock))
}

/// The long-poll timeout: `TGKNOCK_POLL_TIMEOUT`, at most a minute (the rules are checked
/// once a poll) and under half of systemd's watchdog interval.
fn poll_timeout(cfg: &Config) -> u64 {
    let mut poll_timeout = cfg.telegram.poll_timeout;
    if poll_timeout > drift::DRIFT_MAX_GAP {
        log::info!(
            "TGKNOCK_POLL_TIMEOUT={poll_timeout}s: polling for {} s, so that the rules are checked at least every minute",
            drift::DRIFT_MAX_GAP
        );
        poll_timeout = drift::DRIFT_MAX_GAP;
    }
    if let Some(interval) = crate::os::notify::watchdog_interval() {
        let limit = (interval.as_secs() / 2).saturating_sub(1).max(1);
        if poll_timeout > limit {
            log::warn!(
                "TGKNOCK_POLL_TIMEOUT={}s is not under half of systemd's WatchdogSec ({} s); polling for {limit} s",
                poll_timeout,
                interval.as_secs()
            );
            poll_timeout = limit;
        }
    }
    poll_timeout
}

/// Puts the saved state in the kernel (the gates closed if it cannot be), says so, and
/// tells systemd the daemon is ready; gives the state.
fn reconcile(keeper: &Keeper, start_lock: StateLock) -> Result<(State, Option<Watcher>)> {
    keeper.fw.probe();
    keeper.fw.keep_reference();
    let watcher = drift::Drift::subscribe(keeper);
    if let Some(why) = keeper.fw.deadline_problem() {
        log::warn!("{}", crate::firewall::no_deadlines(why));
    }
    let started = Instant::now();
    let now = crate::os::clock::now();
    let reconciled = keeper.change_locked(&start_lock, now, |_| Ok(()));
    drop(start_lock);
    let (_, out) = reconciled.map_err(|e| fail_closed(keeper, e))?;
    for line in report::status_text(&keeper.cfg, &keeper.fw, &out).lines() {
        log::info!("{line}");
    }
    crate::os::notify::send("READY=1");
    log::info!(
        "firewall reconciled in {} ms; polling Telegram at {}",
        started.elapsed().as_millis(),
        keeper.cfg.telegram.api_url
    );
    Ok((out.state, watcher))
}

fn spawn_expiry(keeper: &Arc<Keeper>, socket: UnixDatagram) -> Result<()> {
    let k = Arc::clone(keeper);
    std::thread::Builder::new()
        .name("expiry".into())
        .spawn(move || {
            let mut expiry = Expiry::new(k, SystemAlarm::new(socket));
            loop {
                expiry.turn();
            }
        })
        .map_err(|source| Error::Spawn {
            what: "the expiry thread".into(),
            source,
        })?;
    Ok(())
}

/// Tells the watchdogs (ours and systemd's) that the daemon is alive.
fn alive(paths: &Paths, skew: Option<i64>) {
    let beat = Heartbeat {
        at: crate::os::clock::now(),
        pid: std::process::id(),
        state_dir: paths.dir.clone(),
        skew,
    };
    if let Err(e) = beat.write(paths) {
        log::warn!("cannot write the heartbeat: {e}");
    }
    crate::os::notify::send("WATCHDOG=1");
}

/// Whatever keeps the daemon from starting (an unreadable state file, a planted link, a
/// state directory others can write), the gates are closed rather than left as they were;
/// the error is returned, with that said.
fn fail_closed(keeper: &Keeper, e: Error) -> Error {
    match keeper.fw.apply(&State::default(), crate::os::clock::now()) {
        Ok(_) => log::error!("every gate is closed until this is fixed: {e}"),
        Err(e2) => log::error!("closing every gate failed too ({e2}): {e}"),
    }
    e
}

/// Sends `text` to `chat`; a failure is logged.
fn reply(api: &dyn Bot, chat: ChatId, text: &str) {
    if let Err(e) = api.send_message(chat, text) {
        log::warn!("could not send a reply to chat {chat}: {e}");
    }
}

/// Sends `text` to every allowed user.
fn tell_owners(api: &dyn Bot, cfg: &Config, text: &str) {
    for &user in &cfg.telegram.allowed_users {
        reply(api, user.chat(), text);
    }
}

impl Daemon {
    fn new(
        keeper: Arc<Keeper>,
        api: Arc<dyn Bot>,
        state: &State,
        poll_timeout: u64,
        seed: u64,
    ) -> Daemon {
        let codes = second_factor::SecondFactor::new(&keeper.cfg);
        let drift = Arc::new(drift::Drift::new(Arc::clone(&keeper), Arc::clone(&api)));
        Daemon {
            keeper,
            api,
            bot_name: String::new(),
            offset: offset::Offset::saved(state),
            poll: poll::Poll::new(poll_timeout, seed),
            clock: skew::Skew::default(),
            denied: denied::Denied::default(),
            drift,
            codes,
            running: actions::Running::default(),
            approvals: Arc::new(crate::cli::approve_server::Approvals::new()),
        }
    }

    fn cfg(&self) -> &Config {
        &self.keeper.cfg
    }

    fn reply(&self, chat: ChatId, text: &str) {
        reply(&*self.api, chat, text);
    }

    /// `getMe` until it answers (the network may come up after the rules are in place);
    /// a rejected token is fatal.
    fn log_in(&mut self) -> Result<()> {
        loop {
            match self.api.get_me() {
                Ok((me, server_time)) => {
                    self.poll.backoff.reset();
                    self.note_clock(server_time, true);
                    self.bot_name = me.username.clone().unwrap_or_default();
                    log::info!("logged in as @{} (id {})", self.bot_name, me.id);
                    self.tell_clock();
                    return Ok(());
                }
                Err(e) if e.is_token_rejected() => return Err(Error::TokenRejected(e)),
                Err(e) => self.back_off(log::Level::Warn, &format!("getMe failed: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::TestDaemon;
    use crate::testkit::FakeBot;

    #[test]
    fn logging_in_learns_the_bots_name() {
        let bot = FakeBot::new();
        let mut t = TestDaemon::new(&bot, &[]);
        t.d.log_in().unwrap();
        assert_eq!(t.d.bot_name, "tgknock_test_bot");
    }
}
