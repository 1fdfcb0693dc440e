//! Other programs changing the rules tgknock keeps: the rules are compared with the kernel
//! at least once a poll and put back; the owners hear of it once per episode, and when the
//! other program keeps at it, repairs are spaced out instead of fighting it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Daemon, tell_owners};
use crate::base::duration;
use crate::chat::report;

/// The rules are compared with the kernel at most this often (and at least once per poll,
/// whose length is capped at [`DRIFT_MAX_GAP`]).
const DRIFT_MIN_GAP: Duration = Duration::from_secs(1);
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
    fn check_due(&mut self, t: Instant) -> bool {
        if self.last_check.is_some_and(|c| t - c < DRIFT_MIN_GAP) {
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

    /// A repair of what another program changed (`found`) at `t` (`now` by the board's
    /// clock): what the owners are to hear of it, if anything.
    fn repaired(&mut self, found: &str, t: Instant, now: u64) -> Vec<String> {
        log::warn!(
            "another program changed the firewall rules tgknock keeps ({found}); put them back"
        );
        self.repairs.retain(|r| t - *r < DRIFT_WINDOW);
        self.repairs.push_back(t);
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

impl Daemon {
    /// Compares the rules with the kernel (at most once a second) and puts back what
    /// another program removed. The owners hear of it once per episode; when the other
    /// program keeps at it, repairs are spaced out instead of fighting it, and they hear
    /// that too.
    pub(super) fn watch_rules(&mut self) {
        let t = Instant::now();
        if !self.drift.check_due(t) {
            return;
        }
        match self.keeper.repair(crate::os::clock::now()) {
            Ok(None) => self.drift.unreadable = false,
            Ok(Some(found)) => {
                self.drift.unreadable = false;
                let now = crate::os::clock::now();
                let messages = self.drift.repaired(&found, t, now);
                self.tell_repaired(&messages, now);
            }
            Err(e) => {
                if !self.drift.unreadable {
                    log::warn!("could not check or repair the firewall rules: {e}");
                }
                self.drift.unreadable = true;
            }
        }
    }

    /// Tells the owners `messages` about the repairs, with the state as it is now.
    fn tell_repaired(&self, messages: &[String], now: u64) {
        if messages.is_empty() {
            return;
        }
        let status = self
            .keeper
            .snapshot(now)
            .map(|o| report::status_text(self.cfg(), &self.keeper.fw, &o))
            .unwrap_or_default();
        let text = format!("{}\n\nNow:\n{status}", messages.join("\n\n"));
        tell_owners(&*self.api, self.cfg(), &text);
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
        assert!(w.check_due(t0));
        assert!(
            !w.check_due(t0 + Duration::from_millis(500)),
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
        assert!(!w.check_due(t2 + Duration::from_secs(59)), "held a minute");
        assert!(w.check_due(t2 + Duration::from_secs(60)));
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
        assert!(w.check_due(later));
        assert_eq!(w.repaired("back", later, 3_000).len(), 1);
    }

    #[test]
    fn rules_flushed_by_another_program_are_put_back_and_told() {
        let bot = FakeBot::new();
        let mut t = TestDaemon::new(&bot, &[]);
        t.d.watch_rules();
        assert!(bot.sent().is_empty(), "nothing changed: {:?}", bot.sent());
        t.scratch.flush();
        t.d.drift.last_check = None;
        t.d.watch_rules();
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
