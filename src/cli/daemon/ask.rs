//! One command being handled: which update, who sent it where, when, and how it came.

use crate::base::ids::{ChatId, MessageId, UpdateId};
use crate::chat::decide::Now;
use crate::chat::telegram::User;

/// How a command came: typed, or by a press on the keyboard of the bot's message
/// `message_id`, which then shows the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Via {
    Message,
    Press { message_id: MessageId },
}

/// One command being handled: its update, who sent it where, when, and how. What every
/// reply and change of it needs.
#[derive(Debug, Clone)]
pub(super) struct Ask {
    pub(super) update: UpdateId,
    pub(super) chat: ChatId,
    pub(super) from: User,
    pub(super) now: Now,
    pub(super) via: Via,
}
