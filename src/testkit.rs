//! The unit tests' shared fixtures: a configuration, a message, an update, a press, and
//! [`FakeBot`], an in-process Bot API that records what is sent (the daemon's rooms are
//! tested through it, as ureq tests through its in-process connector). The recording fake
//! iptables of the integration tests is included once, for the tests that drive a keeper.

use crate::base::ids::{ChatId, MessageId, UpdateId, UserId};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::base::addr::Family;
use crate::base::error::ApiError;
use crate::chat::bot::Bot;
use crate::chat::telegram::{Answer, ChatKind, Message, Update, User};
use crate::firewall::Firewall;
use crate::firewall::keeper::Outcome;
use crate::firewall::rules::Listing;
use crate::store::config::Config;
use crate::store::state::State;

/// The integration tests' layout of the recording fake iptables, for the unit tests that
/// drive a keeper (one copy of it, not two).
#[path = "../tests/support/fake_fw.rs"]
pub(crate) mod fake_fw;

/// The time the fixtures' outcomes are taken at.
pub(crate) const NOW: u64 = 1_800_000_000;

/// What the kernel shows at [`NOW`] when it holds exactly what `kernel` asks for; `saved`
/// is the state.
pub(crate) fn outcome(fw: &Firewall, saved: &State, kernel: &State) -> Outcome {
    let listing = |fam| {
        let rules = fw.desired(kernel, NOW, fam);
        Listing {
            reach: crate::firewall::rules::Reach::AsWritten,
            lines: rules.iter().map(|r| format!("{r:?}")).collect(),
            rules: rules.into_iter().map(Some).collect(),
        }
    };
    Outcome {
        state: saved.clone(),
        listings: Family::BOTH.iter().map(|f| (*f, Ok(listing(*f)))).collect(),
        now: NOW,
        deadlines: true,
    }
}

/// The allowed user of [`config`].
pub(crate) const OWNER: i64 = 111;

/// A configuration of exactly `pairs` (later keys win).
pub(crate) fn config_of(pairs: &[(&str, &str)]) -> Config {
    let env: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_sources(None, &env).unwrap()
}

/// [`OWNER`] allowed, gates `ssh` and `web`, openings from chat of at most 2 h; `extra`
/// on top.
pub(crate) fn config(extra: &[(&str, &str)]) -> Config {
    let owner = OWNER.to_string();
    let mut pairs = vec![
        ("TGKNOCK_ALLOWED_USERS", owner.as_str()),
        ("TGKNOCK_GATES", "ssh=22/tcp web=80/tcp"),
        ("TGKNOCK_MAX_OPEN_FOR", "2h"),
    ];
    pairs.extend_from_slice(extra);
    config_of(&pairs)
}

/// RFC 6238's secret, as a secret file's content.
pub(crate) const TOTP_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n";

/// [`config`] with the second factor on: [`TOTP_SECRET`] in a file of its own (`tag`
/// keeps the tests' files apart), read when the config is made.
pub(crate) fn config_with_totp(tag: &str, extra: &[(&str, &str)]) -> Config {
    let dir = std::env::temp_dir().join(format!("tgk-testkit-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("totp");
    std::fs::write(&file, TOTP_SECRET).unwrap();
    let mut keys = vec![("TGKNOCK_TOTP_SECRET_FILE", file.to_str().unwrap())];
    keys.extend_from_slice(extra);
    let c = config(&keys);
    std::fs::remove_dir_all(&dir).unwrap();
    c
}

/// A user who is not a bot, named `u{id}`.
pub(crate) fn user(id: i64) -> User {
    User {
        id: UserId(id),
        is_bot: false,
        first_name: format!("u{id}"),
        last_name: None,
        username: None,
    }
}

fn message_json(from: i64, kind: ChatKind, text: &str, date: i64) -> Value {
    json!({
        "message_id": 1,
        "from": {"id": from, "is_bot": false, "first_name": "x"},
        "chat": {"id": from, "type": kind.to_string()},
        "date": date,
        "text": text,
    })
}

/// `text` from user `from`, in their chat of `kind`, sent at `date`.
pub(crate) fn msg(from: i64, kind: ChatKind, text: &str, date: i64) -> Message {
    serde_json::from_value(message_json(from, kind, text, date)).unwrap()
}

/// Update `id`: `text` from `from` in their private chat, sent at `date`, as Telegram
/// sends it.
pub(crate) fn update_json(id: i64, from: i64, text: &str, date: i64) -> Value {
    json!({"update_id": id, "message": message_json(from, ChatKind::Private, text, date)})
}

/// [`update_json`], decoded.
pub(crate) fn update(id: i64, from: i64, text: &str, date: i64) -> Update {
    serde_json::from_value(update_json(id, from, text, date)).unwrap()
}

/// Update `id`: `from` pressed the button of `data` on the bot's message `message_id`.
pub(crate) fn press(id: i64, from: i64, data: &str, message_id: i64, date: u64) -> Update {
    serde_json::from_value(json!({
        "update_id": id,
        "callback_query": {
            "id": format!("q{id}"),
            "from": {"id": from, "is_bot": false, "first_name": "x"},
            "message": {"message_id": message_id, "chat": {"id": from, "type": "private"}, "date": date},
            "data": data,
        },
    }))
    .unwrap()
}

/// What the daemon asked the fake Bot API to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sent {
    /// `sendMessage`, with or without a keyboard.
    Message {
        chat: i64,
        text: String,
    },
    Edit {
        chat: i64,
        message_id: i64,
        text: String,
    },
    Answer {
        query: String,
        text: Option<String>,
    },
    SetMyCommands,
    DeleteWebhook,
}

#[derive(Default)]
struct Inner {
    sent: Vec<Sent>,
    batches: VecDeque<Vec<Value>>,
    webhook: Option<String>,
}

/// An in-process Bot API: answers every call at once, gives the batches queued, and
/// records what is sent. Clones share one record.
#[derive(Clone, Default)]
pub(crate) struct FakeBot(Arc<Mutex<Inner>>);

impl FakeBot {
    pub(crate) fn new() -> FakeBot {
        FakeBot::default()
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What was sent, in order.
    pub(crate) fn sent(&self) -> Vec<Sent> {
        self.inner().sent.clone()
    }

    pub(crate) fn clear(&self) {
        self.inner().sent.clear();
    }

    /// The next `getUpdates` gives `batch` (an empty list once none is queued).
    pub(crate) fn queue_updates(&self, batch: Vec<Value>) {
        self.inner().batches.push_back(batch);
    }

    pub(crate) fn set_webhook(&self, url: Option<&str>) {
        self.inner().webhook = url.map(str::to_string);
    }

    pub(crate) fn webhook(&self) -> Option<String> {
        self.inner().webhook.clone()
    }

    fn record(&self, s: Sent) -> Result<(), ApiError> {
        self.inner().sent.push(s);
        Ok(())
    }
}

impl Bot for FakeBot {
    fn get_me(&self) -> Result<(User, Option<u64>), ApiError> {
        let me = User {
            id: UserId(1),
            is_bot: true,
            first_name: "tgknock".into(),
            last_name: None,
            username: Some("tgknock_test_bot".into()),
        };
        Ok((me, None))
    }

    fn get_updates(&self, _: Option<UpdateId>, _: u64, _: u32) -> Result<Answer, ApiError> {
        let batch = self.inner().batches.pop_front().unwrap_or_default();
        Ok(Answer {
            body: json!({"ok": true, "result": batch}).to_string(),
            server_time: None,
        })
    }

    fn send_message(&self, chat: ChatId, text: &str) -> Result<(), ApiError> {
        self.send_with_keyboard(chat, text, None)
    }

    fn send_with_keyboard(
        &self,
        chat: ChatId,
        text: &str,
        _: Option<&Value>,
    ) -> Result<(), ApiError> {
        self.record(Sent::Message {
            chat: chat.0,
            text: text.to_string(),
        })
    }

    fn edit_message(
        &self,
        chat: ChatId,
        message_id: MessageId,
        text: &str,
        _: Option<&Value>,
    ) -> Result<(), ApiError> {
        self.record(Sent::Edit {
            chat: chat.0,
            message_id: message_id.0,
            text: text.to_string(),
        })
    }

    fn answer_press(&self, query: &str, text: Option<&str>) -> Result<(), ApiError> {
        self.record(Sent::Answer {
            query: query.to_string(),
            text: text.map(str::to_string),
        })
    }

    fn set_my_commands(&self) -> Result<(), ApiError> {
        self.record(Sent::SetMyCommands)
    }

    fn webhook_url(&self) -> Result<Option<String>, ApiError> {
        Ok(self.webhook())
    }

    fn delete_webhook(&self) -> Result<(), ApiError> {
        self.inner().webhook = None;
        self.record(Sent::DeleteWebhook)
    }
}
