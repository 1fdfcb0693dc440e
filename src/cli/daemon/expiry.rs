//! The expiry thread: closes openings and lifts bans at their deadlines, whatever the
//! poll is doing, and follows the wall clock when it is set forward or back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::base::duration;
use crate::base::error::Result;
use crate::firewall::keeper::Keeper;
use crate::os::clock::{self, Alarm};
use crate::store::state::State;

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
        self.alarm.sleep(self.wake_at(planned.as_ref()));
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
            Some(planned) if secs < 0 => self.step_back(secs, planned, now),
            _ => self.close_due(now),
        };
        self.settle(result, secs);
    }

    /// When to wake: at the next deadline by the wall clock, or in a second to retry.
    fn wake_at(&self, planned: Option<&State>) -> Option<Duration> {
        if self.retry {
            // The deadline that failed is past: waiting for it would retry at once, in a
            // loop that runs the tools as fast as they fail. Every deadline due before then
            // is taken with it.
            return Some(self.alarm.wall() + Duration::from_secs(1));
        }
        match planned {
            // 20 ms on, so that the second of the deadline has begun.
            Some(s) => s
                .next_deadline()
                .map(|d| Duration::from_secs(d) + Duration::from_millis(20)),
            None => Some(self.alarm.wall() + Duration::from_secs(1)),
        }
    }

    /// The clock was set back `secs` (negative): the deadlines planned before it move
    /// back by as much.
    fn step_back(&self, secs: i64, planned: &State, now: u64) -> Result<()> {
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

    /// Closes what is due at `now`, if anything.
    fn close_due(&self, now: u64) -> Result<()> {
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

    /// Takes the result of a turn that saw a step of `secs`.
    fn settle(&mut self, result: Result<()>, secs: i64) {
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

#[cfg(test)]
mod tests {
    use super::Expiry;
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
