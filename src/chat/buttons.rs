//! Inline keyboards: the buttons a reply carries, and what a press on one asks for.
//!
//! A button's `callback_data` is the command it stands for (`/open ssh`, `/close web`,
//! `/status`, `/run backup`). A press becomes the message its data would be, sent by the
//! presser in the chat of the keyboard: `decide` then treats it as if it had been typed,
//! with the same parser and the same authorization. Clients can send any data, so it is
//! untrusted input: anything but a short command is refused before it gets that far.

use serde_json::{Value, json};

use crate::base::duration;
use crate::chat::report::{self, Verdict};
use crate::chat::telegram::{CallbackQuery, Message};
use crate::firewall::keeper::Outcome;
use crate::store::config::Config;

/// Telegram's limit for a button's `callback_data`, in bytes.
pub(crate) const MAX_DATA: usize = 64;

/// Buttons per row.
const ROW: usize = 2;

fn button(text: String, data: String) -> Value {
    debug_assert!(data.len() <= MAX_DATA);
    json!({"text": text, "callback_data": data})
}

/// A reply's keyboard: per gate Open (for `TGKNOCK_OPEN_FOR`) or Close as the gate's state
/// in `gates` calls for, and a Refresh; with `actions`, a Run per declared action. `None`
/// when there is no button to show.
pub(crate) fn keyboard(cfg: &Config, gates: Option<&Outcome>, actions: bool) -> Option<Value> {
    let mut rows: Vec<Vec<Value>> = Vec::new();
    if let Some(out) = gates {
        let length = match cfg.limits.open_for {
            0 => String::new(),
            s => format!(" · {}", duration::human(s)),
        };
        let buttons: Vec<Value> = cfg
            .gates
            .iter()
            .map(|g| {
                let open = match report::verdict(g, out) {
                    Verdict::Open(_) => true,
                    Verdict::Closed => false,
                    // The kernel disagrees with the state: offer what the state says can
                    // be undone.
                    Verdict::Mismatch(_) => out
                        .state
                        .openings_of(&g.name)
                        .iter()
                        .any(|o| o.until.is_none_or(|u| u > out.now)),
                };
                if open {
                    button(format!("Close {}", g.name), format!("/close {}", g.name))
                } else {
                    button(
                        format!("Open {}{length}", g.name),
                        format!("/open {}", g.name),
                    )
                }
            })
            .collect();
        rows.extend(buttons.chunks(ROW).map(<[Value]>::to_vec));
    }
    if actions {
        let buttons: Vec<Value> = cfg
            .actions
            .list
            .iter()
            .map(|a| button(format!("Run {}", a.name), format!("/run {}", a.name)))
            .collect();
        rows.extend(buttons.chunks(ROW).map(<[Value]>::to_vec));
    }
    if gates.is_some() {
        rows.push(vec![button("Refresh".into(), "/status".into())]);
    }
    (!rows.is_empty()).then(|| json!({ "inline_keyboard": rows }))
}

/// Why a press is not taken as a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forged {
    /// No data, or data that is not a command of one line.
    NotACommand,
    /// Longer than [`MAX_DATA`] bytes: no button of Telegram's carries that.
    TooLong,
    /// A button on a message the bot cannot see (inline mode, which tgknock never uses).
    NoMessage,
}

impl std::fmt::Display for Forged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Forged::NotACommand => "its data is not a command",
            Forged::TooLong => "its data is longer than 64 bytes",
            Forged::NoMessage => "it is on no message of the bot's",
        })
    }
}

/// The message a press stands for: its data as the text, sent now (by Telegram's clock,
/// `telegram_now`) by the presser in the keyboard's chat. A press has no date of its own:
/// whether it waited too long is Telegram's to say, by refusing to answer it.
pub(crate) fn as_message(q: &CallbackQuery, telegram_now: u64) -> Result<Message, Forged> {
    let Some(keyboard) = &q.message else {
        return Err(Forged::NoMessage);
    };
    let data = q.data.as_deref().unwrap_or("");
    if data.len() > MAX_DATA {
        return Err(Forged::TooLong);
    }
    if !data.starts_with('/') || data.chars().any(|c| c.is_control()) {
        return Err(Forged::NotACommand);
    }
    Ok(Message {
        message_id: keyboard.message_id,
        from: Some(q.from.clone()),
        chat: keyboard.chat.clone(),
        date: i64::try_from(telegram_now).unwrap_or(i64::MAX),
        text: Some(data.to_string()),
        forward_origin: None,
        forward_date: None,
        is_automatic_forward: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::gate::GateName;
    use crate::base::ids::{ChatId, MessageId, UserId};
    use crate::firewall::Firewall;
    use crate::store::state::{Actor, Opening, State};
    use crate::testkit::{NOW, outcome};

    fn cfg(extra: &[(&str, &str)]) -> Config {
        let gates = (
            "TGKNOCK_GATES",
            "ssh=22/tcp web=80/tcp,443/tcp mosh=60000:61000/udp",
        );
        crate::testkit::config_of(&[&[gates], extra].concat())
    }

    fn web_open() -> State {
        let mut s = State::default();
        s.open(
            &GateName::new("web").unwrap(),
            Opening {
                from: None,
                until: Some(NOW + 60),
                by: Actor::Telegram(UserId(1)),
            },
        )
        .unwrap();
        s
    }

    /// The keyboard as rows of (text, data).
    fn rows(k: &Value) -> Vec<Vec<(String, String)>> {
        k["inline_keyboard"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|b| {
                        (
                            b["text"].as_str().unwrap().to_string(),
                            b["callback_data"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect()
            })
            .collect()
    }

    fn pair(t: &str, d: &str) -> (String, String) {
        (t.to_string(), d.to_string())
    }

    #[test]
    fn each_gate_gets_the_button_its_verified_state_calls_for() {
        let c = cfg(&[]);
        let k = keyboard(
            &c,
            Some(&outcome(
                &Firewall::from_config(&c),
                &web_open(),
                &web_open(),
            )),
            false,
        )
        .unwrap();
        assert_eq!(
            rows(&k),
            vec![
                vec![
                    pair("Open ssh · 15 min", "/open ssh"),
                    pair("Close web", "/close web")
                ],
                vec![pair("Open mosh · 15 min", "/open mosh")],
                vec![pair("Refresh", "/status")],
            ]
        );
        // The state says open but the kernel shows closed: Close is still offered.
        let k = keyboard(
            &c,
            Some(&outcome(
                &Firewall::from_config(&c),
                &web_open(),
                &State::default(),
            )),
            false,
        )
        .unwrap();
        assert_eq!(rows(&k)[0][1], pair("Close web", "/close web"));
        let until_closed = cfg(&[("TGKNOCK_OPEN_FOR", "0"), ("TGKNOCK_MAX_OPEN_FOR", "0")]);
        let out = outcome(
            &Firewall::from_config(&until_closed),
            &State::default(),
            &State::default(),
        );
        let k = keyboard(&until_closed, Some(&out), false).unwrap();
        assert_eq!(rows(&k)[0][0], pair("Open ssh", "/open ssh"));
    }

    #[test]
    fn actions_get_run_buttons_and_all_data_fits() {
        let long = "a".repeat(crate::store::actions::MAX_ACTION_NAME);
        let c = cfg(&[
            ("TGKNOCK_ACTION_BACKUP", "/usr/local/bin/backup"),
            (&format!("TGKNOCK_ACTION_{long}"), "/bin/true"),
        ]);
        let out = outcome(
            &Firewall::from_config(&c),
            &State::default(),
            &State::default(),
        );
        let k = keyboard(&c, Some(&out), true).unwrap();
        let r = rows(&k);
        assert_eq!(
            r[2],
            vec![
                pair(&format!("Run {long}"), &format!("/run {long}")),
                pair("Run backup", "/run backup")
            ]
        );
        for (_, data) in r.iter().flatten() {
            assert!(data.len() <= MAX_DATA, "{data}");
            let gates = &c.gates;
            assert!(
                matches!(
                    crate::chat::command::parse(data, "bot", gates),
                    crate::chat::command::Parsed::Command(_)
                ),
                "{data} parses as a command"
            );
        }
        let only = keyboard(&c, None, true).unwrap();
        assert_eq!(rows(&only).len(), 1, "no gates, no Refresh");
        assert_eq!(keyboard(&cfg(&[]), None, true), None);
    }

    fn press(data: Option<&str>, on_message: bool) -> CallbackQuery {
        let mut q = json!({
            "id": "77",
            "from": {"id": 5, "is_bot": false, "first_name": "Ada"},
            "chat_instance": "1",
        });
        if let Some(d) = data {
            q["data"] = d.into();
        }
        if on_message {
            q["message"] =
                json!({"message_id": 9, "chat": {"id": -100, "type": "group"}, "date": 0});
        }
        serde_json::from_value(q).unwrap()
    }

    #[test]
    fn a_press_is_the_message_its_data_would_be() {
        let m = as_message(&press(Some("/open ssh"), true), NOW).unwrap();
        assert_eq!(m.text.as_deref(), Some("/open ssh"));
        assert_eq!(m.from.as_ref().unwrap().id, UserId(5));
        assert_eq!((m.chat.id, m.message_id), (ChatId(-100), MessageId(9)));
        assert_eq!(m.date, NOW as i64);
        assert!(!m.is_forwarded());
        for (data, why) in [
            (None, Forged::NotACommand),
            (Some(""), Forged::NotACommand),
            (Some("open:ssh"), Forged::NotACommand),
            (Some("enable ssh"), Forged::NotACommand),
            (Some("/open ssh\n/close"), Forged::NotACommand),
            (Some(&*format!("/open {}", "x".repeat(60))), Forged::TooLong),
        ] {
            assert_eq!(as_message(&press(data, true), NOW), Err(why), "{data:?}");
        }
        assert_eq!(
            as_message(&press(Some("/status"), false), NOW),
            Err(Forged::NoMessage)
        );
    }
}
