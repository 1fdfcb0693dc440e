//! Carrying out what changes something: opening, closing, banning, unbanning (each through
//! [`Daemon::carry_out`], which saves the offset with the change), and running a declared
//! action on a thread of its own; then the reply that shows what the kernel holds.

use std::time::Duration;

use super::Daemon;
use super::ask::{Ask, Via};
use crate::base::addr::Cidr;
use crate::base::duration;
use crate::base::error::Result;
use crate::base::gate::GateName;
use crate::chat::buttons;
use crate::chat::decide::Change;
use crate::chat::report;
use crate::firewall::keeper::Outcome;
use crate::store::actions;

impl Daemon {
    /// Carries out `change`, asked for by `ask` (its code, if one was needed, accepted).
    pub(super) fn carry_change(&mut self, ask: &Ask, change: Change) {
        match change {
            Change::Open { gate, opening } => {
                // The offset is saved with the change: a restart never runs it again.
                let result =
                    self.carry_out(ask.update, ask.now.board, |st| st.open(&gate, opening));
                self.after_change(ask, "open", &[gate], result);
            }
            Change::Ban { ban } => {
                let addr = ban.addr;
                if self.refuse_ban(ask, &addr) {
                    return;
                }
                let result = self.carry_out(ask.update, ask.now.board, |st| st.ban(ban));
                self.after_ban(ask, "ban", &addr, result);
            }
            Change::Unban { addr } => {
                let result = self.carry_out(ask.update, ask.now.board, |st| {
                    st.unban(&addr);
                    Ok(())
                });
                self.after_ban(ask, "unban", &addr, result);
            }
            Change::Run { name } => self.run_action(ask, &name),
        }
    }

    /// Closes `gate` (`None`: every gate).
    pub(super) fn close(&mut self, ask: &Ask, gate: Option<GateName>) {
        let result = self.carry_out(ask.update, ask.now.board, |st| {
            st.close(gate.as_ref());
            Ok(())
        });
        let gates: Vec<GateName> = match gate {
            Some(g) => vec![g],
            None => self.cfg().gates.iter().map(|g| g.name.clone()).collect(),
        };
        self.after_change(ask, "close", &gates, result);
    }

    /// Whether `addr` may not be banned; if so, the sender was told why (before a code is
    /// asked for or used up).
    pub(super) fn refuse_ban(&self, ask: &Ask, addr: &Cidr) -> bool {
        let Some(why) = self.keeper.ban_refusal(addr) else {
            return false;
        };
        log::info!(
            "{} asked to ban {addr}: refused, {why}",
            ask.from.describe()
        );
        self.reply(ask.chat, &format!("Refused: {why}."));
        true
    }

    /// Tells the sender what the kernel shows of `gates` after the change (a press: the
    /// whole verified state), or why it was not done.
    fn after_change(
        &self,
        ask: &Ask,
        verb: &str,
        gates: &[GateName],
        result: Result<((), Outcome)>,
    ) {
        let from = ask.from.describe();
        let out = match result {
            Ok((_, out)) => out,
            Err(e) => {
                let names: Vec<&str> = gates.iter().map(GateName::as_str).collect();
                log::error!("{from} asked to {verb} {}: {e}", names.join(", "));
                let snapshot = self.keeper.snapshot(crate::os::clock::now()).ok();
                let now_text = snapshot
                    .as_ref()
                    .map(|o| report::status_text(self.cfg(), &self.keeper.fw, o))
                    .unwrap_or_default();
                let keyboard = buttons::keyboard(self.cfg(), snapshot.as_ref(), false);
                let text = format!("Not done: {e}\n\nNow:\n{now_text}");
                self.panel(ask.chat, ask.via, &text, keyboard);
                return;
            }
        };
        let lines: Vec<String> = gates
            .iter()
            .filter_map(|g| self.cfg().gate(g.as_str()))
            .map(|g| report::gate_line(g, &out))
            .collect();
        for l in &lines {
            log::info!("{from} {verb}: {l}");
        }
        let keyboard = buttons::keyboard(self.cfg(), Some(&out), false);
        // A press turns its keyboard's message into the whole verified state.
        let text = match ask.via {
            Via::Message => lines.join("\n"),
            Via::Press { .. } => report::status_text(self.cfg(), &self.keeper.fw, &out),
        };
        self.panel(ask.chat, ask.via, &text, keyboard);
    }

    fn after_ban(&self, ask: &Ask, verb: &str, addr: &Cidr, result: Result<((), Outcome)>) {
        match result {
            Ok((_, out)) => {
                let line = report::ban_line(addr, &out);
                log::info!("{} {verb}: {line}", ask.from.describe());
                self.reply(ask.chat, &line);
            }
            Err(e) => {
                log::error!("{} asked to {verb} {addr}: {e}", ask.from.describe());
                self.reply(ask.chat, &format!("Not done: {e}"));
            }
        }
    }

    /// Starts the action `name` on a thread of its own (the poll goes on), unless a run of
    /// it is in progress; its result is sent to the chat when it ends.
    fn run_action(&mut self, ask: &Ask, name: &str) {
        let Some(action) = self.cfg().actions.find(name).cloned() else {
            return;
        };
        let chat = ask.chat;
        let slot = match self.running.start(name) {
            Ok(s) => s,
            Err(since) => {
                log::info!(
                    "{} asked to run {name}, which is running",
                    ask.from.describe()
                );
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
        if let Err(e) = self.save_offset_past(ask.update) {
            log::error!("not running {name}: cannot save the update offset: {e}");
            self.reply(chat, &format!("Not run: {e}"));
            return;
        }
        let who = ask.from.describe();
        log::info!("{who} runs action {name}: {}", action.command_line());
        let api = std::sync::Arc::clone(&self.api);
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
}

#[cfg(test)]
mod tests {
    use super::super::testing::{TestDaemon, ask};
    use super::*;
    use crate::base::ids::{UpdateId, UserId};
    use crate::testkit::{FakeBot, OWNER, Sent};

    #[test]
    fn an_opening_is_carried_out_and_shown_as_the_kernel_holds_it() {
        let bot = FakeBot::new();
        let mut t = TestDaemon::new(&bot, &[]);
        let a = ask(5, OWNER);
        let gate = GateName::new("ssh").unwrap();
        let opening = crate::store::state::Opening::by_console(
            crate::base::duration::Length::Secs(600),
            None,
            a.now.board,
            &t.d.cfg().limits,
        );
        t.d.carry_change(&a, Change::Open { gate, opening });
        assert!(t.scratch.ssh_passes(), "{}", t.scratch.rules());
        assert_eq!(t.d.keeper.load_state().unwrap().offset, Some(UpdateId(6)));
        let sent = bot.sent();
        let [Sent::Message { chat: OWNER, text }] = sent.as_slice() else {
            panic!("{sent:?}")
        };
        assert!(text.starts_with("ssh"), "{text}");
        bot.clear();
        t.d.close(&ask(6, OWNER), None);
        assert!(!t.scratch.ssh_passes(), "{}", t.scratch.rules());
        assert_eq!(t.d.keeper.load_state().unwrap().offset, Some(UpdateId(7)));
    }

    #[test]
    fn a_ban_of_an_always_allowed_source_is_refused_before_anything() {
        let bot = FakeBot::new();
        let mut t = TestDaemon::new(&bot, &[("TGKNOCK_ALWAYS_ALLOW", "192.0.2.0/24")]);
        let a = ask(5, OWNER);
        let ban = crate::store::state::Ban {
            addr: "192.0.2.7".parse().unwrap(),
            until: None,
            by: crate::store::state::Actor::Telegram(UserId(OWNER)),
        };
        t.d.carry_change(&a, Change::Ban { ban });
        let sent = bot.sent();
        let [Sent::Message { text, .. }] = sent.as_slice() else {
            panic!("{sent:?}")
        };
        assert!(
            text.starts_with("Refused: 192.0.2.7 is in TGKNOCK_ALWAYS_ALLOW"),
            "{text}"
        );
        assert_eq!(
            t.d.keeper.load_state().unwrap().offset,
            None,
            "nothing saved"
        );
    }

    #[test]
    fn a_ban_and_its_lifting_are_told_as_the_kernel_holds_them() {
        let bot = FakeBot::new();
        let mut t = TestDaemon::new(&bot, &[]);
        let addr: Cidr = "203.0.113.7".parse().unwrap();
        let ban = crate::store::state::Ban {
            addr,
            until: None,
            by: crate::store::state::Actor::Telegram(UserId(OWNER)),
        };
        t.d.carry_change(&ask(5, OWNER), Change::Ban { ban });
        assert!(
            t.scratch.rules().contains("203.0.113.7"),
            "{}",
            t.scratch.rules()
        );
        t.d.carry_change(&ask(6, OWNER), Change::Unban { addr });
        assert!(
            !t.scratch.rules().contains("203.0.113.7"),
            "{}",
            t.scratch.rules()
        );
        assert_eq!(t.d.keeper.load_state().unwrap().offset, Some(UpdateId(7)));
        assert_eq!(bot.sent().len(), 2, "{:?}", bot.sent());
    }

    #[test]
    fn a_change_the_firewall_refuses_is_not_done_and_says_so() {
        let bot = FakeBot::new();
        let mut t = TestDaemon::new(&bot, &[]);
        std::fs::write(
            t.scratch.dir.join("fw/fail-iptables-restore"),
            "4 xtables lock\n",
        )
        .unwrap();
        let a = ask(5, OWNER);
        let opening = crate::store::state::Opening::by_console(
            crate::base::duration::Length::Secs(600),
            None,
            a.now.board,
            &t.d.cfg().limits,
        );
        let gate = GateName::new("ssh").unwrap();
        t.d.carry_change(&a, Change::Open { gate, opening });
        assert!(!t.scratch.ssh_passes(), "{}", t.scratch.rules());
        let sent = bot.sent();
        let [Sent::Message { text, .. }] = sent.as_slice() else {
            panic!("{sent:?}")
        };
        assert!(
            text.starts_with("Not done: ") && text.contains("\n\nNow:\n"),
            "{text}"
        );
        assert_eq!(
            t.d.keeper.load_state().unwrap().offset,
            None,
            "nothing saved"
        );
    }

    #[test]
    fn an_action_runs_once_at_a_time_and_its_result_comes_when_it_ends() {
        let bot = FakeBot::new();
        let mut t = TestDaemon::new(&bot, &[("TGKNOCK_ACTION_NAP", "/bin/sleep 1")]);
        t.d.carry_change(&ask(5, OWNER), Change::Run { name: "nap".into() });
        assert_eq!(
            t.d.keeper.load_state().unwrap().offset,
            Some(UpdateId(6)),
            "saved first"
        );
        t.d.carry_change(&ask(6, OWNER), Change::Run { name: "nap".into() });
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while bot.sent().len() < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let sent = bot.sent();
        let [
            Sent::Message { text: busy, .. },
            Sent::Message { text: done, .. },
        ] = sent.as_slice()
        else {
            panic!("{sent:?}")
        };
        assert!(busy.starts_with("nap is running already"), "{busy}");
        assert!(done.contains("nap"), "{done}");
    }
}
