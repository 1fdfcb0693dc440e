//! Other programs changing the rules tgknock keeps: a watcher thread hears of a change from
//! the kernel as it happens (nf_tables' notifications, a fingerprint of legacy xtables
//! every second: [`Watcher`]) and the rules are compared and put back at once; where the
//! kernel cannot tell (a tool this process cannot see into), they are compared after
//! every poll. The owners hear of it once per episode, and when the other program keeps
//! at it, repairs are spaced out instead of fighting it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Daemon, tell_owners};
use crate::base::duration;
use crate::chat::bot::Bot;
use crate::chat::report;
use crate::firewall::keeper::Keeper;
use crate::firewall::watch::Watcher;

/// After a poll, the rules are compared with the kernel at most this often (and at least
/// once per poll, whose length is capped at [`DRIFT_MAX_GAP`])…
const DRIFT_MIN_GAP: Duration = Duration::from_secs(1);
/// … and at most this often when the watcher heard of a change (it has waited for the
/// burst to end already).
const WATCH_MIN_GAP: Duration = Duration::from_millis(200);
/// Repairs this close together are one episode of the same program's work (a script's
/// `iptables -F` and, a moment later, its `ip6tables -F`): counted once toward a loop.
/// Only the watcher looks this soon after a look ([`DRIFT_MIN_GAP`]).
const DRIFT_SAME_EPISODE: Duration = Duration::from_secs(1);
/// The longest time between two checks of the rules, and so the longest poll.
pub(super) const DRIFT_MAX_GAP: u64 = 60;
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
pub(super) struct DriftWatch {
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

impl DriftWatch {
    /// Whether the rules are to be looked at, at `t`; if so, the look is counted.
    fn check_due(&mut self, t: Instant, gap: Duration) -> bool {
        if self.last_check.is_some_and(|c| t - c < gap) {
            return false;
        }
        if self.hold.is_some_and(|(_, until)| t < until) {
            return false;
        }
        self.last_check = Some(t);
        if self.last_repair.is_some_and(|r| t - r > DRIFT_QUIET) {
            *self = DriftWatch {
                last_check: Some(t),
                ..DriftWatch::default()
            };
        }
        true
    }

    /// How long until a look is due at `t` (at least a few ms, so a waiting loop sleeps).
    fn until_due(&self, t: Instant) -> Duration {
        let mut due = t;
        if let Some(c) = self.last_check {
            due = due.max(c + WATCH_MIN_GAP);
        }
        if let Some((_, until)) = self.hold {
            due = due.max(until);
        }
        (due - t).max(Duration::from_millis(10))
    }

    /// A repair of what another program changed (`found`) at `t` (`now` by the board's
    /// clock): what the owners are to hear of it, if anything.
    fn repaired(&mut self, found: &str, t: Instant, now: u64) -> Vec<String> {
        log::warn!(
            "another program changed the firewall rules tgknock keeps ({found}); put them back"
        );
        self.repairs.retain(|r| t - *r < DRIFT_WINDOW);
        // Measured from the episode's first repair, so a fight of repairs under a second
        // apart is counted toward a loop too.
        if self
            .repairs
            .back()
            .is_none_or(|r| t - *r >= DRIFT_SAME_EPISODE)
        {
            self.repairs.push_back(t);
        }
        self.last_repair = Some(t);
        let mut messages = Vec::new();
        if !self.told {
            self.told = true;
            messages.push(format!(
                "At {} another program changed the firewall rules tgknock keeps ({found}). tgknock put them back.",
                duration::utc_short(now, now)
            ));
        }
        if self.repairs.len() < DRIFT_LOOP {
            return messages;
        }
        let gap = match self.hold {
            None => DRIFT_HOLD_FIRST,
            Some((g, _)) => (g * 2).min(DRIFT_HOLD_MAX),
        };
        self.hold = Some((gap, t + gap));
        log::warn!(
            "the rules were changed {} times in {}: repairing at most every {} from now on",
            self.repairs.len(),
            duration::human(DRIFT_WINDOW.as_secs()),
            duration::human(gap.as_secs())
        );
        if !self.told_loop {
            self.told_loop = true;
            messages.push(format!(
                "Another program keeps changing tgknock's firewall rules ({} times in {}). Instead of fighting it, tgknock now puts them back at most every {} (longer if it goes on), so the gates may be open in between. Look for what does it: ufw or firewalld reloading, `systemctl reload nftables`, an iptables-restore in a cron job.",
                self.repairs.len(),
                duration::human(DRIFT_WINDOW.as_secs()),
                duration::human(gap.as_secs())
            ));
        }
        messages
    }
}

/// What the daemon does about other programs changing its rules, shared by the poll loop
/// and the watcher thread.
pub(super) struct Drift {
    keeper: Arc<Keeper>,
    api: Arc<dyn Bot>,
    watch: Mutex<DriftWatch>,
    /// A watcher thread notices changes as they happen: the poll loop does not look.
    watching: AtomicBool,
}

/// After a change is noticed, the watcher waits this long for the rest of a burst (a
/// script's `iptables -F; iptables -X; ip6tables -F; …`) before it looks…
const BURST_QUIET: Duration = Duration::from_millis(100);
/// … but never longer than this.
const BURST_MAX: Duration = Duration::from_millis(500);
/// With nothing noticed, the watcher looks this often anyway (its only other wake-ups).
const WATCH_IDLE: Duration = Duration::from_secs(3600);
/// A broken watch is started again after this long.
const WATCH_RESTART: Duration = Duration::from_secs(60);

/// What a look came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Look {
    /// Too soon after the last, or repairs are held off.
    NotDue,
    Done,
    /// The rules could not be read or put back.
    Failed,
}

impl Drift {
    pub(super) fn new(keeper: Arc<Keeper>, api: Arc<dyn Bot>) -> Drift {
        Drift {
            keeper,
            api,
            watch: Mutex::new(DriftWatch::default()),
            watching: AtomicBool::new(false),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, DriftWatch> {
        self.watch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After a poll: looks at the rules unless a watcher thread sees every change anyway.
    pub(super) fn after_poll(&self) {
        if !self.watching.load(Ordering::Relaxed) {
            self.look(DRIFT_MIN_GAP);
        }
    }

    /// Subscribes to what the kernel can tell of changes to the rules, before they are
    /// put in place (nf_tables then hears tgknock's own first change, which confirms it).
    pub(super) fn subscribe(keeper: &Keeper) -> Option<Watcher> {
        match Watcher::subscribe(keeper.fw.watched()) {
            Ok(w) => Some(w),
            Err(why) => {
                log::info!(
                    "drift: the rules are compared with the kernel after every poll ({why})"
                );
                None
            }
        }
    }

    /// Starts the watcher thread once the rules are in place; until the watch is known to
    /// see the kernel tgknock's tools write to, the poll loop looks after every poll too.
    pub(super) fn spawn_watcher(self: &Arc<Drift>, watcher: Option<Watcher>) {
        let Some(mut watcher) = watcher else { return };
        if let Err(why) = watcher.ready() {
            log::info!("drift: the rules are compared with the kernel after every poll ({why})");
            return;
        }
        if !watcher.confirmed() {
            log::info!(
                "drift: listening to {}; until they tell of tgknock's own change, the rules are also compared with the kernel after every poll",
                watcher.how()
            );
        }
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("drift".into())
            .spawn(move || me.watch_loop(watcher));
        if let Err(e) = spawned {
            log::warn!(
                "drift: cannot start the watcher ({e}): the rules are compared with the kernel after every poll"
            );
        }
    }

    /// Whether the watch sees every change now: the poll loop stops looking then.
    fn confirm(&self, w: &Watcher) {
        let was = self.watching.swap(w.confirmed(), Ordering::Relaxed);
        if w.confirmed() && !was {
            log::info!(
                "drift: other programs' changes to the rules are noticed through {}",
                w.how()
            );
        }
    }

    /// The watcher thread: waits for a change to what tgknock keeps, lets a burst of
    /// changes end, and looks (not while repairs are held off). It looks once at start
    /// (a change between the reconcile and the subscription), again after a look that
    /// failed (a second later), and once an hour whatever happens. When the watch breaks,
    /// the poll loop looks after every poll, and the watch is started again a minute later.
    fn watch_loop(&self, mut w: Watcher) {
        let mut dirty = true;
        // When to look without news: an hour after the last look.
        let mut backstop = Instant::now() + WATCH_IDLE;
        loop {
            let timeout = if dirty {
                self.state().until_due(Instant::now())
            } else {
                backstop.saturating_duration_since(Instant::now())
            };
            let got = w.wait(timeout);
            self.confirm(&w);
            match got {
                Ok(true) => {
                    dirty = true;
                    let end = Instant::now() + BURST_MAX;
                    while w.notifies()
                        && Instant::now() < end
                        && w.wait(BURST_QUIET.min(end.saturating_duration_since(Instant::now())))
                            .unwrap_or(false)
                    {}
                }
                // An hour without news: look anyway.
                Ok(false) if !dirty && Instant::now() >= backstop => dirty = true,
                // Legacy xtables: this second's fingerprint is last second's. No look.
                Ok(false) if !dirty => continue,
                Ok(false) => {}
                Err(e) => {
                    log::warn!(
                        "drift: the watch of the rules broke ({e}): they are compared with the kernel after every poll until it is back"
                    );
                    self.watching.store(false, Ordering::Relaxed);
                    w = self.restart();
                    dirty = true;
                    continue;
                }
            }
            match self.look(WATCH_MIN_GAP) {
                Look::Done => {
                    dirty = false;
                    backstop = Instant::now() + WATCH_IDLE;
                }
                Look::NotDue => {}
                // Tried again in a second (`until_due` counts from this look).
                Look::Failed => std::thread::sleep(DRIFT_MIN_GAP),
            }
        }
    }

    /// Starts the watch again, a minute after it broke, until it is back.
    fn restart(&self) -> Watcher {
        loop {
            std::thread::sleep(WATCH_RESTART);
            match Watcher::start(self.keeper.fw.watched()) {
                Ok(w) => {
                    log::info!("drift: the watch of the rules is back");
                    self.confirm(&w);
                    return w;
                }
                Err(why) => log::debug!("drift: the watch cannot start yet: {why}"),
            }
        }
    }

    /// Compares the rules with the kernel (at most once a second) and puts back what
    /// another program removed; whether it looked. The owners hear of it once per episode;
    /// when the other program keeps at it, repairs are spaced out instead of fighting it,
    /// and they hear that too.
    pub(super) fn look(&self, gap: Duration) -> Look {
        let mut watch = self.state();
        let t = Instant::now();
        if !watch.check_due(t, gap) {
            return Look::NotDue;
        }
        match self.keeper.repair(crate::os::clock::now()) {
            Ok(None) => watch.unreadable = false,
            Ok(Some(found)) => {
                watch.unreadable = false;
                let now = crate::os::clock::now();
                let messages = watch.repaired(&found, t, now);
                drop(watch);
                self.tell_repaired(&messages, now);
            }
            Err(e) => {
                if !watch.unreadable {
                    log::warn!("could not check or repair the firewall rules: {e}");
                }
                watch.unreadable = true;
                return Look::Failed;
            }
        }
        Look::Done
    }

    /// Tells the owners `messages` about the repairs, with the state as it is now.
    fn tell_repaired(&self, messages: &[String], now: u64) {
        if messages.is_empty() {
            return;
        }
        let cfg = &self.keeper.cfg;
        let status = self
            .keeper
            .snapshot(now)
            .map(|o| report::status_text(cfg, &self.keeper.fw, &o))
            .unwrap_or_default();
        let text = format!("{}\n\nNow:\n{status}", messages.join("\n\n"));
        // From a thread of its own: Telegram being slow must not hold up the next repair.
        let (api, cfg) = (Arc::clone(&self.api), Arc::clone(&self.keeper));
        let told = std::thread::Builder::new()
            .name("drift-tell".into())
            .spawn(move || tell_owners(&*api, &cfg.cfg, &text));
        if let Err(e) = told {
            log::warn!("drift: cannot tell the owners: {e}");
        }
    }
}

impl Daemon {
    /// After a poll: the rules are compared with the kernel, unless the watcher sees every
    /// change as it happens.
    pub(super) fn watch_rules(&mut self) {
        self.drift.after_poll();
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::TestDaemon;
    use super::*;
    use crate::testkit::{FakeBot, OWNER, Sent};

    #[test]
    fn a_repair_is_news_once_and_a_loop_is_held_off() {
        let mut w = DriftWatch::default();
        let t0 = Instant::now();
        let g = DRIFT_MIN_GAP;
        assert!(w.check_due(t0, g));
        assert!(
            !w.check_due(t0 + Duration::from_millis(500), g),
            "once a second"
        );
        let first = w.repaired("a rule is missing", t0, 1_000);
        assert_eq!(first.len(), 1, "{first:?}");
        assert!(first[0].contains("(a rule is missing). tgknock put them back."));
        let t1 = t0 + Duration::from_secs(10);
        assert!(w.repaired("again", t1, 1_010).is_empty(), "told once");
        let t2 = t0 + Duration::from_secs(20);
        let looped = w.repaired("again", t2, 1_020);
        assert_eq!(looped.len(), 1, "{looped:?}");
        assert!(looped[0].contains("3 times in 10 min") && looped[0].contains("every 1 min"));
        assert!(
            !w.check_due(t2 + Duration::from_secs(59), g),
            "held a minute"
        );
        assert!(w.check_due(t2 + Duration::from_secs(60), g));
        let t3 = t2 + Duration::from_secs(60);
        assert!(
            w.repaired("again", t3, 1_080).is_empty(),
            "the loop told once"
        );
        assert_eq!(
            w.hold.map(|h| h.0),
            Some(Duration::from_secs(120)),
            "doubled"
        );
        // Quiet for half an hour: the next change is news again.
        let later = t3 + DRIFT_QUIET + Duration::from_secs(1);
        assert!(w.check_due(later, g));
        assert_eq!(w.repaired("back", later, 3_000).len(), 1);
    }

    #[test]
    fn repairs_a_moment_apart_are_one_episode_of_a_loop() {
        let mut w = DriftWatch::default();
        let t0 = Instant::now();
        // A script's `iptables -F`, then its `ip6tables -F` after the first repair.
        assert_eq!(w.repaired("IPv4", t0, 1_000).len(), 1);
        let t1 = t0 + Duration::from_millis(300);
        assert!(w.repaired("IPv6", t1, 1_000).is_empty());
        let t2 = t0 + Duration::from_secs(60);
        assert!(w.repaired("again", t2, 1_060).is_empty(), "two of three");
        assert!(w.hold.is_none(), "no loop yet");
        let t3 = t0 + Duration::from_secs(120);
        assert_eq!(w.repaired("again", t3, 1_120).len(), 1, "the loop");
        assert!(w.hold.is_some());
    }

    #[test]
    fn a_fight_of_repairs_under_a_second_apart_is_held_off() {
        let mut w = DriftWatch::default();
        let t0 = Instant::now();
        for k in 0..100u32 {
            let t = t0 + Duration::from_millis(700) * k;
            let _ = w.repaired("again", t, 1_000);
            if w.hold.is_some() {
                assert!(k < 10, "held after {k} repairs");
                return;
            }
        }
        panic!("100 repairs 700 ms apart were never held off");
    }

    #[test]
    fn rules_flushed_by_another_program_are_put_back_and_told() {
        let bot = FakeBot::new();
        let mut t = TestDaemon::new(&bot, &[]);
        t.d.watch_rules();
        assert!(bot.sent().is_empty(), "nothing changed: {:?}", bot.sent());
        t.scratch.flush();
        t.d.drift.state().last_check = None;
        t.d.watch_rules();
        // The owners are told from a thread of its own.
        let end = Instant::now() + Duration::from_secs(10);
        while bot.sent().is_empty() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        let sent = bot.sent();
        let [Sent::Message { chat, text }] = sent.as_slice() else {
            panic!("{sent:?}")
        };
        assert_eq!(*chat, OWNER);
        assert!(
            text.contains("another program changed the firewall rules") && text.contains("Now:\n"),
            "{text}"
        );
        assert!(
            t.scratch.rules().contains("TGKNOCK"),
            "{}",
            t.scratch.rules()
        );
    }
}
