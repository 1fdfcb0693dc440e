//! One long poll and what it brought: each update of the batch handled once, in order, the
//! offset moved past it (or the update judged when it is below the offset), the offset
//! saved when something was carried out, and the chores nobody waits for (the command
//! menu, the strangers' summary) done once the queue is drained.

use std::time::{Duration, Instant};

use super::backoff::Backoff;
use super::offset::Below;
use super::skew::ServerClock;
use super::{BATCH, Daemon, alive};
use crate::base::duration;
use crate::base::error::ApiError;
use crate::chat::telegram::{Incoming, Update};

/// How long the command menu and the strangers' summary wait at most for a poll that
/// finds no update waiting.
const CHORES_WAIT: Duration = Duration::from_secs(60);

/// The poll's own state.
pub(super) struct Poll {
    pub(super) backoff: Backoff,
    /// Updates still to fetch one at a time after an oversized answer.
    pub(super) small_left: u32,
    commands_registered: bool,
    /// Since when requests nobody waits for have waited for a poll that finds nothing.
    chores_since: Option<Instant>,
    /// The long-poll timeout in use (at most a minute, and under half of systemd's watchdog
    /// interval).
    pub(super) timeout: u64,
}

impl Poll {
    pub(super) fn new(timeout: u64, seed: u64) -> Poll {
        Poll {
            backoff: Backoff::new(seed),
            small_left: 0,
            commands_registered: false,
            chores_since: None,
            timeout,
        }
    }
}

impl Daemon {
    /// One long poll and whatever it brought, then a look at the rules.
    pub(crate) fn poll_once(&mut self) {
        let limit = if self.poll.small_left > 0 { 1 } else { BATCH };
        let result = self
            .api
            .get_updates(self.offset.asking(), self.poll.timeout, limit);
        let received = Instant::now();
        if let Ok(answer) = &result {
            self.note_clock(answer.server_time, false);
        }
        alive(&self.keeper.paths, self.clock.skew);
        match result {
            Ok(answer) => match answer
                .raw_result()
                .map_err(|e| e.to_string())
                .and_then(crate::chat::telegram::decode_updates)
            {
                Ok(items) => {
                    let clock = ServerClock {
                        date: answer.server_time,
                        received,
                    };
                    if !self.polled(items, clock) {
                        self.watch_rules();
                        return;
                    }
                }
                Err(m) => self.on_error(ApiError::Malformed(m)),
            },
            Err(e) => self.on_error(e),
        }
        self.denied
            .flush(&*self.api, &self.keeper.cfg, crate::os::clock::now());
        self.watch_rules();
    }

    /// A batch came: handled, then the chores if it is their time (false: not yet).
    fn polled(&mut self, items: Vec<Incoming>, clock: ServerClock) -> bool {
        self.poll.backoff.reset();
        // Requests nobody waits for (the command menu, the strangers' summary) are made
        // once a poll finds nothing waiting, so that while a queue is drained (a flood)
        // only the allowed users' own commands cost a round trip; at most a minute late.
        let drained = items.is_empty();
        self.handle_batch(items, clock);
        self.tell_clock();
        let since = *self.poll.chores_since.get_or_insert_with(Instant::now);
        if !drained && since.elapsed() < CHORES_WAIT {
            return false;
        }
        self.poll.chores_since = None;
        if !self.poll.commands_registered {
            self.poll.commands_registered = true;
            if let Err(e) = self.api.set_my_commands() {
                log::warn!("setMyCommands failed ({e}); the menu of commands may be missing");
            }
        }
        true
    }

    pub(super) fn handle_batch(&mut self, items: Vec<Incoming>, clock: ServerClock) {
        self.offset.polled();
        let before = self.offset.next;
        // Updates below the offset handled without moving it (they are confirmed).
        let mut undated = false;
        let n = items.len();
        for item in items {
            match item {
                Incoming::Update(u) => undated |= self.handle_item(*u, clock),
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
        self.poll.small_left = self.poll.small_left.saturating_sub(n as u32);
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

    /// Handles one update, judged first when it is below the offset; true when it was
    /// handled without moving the offset (it is confirmed by the next poll).
    fn handle_item(&mut self, u: Update, clock: ServerClock) -> bool {
        let id = u.update_id;
        if self.offset.below(id) {
            // Only a message can be carried out without Telegram's say (a press needs its
            // answer): only its date tells a repeat.
            let date = u.message.as_ref().map(|m| m.date);
            match self.offset.judge(date) {
                Below::Repeat => {
                    // A server or proxy that sends it again must not make a command run
                    // twice.
                    log::warn!(
                        "skipping update {id}, which was handled before (sent {}, not after the newest message carried out)",
                        duration::utc_full(date.unwrap_or_default().max(0) as u64)
                    );
                    self.offset.confirm(id);
                    return false;
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
                    self.handle_update(u, clock);
                    self.offset.confirm(id);
                    return true;
                }
            }
        }
        self.handle_update(u, clock);
        self.offset.advance(id);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::TestDaemon;
    use crate::base::ids::UpdateId;
    use crate::testkit::{FakeBot, OWNER, Sent, update_json as update};

    #[test]
    fn a_batch_is_carried_out_and_its_offset_saved_once() {
        let bot = FakeBot::new();
        let mut t = TestDaemon::new(&bot, &[]);
        let now = crate::os::clock::now() as i64;
        bot.queue_updates(vec![update(7, OWNER, "/close", now)]);
        t.d.poll_once();
        assert_eq!(t.d.keeper.load_state().unwrap().offset, Some(UpdateId(8)));
        let sent = bot.sent();
        assert!(
            matches!(sent.first(), Some(Sent::Message { chat: OWNER, .. })),
            "{sent:?}"
        );
        // The same update again (a proxy that repeats): skipped, nothing sent.
        bot.clear();
        bot.queue_updates(vec![update(7, OWNER, "/close", now)]);
        t.d.poll_once();
        assert!(
            !bot.sent().iter().any(|s| matches!(s, Sent::Message { .. })),
            "{:?}",
            bot.sent()
        );
        assert_eq!(t.d.offset.asking(), Some(UpdateId(8)));
    }

    #[test]
    fn a_strangers_flood_writes_nothing_and_ends_in_one_summary() {
        let bot = FakeBot::new();
        let mut t = TestDaemon::new(&bot, &[]);
        let now = crate::os::clock::now() as i64;
        bot.queue_updates((1..=5).map(|i| update(i, 900 + i, "/open", now)).collect());
        t.d.poll_once();
        assert_eq!(
            t.d.keeper.load_state().unwrap().offset,
            None,
            "nothing saved"
        );
        assert_eq!(t.d.offset.asking(), Some(UpdateId(6)));
        bot.queue_updates(Vec::new());
        t.d.poll_once();
        let summaries: Vec<_> = bot
            .sent()
            .into_iter()
            .filter(|s| matches!(s, Sent::Message { text, .. } if text.starts_with("Ignored 5 commands from 5 strangers")))
            .collect();
        assert_eq!(summaries.len(), 1, "{:?}", bot.sent());
        assert!(bot.sent().contains(&Sent::SetMyCommands));
    }
}
