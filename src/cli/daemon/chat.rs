//! The chat dispatcher: an update becomes a message (a press is the message its button
//! stands for), [`decide`] says what it asks for, and every [`Action`] has its arm here.
//! The replies that show the state (`/status`, `/help`, presses) are made here too.

use super::Daemon;
use super::ask::{Ask, Via};
use super::skew::ServerClock;
use crate::base::ids::ChatId;
use crate::chat::buttons;
use crate::chat::command;
use crate::chat::decide::{Action, Ignored, Now, decide};
use crate::chat::report;
use crate::chat::telegram::{CallbackQuery, Message, Update};

/// How far past Telegram's clock (the answer's `Date`) a message's own date may be when it
/// is remembered as the newest carried out.
const CARRIED_DATE_SLACK: i64 = 5;

impl Daemon {
    pub(super) fn handle_update(&mut self, u: Update, clock: ServerClock) {
        let id = u.update_id;
        let kind = u.kind();
        let now = Now {
            telegram: clock.now(),
            board: crate::os::clock::now(),
        };
        // A press is the message its button stands for, from the presser: the same
        // decision, the same authorization, as typed.
        let (msg, via) = match (u.message, u.callback_query) {
            (Some(msg), _) => (msg, Via::Message),
            (None, Some(q)) if self.approvals.press(&*self.api, self.cfg(), &q, now.board) => {
                return;
            }
            (None, Some(q)) => match self.accept_press(&q, now) {
                Some(msg) => {
                    let message_id = msg.message_id;
                    (msg, Via::Press { message_id })
                }
                None => return,
            },
            (None, None) => {
                log::debug!("ignoring {kind} update {id}");
                return;
            }
        };
        let action = decide(&msg, self.cfg(), &self.bot_name, now);
        let Some(from) = msg.from.clone() else {
            log::debug!("ignoring message {} without a sender", msg.message_id);
            return;
        };
        if !matches!(action, Action::Ignore(_) | Action::Stranger { .. }) {
            // A press's message is dated by the answer that carried it: only a typed
            // message's own date tells a repeat.
            // A date past Telegram's own clock (a faulty server) would make every later
            // message look like a repeat after the next renumbering: it counts as now.
            let date = msg.date.min(now.telegram as i64 + CARRIED_DATE_SLACK);
            self.offset.carried((via == Via::Message).then_some(date));
        }
        let ask = Ask {
            update: id,
            chat: msg.chat.id,
            from,
            now,
            via,
        };
        self.dispatch(&ask, action);
    }

    /// Carries out `action`: every kind has its arm.
    fn dispatch(&mut self, ask: &Ask, action: Action) {
        match action {
            Action::Ignore(Ignored::Forwarded) => log::info!(
                "ignoring a forwarded message from {}: a forward is never a command",
                ask.from.describe()
            ),
            Action::Ignore(Ignored::NoSender | Ignored::NotForUs) => {}
            Action::Stranger { tried: true } => {
                self.denied.tried(&ask.from, ask.chat, ask.now.board)
            }
            Action::Stranger { tried: false } => {
                log::debug!("ignored chatter from {}", ask.from.describe())
            }
            Action::Refuse { text, log } => {
                log::info!("{log}");
                self.reply(ask.chat, &text);
            }
            Action::Help => self.help(ask),
            Action::Status => self.status(ask),
            Action::Actions => {
                let keyboard = buttons::keyboard(self.cfg(), None, true);
                let text = self.cfg().actions.listing();
                self.panel(ask.chat, Via::Message, &text, keyboard);
            }
            Action::Close { gate } => self.close(ask, gate),
            Action::Change(change) => self.carry_change(ask, change),
            Action::NeedCode { request } => self.ask_code(ask, request),
            Action::WithCode { change, code } => self.check_code(ask, change, code),
            Action::Code(code) => self.take_code(ask, code),
        }
    }

    fn help(&self, ask: &Ask) {
        let c = self.cfg();
        let mut text = command::usage(&c.gates, c.limits.open_for, c.limits.max_open_for);
        if c.totp.is_some() {
            text.push_str(super::second_factor::HELP);
        }
        if !c.actions.list.is_empty() {
            text.push_str(&format!("\n\nActions (/run NAME): {}", c.actions.names()));
        }
        let out = self.keeper.snapshot(ask.now.board).ok();
        let keyboard = buttons::keyboard(self.cfg(), out.as_ref(), true);
        self.panel(ask.chat, ask.via, &text, keyboard);
    }

    fn status(&self, ask: &Ask) {
        let (text, keyboard) = match self.keeper.snapshot(ask.now.board) {
            Ok(out) => (
                report::status_text(self.cfg(), &self.keeper.fw, &out),
                buttons::keyboard(self.cfg(), Some(&out), false),
            ),
            Err(e) => (format!("Cannot read the state: {e}"), None),
        };
        self.panel(ask.chat, ask.via, &text, keyboard);
    }

    /// Answers an allowed user's press and gives the message it stands for, or `None` when
    /// it is not to be carried out: its data is not a command of ours, or Telegram would
    /// not take the answer (the press waited too long while the board was offline, or it
    /// was answered before). A stranger's press is not answered: it costs no request (a
    /// flood of them must not hold up the allowed users' commands behind it), and its
    /// message goes on to be counted for the owners' summary, like a stranger's command.
    fn accept_press(&mut self, q: &CallbackQuery, now: Now) -> Option<Message> {
        let who = q.from.describe();
        let parsed = buttons::as_message(q, now.telegram);
        if !self.cfg().telegram.allowed_users.contains(&q.from.id) {
            return parsed
                .inspect_err(|why| log::debug!("ignoring a press from stranger {who}: {why}"))
                .ok();
        }
        let msg = match parsed {
            Ok(m) => m,
            Err(why) => {
                log::warn!("refusing a press from {who}: {why}");
                if let Err(e) = self
                    .api
                    .answer_press(&q.id, Some("This button is not one of tgknock's."))
                {
                    log::info!("could not answer the press from {who}: {e}");
                }
                return None;
            }
        };
        let data = msg.text.as_deref().unwrap_or("");
        match self.api.answer_press(&q.id, None) {
            Ok(()) => Some(msg),
            Err(e) if e.is_query_too_old() => {
                log::info!(
                    "not carrying out {data:?} pressed by {who}: Telegram no longer takes an answer to it ({e}); the press waited too long"
                );
                None
            }
            Err(e) => {
                log::warn!("not carrying out {data:?} pressed by {who}: answering it failed: {e}");
                None
            }
        }
    }

    /// Shows `text` with `keyboard`: a new message, or for a press the keyboard's own
    /// message, edited (a new message when it cannot be edited).
    pub(super) fn panel(
        &self,
        chat: ChatId,
        via: Via,
        text: &str,
        keyboard: Option<serde_json::Value>,
    ) {
        if let Via::Press { message_id } = via {
            match self
                .api
                .edit_message(chat, message_id, text, keyboard.as_ref())
            {
                Ok(()) => return,
                Err(e) if e.is_not_modified() => return,
                Err(e) => log::info!(
                    "could not edit message {message_id} in chat {chat} ({e}); sending a new one"
                ),
            }
        }
        if let Err(e) = self.api.send_with_keyboard(chat, text, keyboard.as_ref()) {
            log::warn!("could not send a reply to chat {chat}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::TestDaemon;
    use super::*;
    use crate::testkit::{FakeBot, OWNER, Sent, press, update};

    fn server_now() -> ServerClock {
        ServerClock {
            date: None,
            received: std::time::Instant::now(),
        }
    }

    #[test]
    fn help_status_and_strangers() {
        let bot = FakeBot::new();
        let mut t = TestDaemon::new(&bot, &[]);
        let now = crate::os::clock::now() as i64;
        t.d.handle_update(update(1, OWNER, "/help", now), server_now());
        t.d.handle_update(update(2, OWNER, "/status", now), server_now());
        t.d.handle_update(update(3, 999, "/open", now), server_now());
        let sent = bot.sent();
        let [
            Sent::Message {
                chat: c1,
                text: help,
            },
            Sent::Message {
                chat: c2,
                text: status,
            },
        ] = sent.as_slice()
        else {
            panic!("{sent:?}")
        };
        assert_eq!((*c1, *c2), (OWNER, OWNER));
        assert!(help.starts_with("/open [GATE]"), "{help}");
        assert!(!help.contains("second factor"), "{help}");
        assert!(status.contains("ssh"), "{status}");
        assert!(t.d.denied.due(), "the stranger is counted, not answered");
    }

    #[test]
    fn a_press_edits_its_message_and_a_strangers_press_is_not_answered() {
        let bot = FakeBot::new();
        let mut t = TestDaemon::new(&bot, &[]);
        let now = crate::os::clock::now();
        t.d.handle_update(press(1, OWNER, "/status", 77, now), server_now());
        let sent = bot.sent();
        let [
            Sent::Answer { text: None, .. },
            Sent::Edit { message_id: 77, .. },
        ] = sent.as_slice()
        else {
            panic!("{sent:?}")
        };
        bot.clear();
        t.d.handle_update(press(2, 999, "/status", 78, now), server_now());
        assert!(bot.sent().is_empty(), "{:?}", bot.sent());
        t.d.handle_update(press(3, OWNER, "rm -rf", 79, now), server_now());
        let sent = bot.sent();
        let [
            Sent::Answer {
                text: Some(alert), ..
            },
        ] = sent.as_slice()
        else {
            panic!("{sent:?}")
        };
        assert_eq!(alert, "This button is not one of tgknock's.");
    }
}
