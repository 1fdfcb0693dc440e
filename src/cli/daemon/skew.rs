//! The board's clock against Telegram's: Telegram's time for a batch (the `Date` of the
//! answer that carried it), the skew between the two, and what the owners hear when the
//! board's clock is far ahead.

use std::time::Instant;

use super::{Daemon, tell_owners};
use crate::base::duration;

/// Telegram's clock, as the `Date` header of the answer that carried a batch gives it.
#[derive(Debug, Clone, Copy)]
pub(super) struct ServerClock {
    pub(super) date: Option<u64>,
    pub(super) received: Instant,
}

impl ServerClock {
    /// Telegram's time now, or the board's when the answer had no usable `Date`.
    pub(super) fn now(&self) -> u64 {
        match self.date {
            Some(d) => d + self.received.elapsed().as_secs(),
            None => crate::os::clock::now(),
        }
    }
}

/// Whether the board's clock is far enough from Telegram's to say so: more than half of
/// `TGKNOCK_MAX_AGE` (at least 10 s).
pub(crate) fn clock_is_off(skew: i64, max_age: u64) -> bool {
    skew.unsigned_abs() > (max_age / 2).max(10)
}

/// What the daemon knows of the board's clock against Telegram's.
#[derive(Debug, Default)]
pub(super) struct Skew {
    /// The board's clock minus Telegram's, in seconds, from the last answer.
    pub(super) skew: Option<i64>,
    /// What the owners are to hear about the board's clock, after the batch at hand.
    notice: Option<String>,
}

impl Skew {
    /// Records the skew between the board's clock (`local`) and Telegram's (`server`, the
    /// `Date` of an answer), and logs it when it is far off (or always, with `log_it`).
    pub(super) fn note(&mut self, local: u64, server: u64, max_age: u64, log_it: bool) {
        let skew = local as i64 - server as i64;
        let big = clock_is_off(skew, max_age);
        let was_big = self.skew.is_some_and(|s| clock_is_off(s, max_age));
        self.skew = Some(skew);
        if big && !was_big && skew > 0 {
            // Set back later (NTP) while tgknock is not running to follow it, the board's
            // clock would make every deadline come that much later.
            self.notice = Some(format!(
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
}

impl Daemon {
    /// Records the skew between the board's clock and Telegram's (`Date` of an answer).
    pub(super) fn note_clock(&mut self, server_time: Option<u64>, log_it: bool) {
        let Some(server) = server_time else { return };
        let max_age = self.cfg().limits.max_age;
        self.clock
            .note(crate::os::clock::now(), server, max_age, log_it);
    }

    /// Tells the owners what they are to hear about the board's clock, if anything.
    pub(super) fn tell_clock(&mut self) {
        if let Some(text) = self.clock.notice.take() {
            tell_owners(&*self.api, self.cfg(), &text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::TestDaemon;
    use super::*;
    use crate::testkit::{FakeBot, OWNER, Sent};

    #[test]
    fn a_clock_far_ahead_is_told_to_the_owners_once() {
        let bot = FakeBot::new();
        let mut t = TestDaemon::new(&bot, &[]);
        let now = crate::os::clock::now();
        t.d.note_clock(Some(now - 5), true);
        t.d.tell_clock();
        assert!(bot.sent().is_empty(), "5 s is no news: {:?}", bot.sent());
        t.d.note_clock(Some(now - 3600), false);
        t.d.tell_clock();
        t.d.note_clock(Some(now - 3600), false);
        t.d.tell_clock();
        let sent = bot.sent();
        let [Sent::Message { chat, text }] = sent.as_slice() else {
            panic!("{sent:?}")
        };
        assert_eq!(*chat, OWNER);
        assert!(text.contains("is 1 h ahead of Telegram's"), "{text}");
    }

    #[test]
    fn a_clock_behind_is_only_logged() {
        let mut s = Skew::default();
        s.note(1_000, 5_000, 60, false);
        assert_eq!((s.skew, s.notice), (Some(-4_000), None));
        assert!(clock_is_off(31, 60) && !clock_is_off(30, 60) && clock_is_off(11, 0));
    }
}
