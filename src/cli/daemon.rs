//! `tgknock run`: reconcile the firewall, then long-poll Telegram forever. A second thread
//! closes openings at their deadlines, whatever the poll is doing.

use std::collections::{HashMap, VecDeque};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::base::duration;
use crate::base::error::ApiError;
use crate::base::error::{Error, Result};
use crate::base::gate::GateName;
use crate::base::totp;
use crate::chat::buttons;
use crate::chat::command::{self, Command};
use crate::chat::decide::{Action, Ignored, Now, decide};
use crate::chat::report;
use crate::chat::telegram::{BotApi, CallbackQuery, Incoming, Message, Update, User};
use crate::firewall::Kind;
use crate::firewall::keeper::{Keeper, Mark};
use crate::os::clock::{self, Alarm, SystemAlarm};
use crate::store::actions;
use crate::store::config::Config;
use crate::store::state::{Heartbeat, Paths, PidLock, State, StateLock};

/// How often at most the owners hear about strangers.
const DENIED_INTERVAL: Duration = Duration::from_secs(600);
/// Updates asked for per poll (Telegram's maximum).
const BATCH: u32 = 100;
/// How long the command menu and the strangers' summary wait at most for a poll that
/// finds no update waiting.
const CHORES_WAIT: Duration = Duration::from_secs(60);

/// 1 s doubling to 60 s, each wait shortened by up to a quarter at random so that many
/// boards behind one outage do not retry in step.
pub(crate) struct Backoff {
    next: Duration,
    seed: u64,
}

impl Backoff {
    pub(crate) fn new(seed: u64) -> Backoff {
        Backoff {
            next: Duration::from_secs(1),
            seed: seed | 1,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.next = Duration::from_secs(1);
    }

    /// The next wait.
    pub(crate) fn fail(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(60));
        // xorshift64: jitter needs no cryptographic randomness.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let cut = base.as_millis() as u64 / 4 * (self.seed % 1000) / 1000;
        base - Duration::from_millis(cut)
    }
}

/// Strangers' attempts, summarised to the owners at most every ten minutes.
#[derive(Default)]
pub(crate) struct Denied {
    counts: HashMap<i64, (u64, String)>,
    overflow: u64,
    total: u64,
    since: Option<u64>,
    last_sent: Option<Instant>,
}

/// Distinct strangers remembered per summary; beyond, only counted.
const DENIED_DISTINCT: usize = 10_000;

impl Denied {
    /// Records an attempt; true when it is this stranger's first in the window.
    pub(crate) fn record(&mut self, user: &User, now: u64) -> bool {
        self.total += 1;
        self.since.get_or_insert(now);
        if let Some(e) = self.counts.get_mut(&user.id) {
            e.0 += 1;
            return false;
        }
        if self.counts.len() < DENIED_DISTINCT {
            self.counts.insert(user.id, (1, user.describe()));
        } else {
            self.overflow += 1;
        }
        true
    }

    pub(crate) fn due(&self) -> bool {
        self.total > 0
            && self
                .last_sent
                .is_none_or(|t| t.elapsed() >= DENIED_INTERVAL)
    }

    /// The summary text, and a fresh window.
    pub(crate) fn take_summary(&mut self, now: u64) -> String {
        let mut who: Vec<(u64, String)> = self.counts.values().cloned().collect();
        who.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let distinct = self.counts.len() as u64 + self.overflow;
        let since = self.since.unwrap_or(now);
        let mut text = format!(
            "Ignored {} command{} from {} stranger{} since {} (not in TGKNOCK_ALLOWED_USERS):",
            self.total,
            if self.total == 1 { "" } else { "s" },
            distinct,
            if distinct == 1 { "" } else { "s" },
            duration::utc_short(since, now),
        );
        for (n, name) in who.iter().take(20) {
            text.push_str(&format!("\n{name} ×{n}"));
        }
        if distinct > 20 {
            text.push_str(&format!("\n… and {} more", distinct - 20));
        }
        self.counts.clear();
        self.overflow = 0;
        self.total = 0;
        self.since = None;
        self.last_sent = Some(Instant::now());
        text
    }
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

/// Closes openings and lifts bans at their deadlines, whatever the poll is doing. Sleeps
/// on its [`Alarm`] until the next deadline by the wall clock; a datagram on the wake
/// socket (the deadlines changed) or a step of the wall clock wakes it at once. A step
/// forward closes at once what it passed; a step back moves every deadline planned before
/// it back by as much, so that nothing lasts longer than asked.
pub(crate) struct Expiry<A: Alarm> {
    keeper: Arc<Keeper>,
    alarm: A,
    /// The wall clock minus the steady one when last looked at (ms).
    gap: i128,
    /// The last change failed: look again in a second.
    retry: bool,
    /// Since when changes fail, and when that was last logged.
    failing: Option<Instant>,
    last_told: Option<Instant>,
}

/// A failing expiry is logged at most this often.
const EXPIRY_TELL_EVERY: Duration = Duration::from_secs(60);

impl<A: Alarm> Expiry<A> {
    pub(crate) fn new(keeper: Arc<Keeper>, alarm: A) -> Expiry<A> {
        let gap = clock::gap(&alarm);
        Expiry {
            keeper,
            alarm,
            gap,
            retry: false,
            failing: None,
            last_told: None,
        }
    }

    /// One sleep and what it calls for.
    pub(crate) fn turn(&mut self) {
        let planned = match self.keeper.load_state() {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!("cannot read the state for deadlines: {e}");
                None
            }
        };
        let soon = self.alarm.wall() + Duration::from_secs(1);
        let mut at = match &planned {
            // 20 ms on, so that the second of the deadline has begun.
            Some(s) => s
                .next_deadline()
                .map(|d| Duration::from_secs(d) + Duration::from_millis(20)),
            None => Some(soon),
        };
        if self.retry {
            // The deadline that failed is past: waiting for it would retry at once, in a
            // loop that runs the tools as fast as they fail. Every deadline due before then
            // is taken with it.
            at = Some(soon);
        }
        self.alarm.sleep(at);
        let gap = clock::gap(&self.alarm);
        let step = gap - self.gap;
        let now = self.alarm.wall().as_secs();
        // Whole seconds, toward zero: an NTP correction under a second changes nothing.
        let secs = (step / 1000) as i64;
        if secs > 0 {
            log::info!(
                "the system clock was set forward {}: deadlines it passed end now",
                duration::human(secs.unsigned_abs())
            );
        }
        let result = match &planned {
            Some(planned) if secs < 0 => {
                let r = self
                    .keeper
                    .change(now, |st| Ok(st.move_deadlines(secs, planned)));
                if let Ok((moved, _)) = &r {
                    log::warn!(
                        "the system clock was set back {}: {moved} deadline{} moved back by as much, so that openings and bans last what was asked",
                        duration::human(secs.unsigned_abs()),
                        if *moved == 1 { "" } else { "s" }
                    );
                }
                r.map(|_| ())
            }
            _ => {
                let due = self
                    .keeper
                    .load_state()
                    .map(|s| s.next_deadline().is_some_and(|d| d <= now))
                    .unwrap_or(true);
                if due {
                    self.keeper.change(now, |_| Ok(())).map(|_| ())
                } else {
                    Ok(())
                }
            }
        };
        // Only the whole seconds taken into account are consumed: what is left under a
        // second adds up with the next steps (ten steps back of 0.9 s move deadlines 9 s).
        let taken = i128::from(secs) * 1000;
        match result {
            Ok(()) => {
                self.gap += taken;
                self.retry = false;
                if let Some(since) = self.failing.take() {
                    log::info!(
                        "the expired openings are closed, after failing for {}",
                        duration::human(since.elapsed().as_secs())
                    );
                }
            }
            Err(e) => {
                // The step, if any, is measured again next time.
                if secs >= 0 {
                    self.gap += taken;
                }
                self.retry = true;
                // Said at once, then at most once a minute while it goes on: a failing
                // firewall must not fill the log (and the SD card) with a line a second.
                let t = Instant::now();
                if self.failing.is_none() {
                    self.failing = Some(t);
                }
                if self.last_told.is_none_or(|l| t - l >= EXPIRY_TELL_EVERY) {
                    self.last_told = Some(t);
                    log::error!(
                        "could not close an expired opening: {e}; trying again every second"
                    );
                }
            }
        }
    }
}

/// The rules are compared with the kernel at most this often (and at least once per poll,
/// whose length is capped at [`DRIFT_MAX_GAP`]).
const DRIFT_MIN_GAP: Duration = Duration::from_secs(1);
/// The longest time between two checks of the rules, and so the longest poll.
const DRIFT_MAX_GAP: u64 = 60;
/// Repairs within this window that mean another program keeps changing the rules.
const DRIFT_WINDOW: Duration = Duration::from_secs(600);
const DRIFT_LOOP: usize = 3;
/// The first and the longest hold between repairs while another program keeps at it.
const DRIFT_HOLD_FIRST: Duration = Duration::from_secs(60);
const DRIFT_HOLD_MAX: Duration = Duration::from_secs(960);
/// Without a change for this long, the next one is news again.
const DRIFT_QUIET: Duration = Duration::from_secs(1800);

/// What the daemon knows of other programs changing its rules.
#[derive(Default)]
struct DriftWatch {
    last_check: Option<Instant>,
    /// Repairs within the last [`DRIFT_WINDOW`].
    repairs: VecDeque<Instant>,
    last_repair: Option<Instant>,
    /// While another program keeps changing the rules: the gap between repairs, and the
    /// time before which none is made.
    hold: Option<(Duration, Instant)>,
    /// The owners have heard of the current episode, and of the loop.
    told: bool,
    told_loop: bool,
    /// The firewall could not be read at the last check (said once).
    unreadable: bool,
}

/// Telegram's clock, as the `Date` header of the answer that carried a batch gives it.
#[derive(Debug, Clone, Copy)]
struct ServerClock {
    date: Option<u64>,
    received: Instant,
}

impl ServerClock {
    /// Telegram's time now, or the board's when the answer had no usable `Date`.
    fn now(&self) -> u64 {
        match self.date {
            Some(d) => d + self.received.elapsed().as_secs(),
            None => crate::os::clock::now(),
        }
    }
}

/// How far past Telegram's clock (the answer's `Date`) a message's own date may be when it
/// is remembered as the newest carried out.
const CARRIED_DATE_SLACK: i64 = 5;

/// Where the daemon is in Telegram's queue of updates.
///
/// Telegram numbers updates afresh after a week without any, and the new ids may be far
/// below the offset saved before (the Bot API's `Update.update_id`; a client asking with
/// the old offset gets them anyway, over and over, and confirms nothing). So an update
/// below the offset is not taken for a repeat on its id alone:
/// - a message newer than every message carried out (by its date, Telegram's clock) is
///   the new numbering: the offset goes down to it. Nothing carried out is above it (the
///   messages carried out are older), so no repeat slips through;
/// - a message dated at or before the newest carried out is a repeat, and skipped;
/// - an update without a date that could be carried out (a press) is handled without
///   moving the offset: a press is carried out only once Telegram takes its answer, which
///   it never does twice, and a stranger's changes nothing.
///
/// An update below the offset that does not move it is confirmed by asking the next poll
/// from past it (below the offset; in Telegram's numbering, nothing else is left there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Offset {
    /// The next `update_id` to ask for: every update below it was handled, in this
    /// numbering.
    next: Option<i64>,
    /// What the state file says.
    saved: Option<i64>,
    /// The date of the newest message carried out (Telegram's clock), as known and as
    /// the state file says.
    newest: Option<i64>,
    saved_newest: Option<i64>,
    /// An update of the batch being handled was carried out (not ignored): its offset
    /// must be saved before the next poll, so that a restart never carries it out again.
    acted: bool,
    /// The offset the next poll asks with instead of `next`: past the last update of the
    /// batch, which was below `next`.
    confirm: Option<i64>,
}

/// What an update below the offset is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Below {
    /// A message dated at or before the newest carried out: sent again, skipped.
    Repeat,
    /// A message newer than everything carried out: Telegram numbers afresh from it.
    Renumbered,
    /// No date to judge by (a press): handled, the offset left where it is.
    Undated,
}

impl Offset {
    /// As the state file left it.
    fn saved(st: &State) -> Offset {
        Offset {
            next: st.offset,
            saved: st.offset,
            newest: st.newest_carried,
            saved_newest: st.newest_carried,
            acted: false,
            confirm: None,
        }
    }

    /// The offset to ask the next poll with.
    fn asking(&self) -> Option<i64> {
        self.confirm.or(self.next)
    }

    /// A poll came back: whatever it asked with is confirmed.
    fn polled(&mut self) {
        self.confirm = None;
    }

    /// Whether update `id` is below the offset: handled before, or Telegram numbered
    /// afresh.
    fn below(&self, id: i64) -> bool {
        self.next.is_some_and(|o| id < o)
    }

    /// What an update below the offset is, by the date of its message (`None`: it has no
    /// message that could be carried out without Telegram's say, e.g. a press). Without a
    /// saved date (a state file from an older version), a message is taken for the new
    /// numbering: an old command sent again is still refused as stale by its date.
    fn judge(&self, date: Option<i64>) -> Below {
        match (date, self.newest) {
            (None, _) => Below::Undated,
            (Some(d), Some(newest)) if d <= newest => Below::Repeat,
            (Some(_), _) => Below::Renumbered,
        }
    }

    /// Telegram numbers afresh from update `id`: it is the next to handle.
    fn rebase(&mut self, id: i64) {
        self.next = Some(id);
    }

    /// Update `id`, below the offset, is handled: the next poll confirms it.
    fn confirm(&mut self, id: i64) {
        self.confirm = Some(id.saturating_add(1));
    }

    /// An update (of a message dated `date`, if it has one) is carried out.
    fn carried(&mut self, date: Option<i64>) {
        self.acted = true;
        self.newest = self.newest.max(date);
    }

    /// The offset once update `id` is handled.
    fn after(&self, id: i64) -> i64 {
        let next = id.saturating_add(1);
        self.next.map_or(next, |o| o.max(next))
    }

    /// What to save once update `id` is carried out.
    fn mark(&self, id: i64) -> Mark {
        Mark {
            offset: self.after(id),
            newest: self.newest,
        }
    }

    fn advance(&mut self, id: i64) {
        self.next = Some(self.after(id));
        self.confirm = None;
    }

    /// What to save: when the offset or the newest date moved since the last save past an
    /// update that was carried out. Batches of ignored updates (strangers, chatter) are
    /// not saved: the next poll confirms them to Telegram, and if the daemon stops before
    /// it, reading them again changes nothing. So a flood of strangers' messages writes
    /// nothing to the SD card.
    fn unsaved(&self) -> Option<Mark> {
        let next = self.next?;
        let moved = self.next != self.saved || self.newest != self.saved_newest;
        (self.acted && moved).then_some(Mark {
            offset: next,
            newest: self.newest,
        })
    }

    /// The state file now holds `mark` (saved with a change, or on its own).
    fn saved_at(&mut self, mark: Mark) {
        self.saved = Some(mark.offset);
        self.saved_newest = self.saved_newest.max(mark.newest);
        self.acted = false;
        if self.next.is_none_or(|n| n < mark.offset) {
            self.next = Some(mark.offset);
        }
    }
}

/// How a command came: typed, or by a press on the keyboard of the bot's message
/// `message_id`, which then shows the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Message,
    Press { message_id: i64 },
}

pub(crate) struct Daemon {
    keeper: Arc<Keeper>,
    api: BotApi,
    bot_name: String,
    offset: Offset,
    denied: Denied,
    backoff: Backoff,
    /// Updates still to fetch one at a time after an oversized answer.
    small_left: u32,
    commands_registered: bool,
    /// Since when requests nobody waits for have waited for a poll that finds nothing.
    chores_since: Option<Instant>,
    /// The long-poll timeout in use (at most a minute, and under half of systemd's watchdog
    /// interval).
    poll_timeout: u64,
    /// The board's clock minus Telegram's, in seconds, from the last answer.
    skew: Option<i64>,
    /// What the owners are to hear about the board's clock, after the batch at hand.
    clock_notice: Option<String>,
    drift: DriftWatch,
    /// The second factor (`TGKNOCK_TOTP_SECRET_FILE`); the used codes and wrong-code counts
    /// are in the state file.
    guard: Option<totp::Guard>,
    /// Commands waiting for their code, by user id: the request and when it was asked.
    pending: HashMap<i64, (Command, u64)>,
    /// The actions running now.
    running: actions::Running,
    /// Logins waiting for approval (`approve-login`), served by their own thread.
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
    let dir = keeper
        .paths
        .state_dir()
        .map_err(|e| fail_closed(&keeper, e))?;
    let _pid = match PidLock::acquire(&keeper.paths) {
        Ok(p) => p,
        // Another daemon runs: its rules are its own.
        Err(e) if PidLock::holder(&keeper.paths).is_some() => return Err(e),
        Err(e) => return Err(fail_closed(&keeper, e)),
    };
    // The state lock is held from here to the end of the reconcile: a console command
    // writing the state right now keeps its temporary file (and any other live writer's
    // is kept by its lock or its age), and one that comes meanwhile (`status` right after
    // a restart) waits for the reconcile rather than seeing it half done.
    let start_lock = StateLock::acquire(&keeper.paths).map_err(|e| fail_closed(&keeper, e))?;
    // The state lock and the pid lock are held: no live writer of these can exist.
    dir.remove_temporaries(started_at, crate::store::state::GUARDED_FILES);
    alive(&keeper.paths, None);
    let fw = &keeper.cfg.firewall;
    if fw.kind == crate::store::config::FirewallKind::Auto && keeper.fw.kind() == Kind::Nftables {
        log::info!(
            "TGKNOCK_FIREWALL=auto: {} does not exist, so tgknock uses nftables ({}, {})",
            fw.iptables.display(),
            fw.nft.display(),
            keeper.fw.place()
        );
    }
    let mut poll_timeout = keeper.cfg.telegram.poll_timeout;
    if poll_timeout > DRIFT_MAX_GAP {
        log::info!(
            "TGKNOCK_POLL_TIMEOUT={poll_timeout}s: polling for {DRIFT_MAX_GAP} s, so that the rules are checked at least every minute"
        );
        poll_timeout = DRIFT_MAX_GAP;
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
    let wake = keeper.paths.wake();
    let _ = std::fs::remove_file(&wake);
    let socket = UnixDatagram::bind(&wake).map_err(|e| Error::file(&wake, "bind", e))?;

    keeper.fw.probe();
    keeper.fw.keep_reference();
    if let Some(why) = keeper.fw.deadline_problem() {
        log::warn!(
            "the kernel cannot keep deadlines ({why}): openings close and bans lift by tgknock's own expiry only, so not while it is stopped"
        );
    }
    let started = Instant::now();
    let now = crate::os::clock::now();
    let reconciled = keeper.change_locked(&start_lock, now, |_| Ok(()));
    drop(start_lock);
    let (_, out) = reconciled.map_err(|e| fail_closed(&keeper, e))?;
    for line in report::status_text(&keeper.cfg, &keeper.fw, &out).lines() {
        log::info!("{line}");
    }
    crate::os::notify::send("READY=1");
    log::info!(
        "firewall reconciled in {} ms; polling Telegram at {}",
        started.elapsed().as_millis(),
        keeper.cfg.telegram.api_url
    );
    {
        let k = Arc::clone(&keeper);
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
    }

    let approvals = Arc::new(crate::cli::approve_server::Approvals::new());
    crate::cli::approve_server::serve(
        &keeper.paths.approve(),
        keeper.cfg.clone(),
        api.clone(),
        Arc::clone(&approvals),
    );
    let backoff = Backoff::new(clock::wall().as_nanos() as u64 ^ u64::from(std::process::id()));
    let mut d = Daemon {
        keeper,
        api,
        bot_name: String::new(),
        offset: Offset::saved(&out.state),
        denied: Denied::default(),
        backoff,
        small_left: 0,
        commands_registered: false,
        chores_since: None,
        poll_timeout,
        skew: None,
        clock_notice: None,
        drift: DriftWatch::default(),
        guard: None,
        pending: HashMap::new(),
        running: actions::Running::default(),
        approvals,
    };
    if let Some(secret) = d.keeper.cfg.totp.clone() {
        d.guard = Some(totp::Guard::new(secret));
        log::info!(
            "second factor on: chat commands that change something (/open, /run, /ban, /unban) need a TOTP code"
        );
    }
    d.log_in()?;
    loop {
        d.poll_once();
    }
}

/// Whether the board's clock is far enough from Telegram's to say so: more than half of
/// `TGKNOCK_MAX_AGE` (at least 10 s).
pub(crate) fn clock_is_off(skew: i64, max_age: u64) -> bool {
    skew.unsigned_abs() > (max_age / 2).max(10)
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

impl Daemon {
    fn cfg(&self) -> &Config {
        &self.keeper.cfg
    }

    /// `getMe` until it answers (the network may come up after the rules are in place);
    /// a rejected token is fatal.
    fn log_in(&mut self) -> Result<()> {
        loop {
            match self.api.get_me() {
                Ok((me, server_time)) => {
                    self.backoff.reset();
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

    /// Records the skew between the board's clock and Telegram's (`Date` of an answer).
    fn note_clock(&mut self, server_time: Option<u64>, log_it: bool) {
        let Some(server) = server_time else { return };
        let local = crate::os::clock::now();
        let skew = local as i64 - server as i64;
        let max_age = self.cfg().limits.max_age;
        let big = clock_is_off(skew, max_age);
        let was_big = self.skew.is_some_and(|s| clock_is_off(s, max_age));
        self.skew = Some(skew);
        if big && !was_big && skew > 0 {
            // Set back later (NTP) while tgknock is not running to follow it, the board's
            // clock would make every deadline come that much later.
            self.clock_notice = Some(format!(
                "The board's clock ({}) is {} ahead of Telegram's ({}). Openings and bans end by the board's clock: when it is set back while tgknock runs, tgknock moves their deadlines back with it, but set back while tgknock is stopped (a reboot), they would last up to {} longer. Set the board's clock (NTP).",
                duration::utc_full(local),
                duration::human(skew.unsigned_abs()),
                duration::utc_full(server),
                duration::human(skew.unsigned_abs()),
            ));
        }
        if big && (log_it || !was_big) {
            log::warn!(
                "the system clock ({}) is {} {} Telegram's ({}); commands are judged by Telegram's clock, but set the board's (NTP): times shown in replies, and TLS, depend on it",
                duration::utc_full(local),
                duration::human(skew.unsigned_abs()),
                if skew > 0 { "ahead of" } else { "behind" },
                duration::utc_full(server)
            );
        } else if log_it {
            log::info!("clock: {}", duration::skew_text(skew));
        }
    }

    /// Tells the owners what they are to hear about the board's clock, if anything.
    fn tell_clock(&mut self) {
        let Some(text) = self.clock_notice.take() else {
            return;
        };
        for user in self.cfg().telegram.allowed_users.clone() {
            self.reply(user, &text);
        }
    }

    /// One long poll and whatever it brought, then a look at the rules.
    pub(crate) fn poll_once(&mut self) {
        let limit = if self.small_left > 0 { 1 } else { BATCH };
        let result = self
            .api
            .get_updates(self.offset.asking(), self.poll_timeout, limit);
        let received = Instant::now();
        if let Ok(answer) = &result {
            self.note_clock(answer.server_time, false);
        }
        alive(&self.keeper.paths, self.skew);
        match result {
            Ok(answer) => match answer
                .raw_result()
                .map_err(|e| e.to_string())
                .and_then(crate::chat::telegram::decode_updates)
            {
                Ok(items) => {
                    self.backoff.reset();
                    let clock = ServerClock {
                        date: answer.server_time,
                        received,
                    };
                    // Requests nobody waits for (the command menu, the strangers'
                    // summary) are made once a poll finds nothing waiting, so that
                    // while a queue is drained (a flood) only the allowed users' own
                    // commands cost a round trip; at most a minute late.
                    let drained = items.is_empty();
                    self.handle_batch(items, clock);
                    self.tell_clock();
                    let since = *self.chores_since.get_or_insert_with(Instant::now);
                    if !drained && since.elapsed() < CHORES_WAIT {
                        self.watch_rules();
                        return;
                    }
                    self.chores_since = None;
                    if !self.commands_registered {
                        self.commands_registered = true;
                        if let Err(e) = self.api.set_my_commands() {
                            log::warn!(
                                "setMyCommands failed ({e}); the menu of commands may be missing"
                            );
                        }
                    }
                }
                Err(m) => self.on_error(ApiError::Malformed(m)),
            },
            Err(e) => self.on_error(e),
        }
        self.flush_denied();
        self.watch_rules();
    }

    /// Compares the rules with the kernel (at most once a second) and puts back what
    /// another program removed. The owners hear of it once per episode; when the other
    /// program keeps at it, repairs are spaced out instead of fighting it, and they hear
    /// that too.
    fn watch_rules(&mut self) {
        let t = Instant::now();
        let w = &mut self.drift;
        if w.last_check.is_some_and(|c| t - c < DRIFT_MIN_GAP) {
            return;
        }
        if w.hold.is_some_and(|(_, until)| t < until) {
            return;
        }
        w.last_check = Some(t);
        if w.last_repair.is_some_and(|r| t - r > DRIFT_QUIET) {
            *w = DriftWatch {
                last_check: Some(t),
                ..DriftWatch::default()
            };
        }
        match self.keeper.repair(crate::os::clock::now()) {
            Ok(None) => self.drift.unreadable = false,
            Ok(Some(found)) => {
                self.drift.unreadable = false;
                self.repaired(&found, t);
            }
            Err(e) => {
                if !self.drift.unreadable {
                    log::warn!("could not check or repair the firewall rules: {e}");
                }
                self.drift.unreadable = true;
            }
        }
    }

    fn repaired(&mut self, found: &str, t: Instant) {
        let now = crate::os::clock::now();
        log::warn!(
            "another program changed the firewall rules tgknock keeps ({found}); put them back"
        );
        let w = &mut self.drift;
        w.repairs.retain(|r| t - *r < DRIFT_WINDOW);
        w.repairs.push_back(t);
        w.last_repair = Some(t);
        let mut messages = Vec::new();
        if !w.told {
            w.told = true;
            messages.push(format!(
                "At {} another program changed the firewall rules tgknock keeps ({found}). tgknock put them back.",
                duration::utc_short(now, now)
            ));
        }
        if w.repairs.len() >= DRIFT_LOOP {
            let gap = match w.hold {
                None => DRIFT_HOLD_FIRST,
                Some((g, _)) => (g * 2).min(DRIFT_HOLD_MAX),
            };
            w.hold = Some((gap, t + gap));
            log::warn!(
                "the rules were changed {} times in {}: repairing at most every {} from now on",
                w.repairs.len(),
                duration::human(DRIFT_WINDOW.as_secs()),
                duration::human(gap.as_secs())
            );
            if !w.told_loop {
                w.told_loop = true;
                messages.push(format!(
                    "Another program keeps changing tgknock's firewall rules ({} times in {}). Instead of fighting it, tgknock now puts them back at most every {} (longer if it goes on), so the gates may be open in between. Look for what does it: ufw or firewalld reloading, `systemctl reload nftables`, an iptables-restore in a cron job.",
                    w.repairs.len(),
                    duration::human(DRIFT_WINDOW.as_secs()),
                    duration::human(gap.as_secs())
                ));
            }
        }
        if messages.is_empty() {
            return;
        }
        let status = self
            .keeper
            .snapshot(now)
            .map(|o| report::status_text(self.cfg(), &self.keeper.fw, &o))
            .unwrap_or_default();
        let text = format!("{}\n\nNow:\n{status}", messages.join("\n\n"));
        for user in self.cfg().telegram.allowed_users.clone() {
            self.reply(user, &text);
        }
    }

    fn handle_batch(&mut self, items: Vec<Incoming>, clock: ServerClock) {
        self.offset.polled();
        let before = self.offset.next;
        // Updates below the offset handled without moving it (they are confirmed).
        let mut undated = false;
        let n = items.len();
        for item in items {
            match item {
                Incoming::Update(u) => {
                    let id = u.update_id;
                    if self.offset.below(id) {
                        // Only a message can be carried out without Telegram's say (a
                        // press needs its answer): only its date tells a repeat.
                        let date = u.message.as_ref().map(|m| m.date);
                        match self.offset.judge(date) {
                            Below::Repeat => {
                                // A server or proxy that sends it again must not make a
                                // command run twice.
                                log::warn!(
                                    "skipping update {id}, which was handled before (sent {}, not after the newest message carried out)",
                                    duration::utc_full(date.unwrap_or_default().max(0) as u64)
                                );
                                self.offset.confirm(id);
                                continue;
                            }
                            Below::Renumbered => {
                                log::info!(
                                    "update {id} is below the offset {} but newer than every message carried out: Telegram numbers updates afresh (after a week without any); going on from it",
                                    self.offset.next.unwrap_or_default(),
                                );
                                self.offset.rebase(id);
                            }
                            Below::Undated => {
                                log::debug!(
                                    "{} update {id} is below the offset and has no date: handled (a press is carried out only if Telegram takes its answer), the offset left as it is",
                                    u.kind()
                                );
                                self.handle_update(*u, clock);
                                self.offset.confirm(id);
                                undated = true;
                                continue;
                            }
                        }
                    }
                    self.handle_update(*u, clock);
                    self.offset.advance(id);
                }
                Incoming::Undecodable {
                    update_id: Some(id),
                    reason,
                } => {
                    log::warn!("skipping update {id}, which cannot be decoded: {reason}");
                    if self.offset.below(id) {
                        self.offset.confirm(id);
                        undated = true;
                    } else {
                        self.offset.advance(id);
                    }
                }
                Incoming::Undecodable {
                    update_id: None,
                    reason,
                } => log::warn!("skipping an update without a readable update_id: {reason}"),
            }
        }
        self.small_left = self.small_left.saturating_sub(n as u32);
        if n > 0 && self.offset.next == before && !undated {
            self.back_off(
                log::Level::Warn,
                &format!("{n} updates gave no usable update_id"),
            );
        }
        if let Some(m) = self.offset.unsaved() {
            match self.keeper.save_offset(m) {
                Ok(()) => self.offset.saved_at(m),
                Err(e) => log::error!("cannot save the update offset: {e}"),
            }
        }
    }

    fn on_error(&mut self, e: ApiError) {
        match &e {
            ApiError::Http {
                status: 429,
                retry_after: Some(secs),
                ..
            } => {
                let wait = Duration::from_secs((*secs).min(3600));
                log::warn!(
                    "Telegram asks to slow down (429); waiting {} s",
                    wait.as_secs()
                );
                self.pause(wait);
            }
            ApiError::Http { status: 429, .. } => {
                self.back_off(log::Level::Warn, "Telegram asks to slow down (429)")
            }
            ApiError::Http { status: 409, .. } => match self.api.webhook_url() {
                Ok(Some(url)) => {
                    let host = url.split('/').nth(2).unwrap_or("?").to_string();
                    log::warn!(
                        "a webhook is set for this bot (to {host}), so getUpdates fails with 409; tgknock polls, so it removes the webhook"
                    );
                    if let Err(e) = self.api.delete_webhook() {
                        self.back_off(log::Level::Warn, &format!("deleteWebhook failed: {e}"));
                    }
                }
                Ok(None) => self.back_off(
                    log::Level::Warn,
                    "another program is polling with this bot token (409 Conflict); only one can",
                ),
                Err(e2) => self.back_off(
                    log::Level::Warn,
                    &format!("409 Conflict, and getWebhookInfo failed ({e2})"),
                ),
            },
            ApiError::TooLarge if self.small_left == 0 => {
                log::warn!(
                    "an answer was larger than the limit; fetching updates one at a time for a while"
                );
                self.small_left = BATCH;
            }
            ApiError::TooLarge => match self.offset.asking() {
                Some(o) => {
                    log::error!("update {o} alone is larger than the limit; skipping it");
                    if self.offset.below(o) {
                        self.offset.confirm(o);
                    } else {
                        self.offset.advance(o);
                    }
                }
                None => self.back_off(log::Level::Error, "an oversized update blocks the queue"),
            },
            _ if e.is_token_rejected() => self.back_off(
                log::Level::Error,
                &format!("Telegram rejects the bot token now ({e}); was it revoked?"),
            ),
            _ => self.back_off(log::Level::Warn, &format!("getUpdates failed: {e}")),
        }
    }

    /// Logs why, then waits the next backoff step (1 s doubling to 60 s, with jitter).
    fn back_off(&mut self, level: log::Level, why: &str) {
        let wait = self.backoff.fail();
        log::log!(level, "{why}; retrying in {:.1} s", wait.as_secs_f64());
        self.pause(wait);
    }

    /// Sleeps `total`, staying visibly alive and keeping the rules in place every poll's
    /// length (Telegram may be unreachable for long: the rules are looked after anyway).
    fn pause(&mut self, total: Duration) {
        let slice = Duration::from_secs(self.poll_timeout);
        let end = Instant::now() + total;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(slice));
            alive(&self.keeper.paths, self.skew);
            self.watch_rules();
        }
    }

    fn reply(&self, chat: i64, text: &str) {
        if let Err(e) = self.api.send_message(chat, text) {
            log::warn!("could not send a reply to chat {chat}: {e}");
        }
    }

    fn flush_denied(&mut self) {
        if !self.denied.due() {
            return;
        }
        let text = self.denied.take_summary(crate::os::clock::now());
        log::info!("{}", text.replace('\n', "; "));
        if self.cfg().telegram.notify_denied {
            for user in self.cfg().telegram.allowed_users.clone() {
                self.reply(user, &text);
            }
        }
    }

    fn handle_update(&mut self, u: Update, clock: ServerClock) {
        let id = u.update_id;
        let kind = u.kind();
        let now = Now {
            telegram: clock.now(),
            board: crate::os::clock::now(),
        };
        // A press is the message its button stands for, from the presser: the same
        // decision, the same authorization, as typed.
        let (msg, via) = match (u.message, u.callback_query) {
            (Some(msg), _) => (msg, Via::Message),
            (None, Some(q)) if self.approvals.press(&self.api, self.cfg(), &q, now.board) => return,
            (None, Some(q)) => match self.accept_press(&q, now) {
                Some(msg) => {
                    let message_id = msg.message_id;
                    (msg, Via::Press { message_id })
                }
                None => return,
            },
            (None, None) => {
                log::debug!("ignoring {kind} update {id}");
                return;
            }
        };
        let action = decide(&msg, self.cfg(), &self.bot_name, now);
        let Some(from) = msg.from.clone() else {
            log::debug!("ignoring message {} without a sender", msg.message_id);
            return;
        };
        let chat = msg.chat.id;
        if !matches!(action, Action::Ignore(_) | Action::Stranger { .. }) {
            // A press's message is dated by the answer that carried it: only a typed
            // message's own date tells a repeat.
            // A date past Telegram's own clock (a faulty server) would make every later
            // message look like a repeat after the next renumbering: it counts as now.
            let date = msg.date.min(now.telegram as i64 + CARRIED_DATE_SLACK);
            self.offset.carried((via == Via::Message).then_some(date));
        }
        match action {
            Action::Ignore(Ignored::Forwarded) => log::info!(
                "ignoring a forwarded message from {}: a forward is never a command",
                from.describe()
            ),
            Action::Ignore(_) => {}
            Action::Stranger { tried: true } => {
                let first = self.denied.record(&from, now.board);
                let line = format!(
                    "ignored a command from stranger {} in chat {chat}",
                    from.describe()
                );
                if first {
                    log::info!("{line}");
                } else {
                    log::debug!("{line}");
                }
            }
            Action::Stranger { tried: false } => {
                log::debug!("ignored chatter from {}", from.describe())
            }
            Action::Refuse { text, log } => {
                log::info!("{log}");
                self.reply(chat, &text);
            }
            Action::Help => {
                let c = self.cfg();
                let mut text = command::usage(&c.gates, c.limits.open_for, c.limits.max_open_for);
                if c.totp.is_some() {
                    text.push_str(
                        "\n\nA second factor is on: /open, /run, /ban and /unban need the 6-digit code of your authenticator, last in the command (/open ssh 30m 492039, /run backup 492039, /ban 203.0.113.7 1d 492039), or sent when asked. Closing, /status and /help need none.",
                    );
                }
                if !c.actions.list.is_empty() {
                    text.push_str(&format!("\n\nActions (/run NAME): {}", c.actions.names()));
                }
                let out = self.keeper.snapshot(now.board).ok();
                let keyboard = buttons::keyboard(self.cfg(), out.as_ref(), true);
                self.panel(chat, via, &text, keyboard);
            }
            action @ (Action::NeedCode { .. }
            | Action::WithCode { .. }
            | Action::Code(_)
            | Action::Ban { .. }
            | Action::Unban { .. }) => self.defend(action, id, chat, &from, now),
            Action::Status => {
                let (text, keyboard) = match self.keeper.snapshot(now.board) {
                    Ok(out) => (
                        report::status_text(self.cfg(), &self.keeper.fw, &out),
                        buttons::keyboard(self.cfg(), Some(&out), false),
                    ),
                    Err(e) => (format!("Cannot read the state: {e}"), None),
                };
                self.panel(chat, via, &text, keyboard);
            }
            Action::Open { gate, opening } => {
                // The offset is saved with the change: a restart never runs it again.
                let next = self.offset.mark(id);
                let result = self.keeper.change(now.board, |st| {
                    st.open(&gate, opening)?;
                    next.write(st);
                    Ok(())
                });
                self.after_change(chat, &from, "open", &[gate], result, next, via);
            }
            Action::Close { gate } => {
                let next = self.offset.mark(id);
                let result = self.keeper.change(now.board, |st| {
                    st.close(gate.as_ref());
                    next.write(st);
                    Ok(())
                });
                let gates: Vec<GateName> = match gate {
                    Some(g) => vec![g],
                    None => self.cfg().gates.iter().map(|g| g.name.clone()).collect(),
                };
                self.after_change(chat, &from, "close", &gates, result, next, via);
            }
            Action::Run { name } => self.run_action(id, &from, chat, &name),
            Action::Actions => {
                let keyboard = buttons::keyboard(self.cfg(), None, true);
                let text = self.cfg().actions.listing();
                self.panel(chat, Via::Message, &text, keyboard);
            }
        }
    }

    /// Answers an allowed user's press and gives the message it stands for, or `None` when
    /// it is not to be carried out: its data is not a command of ours, or Telegram would
    /// not take the answer (the press waited too long while the board was offline, or it
    /// was answered before). A stranger's press is not answered: it costs no request (a
    /// flood of them must not hold up the allowed users' commands behind it), and its
    /// message goes on to be counted for the owners' summary, like a stranger's command.
    fn accept_press(&mut self, q: &CallbackQuery, now: Now) -> Option<Message> {
        let who = q.from.describe();
        let parsed = buttons::as_message(q, now.telegram);
        if !self.cfg().telegram.allowed_users.contains(&q.from.id) {
            return parsed
                .inspect_err(|why| log::debug!("ignoring a press from stranger {who}: {why}"))
                .ok();
        }
        let msg = match parsed {
            Ok(m) => m,
            Err(why) => {
                log::warn!("refusing a press from {who}: {why}");
                if let Err(e) = self
                    .api
                    .answer_press(&q.id, Some("This button is not one of tgknock's."))
                {
                    log::info!("could not answer the press from {who}: {e}");
                }
                return None;
            }
        };
        let data = msg.text.as_deref().unwrap_or("");
        match self.api.answer_press(&q.id, None) {
            Ok(()) => Some(msg),
            Err(e) if e.is_query_too_old() => {
                log::info!(
                    "not carrying out {data:?} pressed by {who}: Telegram no longer takes an answer to it ({e}); the press waited too long"
                );
                None
            }
            Err(e) => {
                log::warn!("not carrying out {data:?} pressed by {who}: answering it failed: {e}");
                None
            }
        }
    }

    /// Shows `text` with `keyboard`: a new message, or for a press the keyboard's own
    /// message, edited (a new message when it cannot be edited).
    fn panel(&self, chat: i64, via: Via, text: &str, keyboard: Option<serde_json::Value>) {
        if let Via::Press { message_id } = via {
            match self
                .api
                .edit_message(chat, message_id, text, keyboard.as_ref())
            {
                Ok(()) => return,
                Err(e) if e.is_not_modified() => return,
                Err(e) => log::info!(
                    "could not edit message {message_id} in chat {chat} ({e}); sending a new one"
                ),
            }
        }
        if let Err(e) = self.api.send_with_keyboard(chat, text, keyboard.as_ref()) {
            log::warn!("could not send a reply to chat {chat}: {e}");
        }
    }

    /// Starts the action `name` on a thread of its own (the poll goes on), unless a run of
    /// it is in progress; its result is sent to `chat` when it ends.
    fn run_action(&mut self, id: i64, from: &User, chat: i64, name: &str) {
        let Some(action) = self.cfg().actions.find(name).cloned() else {
            return;
        };
        let slot = match self.running.start(name) {
            Ok(s) => s,
            Err(since) => {
                log::info!("{} asked to run {name}, which is running", from.describe());
                self.reply(
                    chat,
                    &format!(
                        "{name} is running already (started {} ago); its result comes when it ends.",
                        duration::human(since.as_secs())
                    ),
                );
                return;
            }
        };
        // Saved before it starts: a crash never makes it run twice.
        let next = self.offset.mark(id);
        if let Err(e) = self.keeper.save_offset(next) {
            log::error!("not running {name}: cannot save the update offset: {e}");
            self.reply(chat, &format!("Not run: {e}"));
            return;
        }
        self.offset.saved_at(next);
        let who = from.describe();
        log::info!("{who} runs action {name}: {}", action.command_line());
        let api = self.api.clone();
        let timeout = self.cfg().actions.timeout;
        let started = std::thread::Builder::new()
            .name(format!("action {name}"))
            .spawn(move || {
                let run = actions::run(&action, Duration::from_secs(timeout));
                // Over: a press on the result may run it again.
                drop(slot);
                let text = actions::reply(&action.name, &run, timeout);
                log::info!(
                    "action {} for {who}: {}",
                    action.name,
                    text.lines().next().unwrap_or("")
                );
                if let Err(e) = api.send_message(chat, &text) {
                    log::warn!(
                        "could not send the result of {} to chat {chat}: {e}",
                        action.name
                    );
                }
            });
        if let Err(e) = started {
            log::error!("cannot start a thread for action {name}: {e}");
            self.reply(chat, &format!("Not run: cannot start a thread: {e}"));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn after_change(
        &mut self,
        chat: i64,
        from: &User,
        verb: &str,
        gates: &[GateName],
        result: Result<((), crate::firewall::keeper::Outcome)>,
        next: Mark,
        via: Via,
    ) {
        match result {
            Ok((_, out)) => {
                self.offset.saved_at(next);
                self.keeper.wake_daemon();
                let lines: Vec<String> = gates
                    .iter()
                    .filter_map(|g| self.cfg().gate(g.as_str()))
                    .map(|g| report::gate_line(g, &out))
                    .collect();
                for l in &lines {
                    log::info!("{} {verb}: {l}", from.describe());
                }
                let keyboard = buttons::keyboard(self.cfg(), Some(&out), false);
                // A press turns its keyboard's message into the whole verified state.
                let text = match via {
                    Via::Message => lines.join("\n"),
                    Via::Press { .. } => report::status_text(self.cfg(), &self.keeper.fw, &out),
                };
                self.panel(chat, via, &text, keyboard);
            }
            Err(e) => {
                let names: Vec<&str> = gates.iter().map(GateName::as_str).collect();
                log::error!(
                    "{} asked to {verb} {}: {e}",
                    from.describe(),
                    names.join(", ")
                );
                let snapshot = self.keeper.snapshot(crate::os::clock::now()).ok();
                let now_text = snapshot
                    .as_ref()
                    .map(|o| report::status_text(self.cfg(), &self.keeper.fw, o))
                    .unwrap_or_default();
                let keyboard = buttons::keyboard(self.cfg(), snapshot.as_ref(), false);
                self.panel(
                    chat,
                    via,
                    &format!("Not done: {e}\n\nNow:\n{now_text}"),
                    keyboard,
                );
            }
        }
    }
}

/// Issue 12's actions: the second factor's asks and checks, and bans.
impl Daemon {
    fn defend(&mut self, action: Action, id: i64, chat: i64, from: &User, now: Now) {
        match action {
            Action::NeedCode { request } => {
                // Codes are judged by Telegram's clock, like the phone that shows them
                // (a board without a real-time clock may be far off).
                let locked = match self.keeper.load_state() {
                    Ok(st) => totp::locked_until(&st.totp_wrong, from.id, now.telegram),
                    Err(e) => {
                        log::error!("cannot read the state for the second factor: {e}");
                        self.reply(chat, &format!("Not done: {e}"));
                        return;
                    }
                };
                if let Some(until) = locked {
                    let (text, _) = crate::chat::decide::code_refusal(
                        totp::Check::Locked { until },
                        &from.describe(),
                        now.telegram,
                    )
                    .unwrap_or_default();
                    self.reply(chat, &text);
                    return;
                }
                if let Command::Ban { addr, .. } = &request
                    && self.refuse_ban(chat, from, addr)
                {
                    return;
                }
                let what = crate::chat::decide::what(&request);
                self.pending.insert(from.id, (request, now.board));
                log::info!("{} asked to {what}; waiting for the code", from.describe());
                self.reply(
                    chat,
                    &format!(
                        "A code is needed to {what}: send the 6 digits your authenticator shows, within {}.",
                        duration::human(totp::ASK_SECS)
                    ),
                );
            }
            // A wrong code leaves the request waiting (until it is too late); a right
            // one, or a late one, ends it.
            Action::Code(code) => match self.pending.get(&from.id).cloned() {
                None => self.reply(
                    chat,
                    "Nothing is waiting for a code: send the command first, or the code with it (/open ssh 492039, /run backup 492039).",
                ),
                Some((request, asked_at)) => {
                    if now.board > asked_at + totp::ASK_SECS {
                        self.pending.remove(&from.id);
                    }
                    let next = crate::chat::decide::complete(
                        &request,
                        asked_at,
                        code,
                        from,
                        self.cfg(),
                        now,
                    );
                    match next {
                        Action::Refuse { text, log } => {
                            log::info!("{log}");
                            self.reply(chat, &text);
                        }
                        other => self.defend(other, id, chat, from, now),
                    }
                }
            },
            Action::WithCode { action, code } => {
                let Some(guard) = self.guard.as_ref() else {
                    return;
                };
                if let Action::Ban { ban } = action.as_ref()
                    && self.refuse_ban(chat, from, &ban.addr)
                {
                    return;
                }
                // The code's fate is saved before anything is done: a restart neither
                // takes a used code again nor forgets a wrong one. A wrong code is all
                // there is to its update, so the offset moves with it.
                let next = self.offset.mark(id);
                let checked = self.keeper.record(|st| {
                    let ledger = totp::Ledger {
                        used: &mut st.totp_used,
                        wrong: &mut st.totp_wrong,
                    };
                    let check = guard.check(ledger, from.id, &code, now.telegram);
                    if !matches!(check, totp::Check::Accepted(_)) {
                        next.write(st);
                    }
                    check
                });
                let check = match checked {
                    Ok(c) => c,
                    Err(e) => {
                        log::error!(
                            "not carrying out a command from {}: cannot record its code: {e}",
                            from.describe()
                        );
                        self.reply(chat, &format!("Not done: {e}"));
                        return;
                    }
                };
                if let Some((text, owners)) =
                    crate::chat::decide::code_refusal(check, &from.describe(), now.telegram)
                {
                    self.offset.saved_at(next);
                    log::warn!("{} sent a code that was not accepted: {check:?}", from.describe());
                    self.reply(chat, &text);
                    if let Some(owners) = owners {
                        for user in self.cfg().telegram.allowed_users.clone() {
                            self.reply(user, &owners);
                        }
                    }
                    return;
                }
                self.pending.remove(&from.id);
                match *action {
                    Action::Open { gate, opening } => {
                        let result = self.keeper.change(now.board, |st| {
                            st.open(&gate, opening)?;
                            next.write(st);
                            Ok(())
                        });
                        self.after_change(chat, from, "open", &[gate], result, next, Via::Message);
                    }
                    Action::Run { name } => self.run_action(id, from, chat, &name),
                    other @ (Action::Ban { .. } | Action::Unban { .. }) => {
                        self.defend(other, id, chat, from, now)
                    }
                    other => log::error!("a code came with {other:?}, which needs none"),
                }
            }
            Action::Ban { ban } => {
                let addr = ban.addr;
                if self.refuse_ban(chat, from, &addr) {
                    return;
                }
                let next = self.offset.mark(id);
                let result = self.keeper.change(now.board, |st| {
                    st.ban(ban)?;
                    next.write(st);
                    Ok(())
                });
                self.after_ban(chat, from, "ban", &addr, result, next);
            }
            Action::Unban { addr } => {
                let next = self.offset.mark(id);
                let result = self.keeper.change(now.board, |st| {
                    st.unban(&addr);
                    next.write(st);
                    Ok(())
                });
                self.after_ban(chat, from, "unban", &addr, result, next);
            }
            _ => {}
        }
    }

    /// Whether `addr` may not be banned; if so, the sender was told why (before a code is
    /// asked for or used up).
    fn refuse_ban(&self, chat: i64, from: &User, addr: &crate::base::addr::Cidr) -> bool {
        let Some(why) = self.keeper.ban_refusal(addr) else {
            return false;
        };
        log::info!("{} asked to ban {addr}: refused, {why}", from.describe());
        self.reply(chat, &format!("Refused: {why}."));
        true
    }

    fn after_ban(
        &mut self,
        chat: i64,
        from: &User,
        verb: &str,
        addr: &crate::base::addr::Cidr,
        result: Result<((), crate::firewall::keeper::Outcome)>,
        next: Mark,
    ) {
        match result {
            Ok((_, out)) => {
                self.offset.saved_at(next);
                self.keeper.wake_daemon();
                let line = report::ban_line(addr, &out);
                log::info!("{} {verb}: {line}", from.describe());
                self.reply(chat, &line);
            }
            Err(e) => {
                log::error!("{} asked to {verb} {addr}: {e}", from.describe());
                self.reply(chat, &format!("Not done: {e}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_minute_with_jitter() {
        let mut b = Backoff::new(12345);
        let waits: Vec<Duration> = (0..9).map(|_| b.fail()).collect();
        let bases = [1, 2, 4, 8, 16, 32, 60, 60, 60];
        for (w, base) in waits.iter().zip(bases) {
            let base = Duration::from_secs(base);
            assert!(*w <= base && *w >= base * 3 / 4, "{w:?} for {base:?}");
        }
        b.reset();
        assert!(b.fail() <= Duration::from_secs(1));
    }

    #[test]
    fn an_update_below_the_offset_is_judged_by_its_date() {
        let st = State {
            offset: Some(500),
            newest_carried: Some(1_000),
            ..State::default()
        };
        let mut o = Offset::saved(&st);
        assert!(o.below(10) && !o.below(500));
        assert_eq!(o.judge(Some(999)), Below::Repeat);
        assert_eq!(o.judge(Some(1_000)), Below::Repeat, "the same second");
        assert_eq!(o.judge(Some(1_001)), Below::Renumbered);
        assert_eq!(o.judge(None), Below::Undated);
        // An undated one is confirmed by the next poll, the offset left as it is.
        o.confirm(10);
        assert_eq!((o.asking(), o.next), (Some(11), Some(500)));
        o.polled();
        assert_eq!(o.asking(), Some(500));
        // The new numbering: the offset goes down, and is saved once carried out.
        o.rebase(20);
        o.carried(Some(700_000));
        let m = o.mark(20);
        assert_eq!(
            m,
            Mark {
                offset: 21,
                newest: Some(700_000)
            }
        );
        o.advance(20);
        assert_eq!(o.unsaved(), Some(m));
        o.saved_at(m);
        assert_eq!(o.unsaved(), None);
        assert_eq!(o.judge(Some(700_000)), Below::Repeat);
        // A press carried out moves no date.
        o.carried(None);
        assert_eq!(o.newest, Some(700_000));
        // A file from before the date was saved: a message below is not a repeat.
        let old = Offset::saved(&State {
            offset: Some(500),
            ..State::default()
        });
        assert_eq!(old.judge(Some(1)), Below::Renumbered);
    }

    fn user(id: i64) -> User {
        User {
            id,
            is_bot: false,
            first_name: format!("u{id}"),
            last_name: None,
            username: None,
        }
    }

    mod expiry {
        use super::super::Expiry;
        use crate::firewall::keeper::Keeper;
        use crate::firewall::keeper::tests::{NOW, Scratch, open_until, ssh};
        use crate::os::clock::fake::FakeAlarm;
        use crate::store::state::{Actor, Opening};
        use std::sync::Arc;
        use std::time::Duration;

        fn until(k: &Keeper) -> Vec<Option<u64>> {
            k.load_state()
                .unwrap()
                .openings_of(&ssh())
                .iter()
                .map(|o| o.until)
                .collect()
        }

        /// A keeper on `s` and an expiry whose alarm's clocks read `at`.
        fn expiry_at(s: &Scratch, at: u64) -> (Arc<Keeper>, FakeAlarm, Expiry<FakeAlarm>) {
            let k = Arc::new(s.keeper());
            let alarm = FakeAlarm::at(at);
            let e = Expiry::new(Arc::clone(&k), alarm.clone());
            (k, alarm, e)
        }

        fn at(secs: u64) -> Option<Duration> {
            Some(Duration::from_secs(secs) + Duration::from_millis(20))
        }

        #[test]
        fn a_step_forward_past_a_deadline_closes_it_at_once() {
            let s = Scratch::new();
            let (k, alarm, mut e) = expiry_at(&s, NOW + 1);
            open_until(&k, NOW, NOW + 600);
            e.turn();
            assert_eq!(alarm.armed(), vec![at(NOW + 600)], "asleep to the deadline");
            assert_eq!(until(&k), vec![Some(NOW + 600)]);
            // NTP sets the clock two hours on while it sleeps: at once, not in 10 min.
            alarm.during_next_sleep(|a| a.step(7200));
            e.turn();
            assert!(until(&k).is_empty(), "closed");
            assert!(!s.ssh_passes(), "{}", s.rules());
            e.turn();
            assert_eq!(
                alarm.armed().last(),
                Some(&None),
                "nothing left to wait for"
            );
        }

        #[test]
        fn a_step_back_moves_the_deadlines_planned_before_it() {
            let s = Scratch::new();
            let (k, alarm, mut e) = expiry_at(&s, NOW + 1);
            open_until(&k, NOW, NOW + 600);
            e.turn();
            let k2 = Arc::clone(&k);
            alarm.during_next_sleep(move |a| {
                a.step(-3600);
                // Opened after the step, by the clock as it is now: stays.
                k2.change(NOW + 1 - 3600, |st| {
                    st.open(
                        &ssh(),
                        Opening {
                            from: Some("192.0.2.1".parse().unwrap()),
                            until: Some(NOW + 1 - 3600 + 300),
                            by: Actor::Console,
                        },
                    )
                })
                .unwrap();
            });
            e.turn();
            assert_eq!(
                until(&k),
                vec![Some(NOW + 600 - 3600), Some(NOW + 1 - 3600 + 300)],
                "the old deadline moved back by the step, the new one stays"
            );
            let stop = crate::firewall::iptables::datestop(NOW + 600 - 3600);
            assert!(s.rules().contains(&stop), "{}", s.rules());
            e.turn();
            assert_eq!(alarm.armed().last(), Some(&at(NOW + 1 - 3600 + 300)));
            // Time passes normally after: nothing moves.
            alarm.during_next_sleep(|a| a.pass(300));
            e.turn();
            assert_eq!(until(&k), vec![Some(NOW + 600 - 3600)]);
        }

        /// Found by review: steps under a second were each dropped whole, so a clock set
        /// back 0.9 s at a time (NTP corrections, or someone spoofing NTP) stretched
        /// openings without end. What is under a second now adds up.
        #[test]
        fn steps_back_under_a_second_add_up() {
            let s = Scratch::new();
            let (k, alarm, mut e) = expiry_at(&s, NOW + 1);
            open_until(&k, NOW, NOW + 600);
            e.turn();
            for _ in 0..10 {
                alarm.during_next_sleep(|a| a.step_millis(-900));
                e.turn();
            }
            assert_eq!(
                until(&k),
                vec![Some(NOW + 600 - 9)],
                "ten steps back of 0.9 s move the deadline back 9 s"
            );
        }

        #[test]
        fn an_expiry_that_fails_is_retried_a_second_later_not_at_once() {
            let s = Scratch::new();
            let (k, alarm, mut e) = expiry_at(&s, NOW + 61);
            open_until(&k, NOW, NOW + 60);
            std::fs::write(s.dir.join("fw/fail-iptables-restore"), "4 xtables lock\n").unwrap();
            e.turn();
            assert_eq!(until(&k), vec![Some(NOW + 60)], "the change failed");
            e.turn();
            assert_eq!(
                alarm.armed().last(),
                Some(&Some(std::time::Duration::from_secs(NOW + 62))),
                "the retry sleeps a second, not to the deadline that is past (a busy loop)"
            );
            std::fs::remove_file(s.dir.join("fw/fail-iptables-restore")).unwrap();
            alarm.during_next_sleep(|a| a.pass(1));
            e.turn();
            assert!(until(&k).is_empty(), "closed once the tool works again");
        }

        #[test]
        fn a_deadline_reached_in_sleep_closes_and_a_wake_replans() {
            let s = Scratch::new();
            let (k, alarm, mut e) = expiry_at(&s, NOW);
            e.turn();
            assert_eq!(alarm.armed(), vec![None]);
            open_until(&k, NOW, NOW + 60);
            e.turn();
            assert_eq!(alarm.armed().last(), Some(&at(NOW + 60)));
            alarm.during_next_sleep(|a| a.pass(60));
            e.turn();
            assert!(until(&k).is_empty());
        }
    }

    #[test]
    fn denied_summary_counts_and_throttles() {
        let mut d = Denied::default();
        assert!(!d.due());
        assert!(d.record(&user(1), 100));
        assert!(!d.record(&user(1), 100));
        for i in 2..30 {
            d.record(&user(i), 100);
        }
        assert!(d.due());
        let text = d.take_summary(100);
        assert!(
            text.starts_with("Ignored 30 commands from 29 strangers"),
            "{text}"
        );
        assert!(text.contains("1 (u1) ×2"));
        assert!(text.contains("… and 9 more"));
        d.record(&user(5), 200);
        assert!(!d.due(), "at most one summary every ten minutes");
    }
}
