//! Where the daemon is in Telegram's queue of updates, and the one way a change is carried
//! out: [`Daemon::carry_out`] saves the offset past its update with it, so that a restart
//! never carries it out again.

use super::Daemon;
use crate::base::error::Result;
use crate::base::ids::UpdateId;
use crate::firewall::keeper::{Mark, Outcome};
use crate::store::state::State;

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
pub(super) struct Offset {
    /// The next `update_id` to ask for: every update below it was handled, in this
    /// numbering.
    pub(super) next: Option<UpdateId>,
    /// What the state file says.
    saved: Option<UpdateId>,
    /// The date of the newest message carried out (Telegram's clock), as known and as
    /// the state file says.
    newest: Option<i64>,
    saved_newest: Option<i64>,
    /// An update of the batch being handled was carried out (not ignored): its offset
    /// must be saved before the next poll, so that a restart never carries it out again.
    acted: bool,
    /// The offset the next poll asks with instead of `next`: past the last update of the
    /// batch, which was below `next`.
    confirm: Option<UpdateId>,
}

/// What an update below the offset is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Below {
    /// A message dated at or before the newest carried out: sent again, skipped.
    Repeat,
    /// A message newer than everything carried out: Telegram numbers afresh from it.
    Renumbered,
    /// No date to judge by (a press): handled, the offset left where it is.
    Undated,
}

impl Offset {
    /// As the state file left it.
    pub(super) fn saved(st: &State) -> Offset {
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
    pub(super) fn asking(&self) -> Option<UpdateId> {
        self.confirm.or(self.next)
    }

    /// A poll came back: whatever it asked with is confirmed.
    pub(super) fn polled(&mut self) {
        self.confirm = None;
    }

    /// Whether update `id` is below the offset: handled before, or Telegram numbered
    /// afresh.
    pub(super) fn below(&self, id: UpdateId) -> bool {
        self.next.is_some_and(|o| id < o)
    }

    /// What an update below the offset is, by the date of its message (`None`: it has no
    /// message that could be carried out without Telegram's say, e.g. a press). Without a
    /// saved date (a state file from an older version), a message is taken for the new
    /// numbering: an old command sent again is still refused as stale by its date.
    pub(super) fn judge(&self, date: Option<i64>) -> Below {
        match (date, self.newest) {
            (None, _) => Below::Undated,
            (Some(d), Some(newest)) if d <= newest => Below::Repeat,
            (Some(_), _) => Below::Renumbered,
        }
    }

    /// Telegram numbers afresh from update `id`: it is the next to handle.
    pub(super) fn rebase(&mut self, id: UpdateId) {
        self.next = Some(id);
    }

    /// Update `id`, below the offset, is handled: the next poll confirms it.
    pub(super) fn confirm(&mut self, id: UpdateId) {
        self.confirm = Some(id.next());
    }

    /// An update (of a message dated `date`, if it has one) is carried out.
    pub(super) fn carried(&mut self, date: Option<i64>) {
        self.acted = true;
        self.newest = self.newest.max(date);
    }

    /// The offset once update `id` is handled.
    pub(super) fn after(&self, id: UpdateId) -> UpdateId {
        let next = id.next();
        self.next.map_or(next, |o| o.max(next))
    }

    /// What to save once update `id` is carried out.
    pub(super) fn mark(&self, id: UpdateId) -> Mark {
        Mark {
            offset: self.after(id),
            newest: self.newest,
        }
    }

    pub(super) fn advance(&mut self, id: UpdateId) {
        self.next = Some(self.after(id));
        self.confirm = None;
    }

    /// What to save: when the offset or the newest date moved since the last save past an
    /// update that was carried out. Batches of ignored updates (strangers, chatter) are
    /// not saved: the next poll confirms them to Telegram, and if the daemon stops before
    /// it, reading them again changes nothing. So a flood of strangers' messages writes
    /// nothing to the SD card.
    pub(super) fn unsaved(&self) -> Option<Mark> {
        let next = self.next?;
        let moved = self.next != self.saved || self.newest != self.saved_newest;
        (self.acted && moved).then_some(Mark {
            offset: next,
            newest: self.newest,
        })
    }

    /// The state file now holds `mark` (saved with a change, or on its own).
    pub(super) fn saved_at(&mut self, mark: Mark) {
        self.saved = Some(mark.offset);
        self.saved_newest = self.saved_newest.max(mark.newest);
        self.acted = false;
        if self.next.is_none_or(|n| n < mark.offset) {
            self.next = Some(mark.offset);
        }
    }
}

impl Daemon {
    /// Carries out update `update`'s change at `now` (the board's clock): `change` and the
    /// offset past the update are saved together, the rules applied, and the expiry told
    /// of its new deadlines. The only place a change from chat is made.
    pub(super) fn carry_out<T>(
        &mut self,
        update: UpdateId,
        now: u64,
        change: impl FnOnce(&mut State) -> Result<T>,
    ) -> Result<(T, Outcome)> {
        let next = self.offset.mark(update);
        let result = self.keeper.change(now, |st| {
            let t = change(st)?;
            next.write(st);
            Ok(t)
        });
        if result.is_ok() {
            self.offset.saved_at(next);
            self.keeper.wake_daemon();
        }
        result
    }

    /// Saves the offset past update `update` on its own, before what it asks for starts (an
    /// action: a crash never makes it run twice).
    pub(super) fn save_offset_past(&mut self, update: UpdateId) -> Result<()> {
        let next = self.offset.mark(update);
        self.keeper.save_offset(next)?;
        self.offset.saved_at(next);
        Ok(())
    }

    /// Records in the state what `record` says, and the offset past update `update` when
    /// `settled` says the update is all done by it (a refused code); the rules are not
    /// touched.
    pub(super) fn record_past<R>(
        &mut self,
        update: UpdateId,
        record: impl FnOnce(&mut State) -> R,
        settled: impl Fn(&R) -> bool,
    ) -> Result<R> {
        let next = self.offset.mark(update);
        let r = self.keeper.record(|st| {
            let r = record(st);
            if settled(&r) {
                next.write(st);
            }
            r
        })?;
        if settled(&r) {
            self.offset.saved_at(next);
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::TestDaemon;
    use super::*;
    use crate::testkit::FakeBot;

    #[test]
    fn an_update_below_the_offset_is_judged_by_its_date() {
        let st = State {
            offset: Some(UpdateId(500)),
            newest_carried: Some(1_000),
            ..State::default()
        };
        let mut o = Offset::saved(&st);
        assert!(o.below(UpdateId(10)) && !o.below(UpdateId(500)));
        assert_eq!(o.judge(Some(999)), Below::Repeat);
        assert_eq!(o.judge(Some(1_000)), Below::Repeat, "the same second");
        assert_eq!(o.judge(Some(1_001)), Below::Renumbered);
        assert_eq!(o.judge(None), Below::Undated);
        // An undated one is confirmed by the next poll, the offset left as it is.
        o.confirm(UpdateId(10));
        assert_eq!(
            (o.asking(), o.next),
            (Some(UpdateId(11)), Some(UpdateId(500)))
        );
        o.polled();
        assert_eq!(o.asking(), Some(UpdateId(500)));
        // The new numbering: the offset goes down, and is saved once carried out.
        o.rebase(UpdateId(20));
        o.carried(Some(700_000));
        let m = o.mark(UpdateId(20));
        assert_eq!(
            m,
            Mark {
                offset: UpdateId(21),
                newest: Some(700_000)
            }
        );
        o.advance(UpdateId(20));
        assert_eq!(o.unsaved(), Some(m));
        o.saved_at(m);
        assert_eq!(o.unsaved(), None);
        assert_eq!(o.judge(Some(700_000)), Below::Repeat);
        // A press carried out moves no date.
        o.carried(None);
        assert_eq!(o.newest, Some(700_000));
        // A file from before the date was saved: a message below is not a repeat.
        let old = Offset::saved(&State {
            offset: Some(UpdateId(500)),
            ..State::default()
        });
        assert_eq!(old.judge(Some(1)), Below::Renumbered);
    }

    #[test]
    fn a_change_carried_out_saves_the_offset_past_its_update_with_it() {
        let bot = FakeBot::new();
        let mut t = TestDaemon::new(&bot, &[]);
        t.d.offset.carried(Some(1_000));
        let r: Result<((), Outcome)> = t.d.carry_out(UpdateId(41), crate::os::clock::now(), |st| {
            st.close(None);
            Ok(())
        });
        assert!(r.is_ok());
        let st = t.d.keeper.load_state().unwrap();
        assert_eq!(
            (st.offset, st.newest_carried),
            (Some(UpdateId(42)), Some(1_000))
        );
        assert_eq!(t.d.offset.unsaved(), None, "nothing left to save");
        // A change that fails saves nothing, the offset neither.
        let r: Result<((), Outcome)> = t.d.carry_out(UpdateId(50), crate::os::clock::now(), |_| {
            Err(crate::base::error::Error::usage("x", "refused"))
        });
        assert!(r.is_err());
        assert_eq!(t.d.keeper.load_state().unwrap().offset, Some(UpdateId(42)));
        // A refused code is all there is to its update: the offset moves with it.
        let got =
            t.d.record_past(UpdateId(60), |_| false, |accepted| !*accepted)
                .unwrap();
        assert!(!got);
        assert_eq!(t.d.keeper.load_state().unwrap().offset, Some(UpdateId(61)));
        t.d.save_offset_past(UpdateId(70)).unwrap();
        assert_eq!(t.d.keeper.load_state().unwrap().offset, Some(UpdateId(71)));
    }
}
