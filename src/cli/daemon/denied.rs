//! Strangers' attempts: counted, logged once per stranger, and summarised to the owners at
//! most every ten minutes (`TGKNOCK_NOTIFY_DENIED`), never answered.

use crate::base::ids::{ChatId, UserId};
use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::tell_owners;
use crate::base::duration;
use crate::chat::bot::Bot;
use crate::chat::telegram::User;
use crate::store::config::Config;

/// How often at most the owners hear about strangers.
const DENIED_INTERVAL: Duration = Duration::from_secs(600);

/// Distinct strangers remembered per summary; beyond, only counted.
const DENIED_DISTINCT: usize = 10_000;

/// Strangers' attempts, summarised to the owners at most every ten minutes.
#[derive(Default)]
pub(crate) struct Denied {
    counts: HashMap<UserId, (u64, String)>,
    overflow: u64,
    total: u64,
    since: Option<u64>,
    last_sent: Option<Instant>,
}

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

    /// Records a stranger's command in chat `chat`, and logs it (at info the first time).
    pub(super) fn tried(&mut self, from: &User, chat: ChatId, now: u64) {
        let first = self.record(from, now);
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

    /// When due, logs the summary and sends it to the owners (if they asked for it).
    pub(super) fn flush(&mut self, api: &dyn Bot, cfg: &Config, now: u64) {
        if !self.due() {
            return;
        }
        let text = self.take_summary(now);
        log::info!("{}", text.replace('\n', "; "));
        if cfg.telegram.notify_denied {
            tell_owners(api, cfg, &text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::ids::ChatId;
    use crate::testkit::{FakeBot, OWNER, Sent, config, user};

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

    #[test]
    fn the_summary_reaches_the_owners_only_when_they_asked() {
        let bot = FakeBot::new();
        let mut d = Denied::default();
        d.tried(&user(7), ChatId(7), 100);
        d.flush(&bot, &config(&[("TGKNOCK_NOTIFY_DENIED", "no")]), 100);
        assert!(bot.sent().is_empty(), "{:?}", bot.sent());
        assert!(!d.due(), "the window was taken all the same");
        let mut d = Denied::default();
        d.tried(&user(7), ChatId(7), 100);
        d.tried(&user(7), ChatId(7), 100);
        d.flush(&bot, &config(&[]), 100);
        let sent = bot.sent();
        let [Sent::Message { chat, text }] = sent.as_slice() else {
            panic!("{sent:?}")
        };
        assert_eq!(*chat, OWNER);
        assert!(
            text.starts_with("Ignored 2 commands from 1 stranger since")
                && text.ends_with("\n7 (u7) ×2"),
            "{text}"
        );
    }
}
