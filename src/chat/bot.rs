//! The Bot API as the daemon sees it: the few calls it makes, behind one narrow trait.

use std::time::Duration;

use serde::Deserialize;

use crate::base::error::ApiError;
use crate::base::ids::{ChatId, MessageId, UpdateId};
use crate::chat::telegram::{Answer, BotApi, User, outgoing};
use crate::os::logging::redact;

/// The Bot API calls the daemon makes: the narrow seam it talks to Telegram through (as
/// ureq keeps a narrow `Transport`). [`BotApi`] is the real one; the unit tests put an
/// in-process fake in its place that records what is sent (`testkit::FakeBot`).
pub(crate) trait Bot: Send + Sync {
    fn get_me(&self) -> Result<(User, Option<u64>), ApiError>;
    /// Long-polls for updates; `timeout` is Telegram's long-poll time in seconds.
    fn get_updates(
        &self,
        offset: Option<UpdateId>,
        timeout: u64,
        limit: u32,
    ) -> Result<Answer, ApiError>;
    fn send_message(&self, chat_id: ChatId, text: &str) -> Result<(), ApiError>;
    /// `sendMessage` with an inline keyboard when one is given.
    fn send_with_keyboard(
        &self,
        chat_id: ChatId,
        text: &str,
        keyboard: Option<&serde_json::Value>,
    ) -> Result<(), ApiError>;
    /// Replaces the text and the keyboard of one of the bot's messages.
    fn edit_message(
        &self,
        chat_id: ChatId,
        message_id: MessageId,
        text: &str,
        keyboard: Option<&serde_json::Value>,
    ) -> Result<(), ApiError>;
    /// Answers a button press (an alert with `text`, if any).
    fn answer_press(&self, query_id: &str, text: Option<&str>) -> Result<(), ApiError>;
    fn set_my_commands(&self) -> Result<(), ApiError>;
    /// The webhook URL, if one is set.
    fn webhook_url(&self) -> Result<Option<String>, ApiError>;
    fn delete_webhook(&self) -> Result<(), ApiError>;
}

/// The real Bot API, over ureq; `getMe` and `getUpdates` are the console's and `setup`'s too.
impl Bot for BotApi {
    fn get_me(&self) -> Result<(User, Option<u64>), ApiError> {
        BotApi::get_me(self)
    }

    fn get_updates(
        &self,
        offset: Option<UpdateId>,
        timeout: u64,
        limit: u32,
    ) -> Result<Answer, ApiError> {
        BotApi::get_updates(self, offset, timeout, limit)
    }

    fn send_message(&self, chat_id: ChatId, text: &str) -> Result<(), ApiError> {
        self.send(chat_id, text, None, Duration::from_secs(20))
    }

    /// `sendMessage` with an inline keyboard (`reply_markup`) when one is given.
    fn send_with_keyboard(
        &self,
        chat_id: ChatId,
        text: &str,
        keyboard: Option<&serde_json::Value>,
    ) -> Result<(), ApiError> {
        self.send(chat_id, text, keyboard, Duration::from_secs(20))
    }

    /// Replaces the text and the keyboard of one of the bot's messages.
    fn edit_message(
        &self,
        chat_id: ChatId,
        message_id: MessageId,
        text: &str,
        keyboard: Option<&serde_json::Value>,
    ) -> Result<(), ApiError> {
        let mut body = serde_json::json!({
            "chat_id": chat_id,
            "message_id": message_id,
            "text": outgoing(text),
            "link_preview_options": {"is_disabled": true},
        });
        if let Some(k) = keyboard {
            body["reply_markup"] = k.clone();
        }
        self.call("editMessageText", &body, Duration::from_secs(20))
            .map(|_| ())
    }

    /// Answers a button press, which stops the spinner on the presser's button; `text`, if
    /// any, is shown to the presser as an alert. Telegram refuses (400) to answer a press
    /// that waited too long, or one answered before.
    fn answer_press(&self, query_id: &str, text: Option<&str>) -> Result<(), ApiError> {
        let mut body = serde_json::json!({"callback_query_id": query_id});
        if let Some(t) = text {
            // Telegram's limit for the text of an answer.
            body["text"] = redact(t).chars().take(200).collect::<String>().into();
            body["show_alert"] = true.into();
        }
        self.call("answerCallbackQuery", &body, Duration::from_secs(10))
            .map(|_| ())
    }

    fn set_my_commands(&self) -> Result<(), ApiError> {
        let commands = serde_json::json!({"commands": [
            {"command": "open", "description": "open a gate: /open [gate] [duration] [address]"},
            {"command": "close", "description": "close a gate, or all"},
            {"command": "status", "description": "what the firewall shows now"},
            {"command": "ban", "description": "drop every packet from an address, its connections too: /ban address [duration]"},
            {"command": "unban", "description": "lift a ban: /unban address"},
            {"command": "run", "description": "run a pre-declared action: /run [name]"},
            {"command": "help", "description": "usage, gates and ports"},
        ]});
        self.call("setMyCommands", &commands, Duration::from_secs(20))
            .map(|_| ())
    }

    /// The webhook URL, if one is set (it makes `getUpdates` fail with 409).
    fn webhook_url(&self) -> Result<Option<String>, ApiError> {
        #[derive(Deserialize)]
        struct Info {
            #[serde(default)]
            url: String,
        }
        let a = self.call(
            "getWebhookInfo",
            &serde_json::json!({}),
            Duration::from_secs(20),
        )?;
        let info: Info = a.result()?;
        Ok(Some(info.url).filter(|u| !u.is_empty()))
    }

    fn delete_webhook(&self) -> Result<(), ApiError> {
        self.call(
            "deleteWebhook",
            &serde_json::json!({"drop_pending_updates": false}),
            Duration::from_secs(20),
        )
        .map(|_| ())
    }
}
