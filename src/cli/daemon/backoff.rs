//! When Telegram fails: how long to wait (1 s doubling to 60 s, with jitter), what its
//! answers ask for (429's `retry_after`), and what the daemon can fix itself (a webhook
//! that makes `getUpdates` fail with 409, an answer over the size limit).

use std::time::{Duration, Instant};

use super::{BATCH, Daemon, alive};
use crate::base::error::ApiError;

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

impl Daemon {
    /// What a failed `getUpdates` calls for.
    pub(super) fn on_error(&mut self, e: ApiError) {
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
            ApiError::Http { status: 409, .. } => self.on_conflict(),
            ApiError::TooLarge => self.on_too_large(),
            _ if e.is_token_rejected() => self.back_off(
                log::Level::Error,
                &format!("Telegram rejects the bot token now ({e}); was it revoked?"),
            ),
            _ => self.back_off(log::Level::Warn, &format!("getUpdates failed: {e}")),
        }
    }

    /// 409: a webhook is set (removed: tgknock polls), or another program polls.
    fn on_conflict(&mut self) {
        match self.api.webhook_url() {
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
        }
    }

    /// An answer over the limit: updates are fetched one at a time for a while, and one
    /// that is too large alone is skipped.
    fn on_too_large(&mut self) {
        if self.poll.small_left == 0 {
            log::warn!(
                "an answer was larger than the limit; fetching updates one at a time for a while"
            );
            self.poll.small_left = BATCH;
            return;
        }
        match self.offset.asking() {
            Some(o) => {
                log::error!("update {o} alone is larger than the limit; skipping it");
                if self.offset.below(o) {
                    self.offset.confirm(o);
                } else {
                    self.offset.advance(o);
                }
            }
            None => self.back_off(log::Level::Error, "an oversized update blocks the queue"),
        }
    }

    /// Logs why, then waits the next backoff step (1 s doubling to 60 s, with jitter).
    pub(super) fn back_off(&mut self, level: log::Level, why: &str) {
        let wait = self.poll.backoff.fail();
        log::log!(
            level,
            "{why}; retrying in {} s",
            crate::base::duration::tenths(wait)
        );
        self.pause(wait);
    }

    /// Sleeps `total`, staying visibly alive and keeping the rules in place every poll's
    /// length (Telegram may be unreachable for long: the rules are looked after anyway).
    fn pause(&mut self, total: Duration) {
        let slice = Duration::from_secs(self.poll.timeout);
        let end = Instant::now() + total;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(slice));
            alive(&self.keeper.paths, self.clock.skew);
            self.watch_rules();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::TestDaemon;
    use super::*;
    use crate::base::ids::UpdateId;
    use crate::testkit::{FakeBot, Sent};

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

    fn http(status: u16) -> ApiError {
        ApiError::Http {
            status,
            description: "Conflict".into(),
            retry_after: None,
        }
    }

    #[test]
    fn a_webhook_that_blocks_polling_is_removed_without_waiting() {
        let bot = FakeBot::new();
        bot.set_webhook(Some("https://hook.example.org/path"));
        let mut t = TestDaemon::new(&bot, &[]);
        t.d.on_error(http(409));
        assert_eq!(bot.sent(), vec![Sent::DeleteWebhook]);
        assert_eq!(bot.webhook(), None);
    }

    #[test]
    fn an_oversized_answer_fetches_one_at_a_time_then_skips_the_update() {
        let bot = FakeBot::new();
        let mut t = TestDaemon::new(&bot, &[]);
        t.d.offset.advance(UpdateId(41));
        t.d.on_error(ApiError::TooLarge);
        assert_eq!(t.d.poll.small_left, BATCH, "one at a time for a while");
        assert_eq!(t.d.offset.asking(), Some(UpdateId(42)));
        t.d.on_error(ApiError::TooLarge);
        assert_eq!(
            t.d.offset.asking(),
            Some(UpdateId(43)),
            "update 42 alone is skipped"
        );
        assert!(bot.sent().is_empty(), "{:?}", bot.sent());
    }
}
