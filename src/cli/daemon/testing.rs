//! A daemon for the unit tests of its rooms: on a scratch keeper (the recording fake
//! iptables) with [`OWNER`] allowed, talking to a [`FakeBot`].

use crate::base::ids::{ChatId, UpdateId};
use std::sync::Arc;

use super::Daemon;
use super::ask::{Ask, Via};
use crate::chat::decide::Now;
use crate::firewall::keeper::tests::Scratch;
use crate::store::state::State;
use crate::testkit::{FakeBot, OWNER, user};

pub(crate) struct TestDaemon {
    pub(crate) d: Daemon,
    /// Dropped after the daemon: its directory goes last.
    pub(crate) scratch: Scratch,
}

impl TestDaemon {
    /// A daemon whose configuration has `extra` on top of [`OWNER`] allowed and the gates
    /// `ssh` and `web`.
    pub(crate) fn new(bot: &FakeBot, extra: &[(&str, &str)]) -> TestDaemon {
        let scratch = Scratch::new();
        let owner = OWNER.to_string();
        let mut env = vec![
            ("TGKNOCK_ALLOWED_USERS", owner.as_str()),
            ("TGKNOCK_GATES", "ssh=22/tcp web=80/tcp"),
        ];
        env.extend_from_slice(extra);
        let keeper = Arc::new(scratch.keeper_with(&env));
        let now = crate::os::clock::now();
        keeper.change(now, |_| Ok(())).expect("the first reconcile");
        let d = Daemon::new(keeper, Arc::new(bot.clone()), &State::default(), 1, 7);
        TestDaemon { d, scratch }
    }
}

/// Update `update`, typed by `from` in their private chat now.
pub(crate) fn ask(update: i64, from: i64) -> Ask {
    let now = crate::os::clock::now();
    Ask {
        update: UpdateId(update),
        chat: ChatId(from),
        from: user(from),
        now: Now {
            telegram: now,
            board: now,
        },
        via: Via::Message,
    }
}
