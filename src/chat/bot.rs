//! The Bot API as the daemon sees it: the few calls it makes, behind one narrow trait.

use crate::base::error::ApiError;
use crate::base::ids::{ChatId, MessageId, UpdateId};
use crate::chat::telegram::{Answer, BotApi, User};

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
        BotApi::send_message(self, chat_id, text)
    }
    fn send_with_keyboard(
        &self,
        chat_id: ChatId,
        text: &str,
        keyboard: Option<&serde_json::Value>,
    ) -> Result<(), ApiError> {
        BotApi::send_with_keyboard(self, chat_id, text, keyboard)
    }
    fn edit_message(
        &self,
        chat_id: ChatId,
        message_id: MessageId,
        text: &str,
        keyboard: Option<&serde_json::Value>,
    ) -> Result<(), ApiError> {
        BotApi::edit_message(self, chat_id, message_id, text, keyboard)
    }
    fn answer_press(&self, query_id: &str, text: Option<&str>) -> Result<(), ApiError> {
        BotApi::answer_press(self, query_id, text)
    }
    fn set_my_commands(&self) -> Result<(), ApiError> {
        BotApi::set_my_commands(self)
    }
    fn webhook_url(&self) -> Result<Option<String>, ApiError> {
        BotApi::webhook_url(self)
    }
    fn delete_webhook(&self) -> Result<(), ApiError> {
        BotApi::delete_webhook(self)
    }
}
