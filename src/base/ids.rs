//! Telegram's ids, each its own type, so that a user id is never passed as a chat id or an
//! update id as a message id. Each is the number Telegram sends, serialized as that bare
//! number (`serde(transparent)`): the Bot API's JSON and the state file are unchanged.

use serde::{Deserialize, Serialize};

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug,
            Clone,
            Copy,
            Default,
            PartialEq,
            Eq,
            Hash,
            PartialOrd,
            Ord,
            Serialize,
            Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id!(
    /// A Telegram user (`User.id`); an allowed user is one of these.
    UserId
);
id!(
    /// A chat (`Chat.id`): a user's private chat has the user's id, a group a negative one.
    ChatId
);
id!(
    /// An update in the bot's queue (`Update.update_id`), and the offset a poll asks with.
    UpdateId
);
id!(
    /// One of a chat's messages (`Message.message_id`).
    MessageId
);

impl UserId {
    /// The user's private chat with the bot, where the bot writes to them.
    pub fn chat(self) -> ChatId {
        ChatId(self.0)
    }
}

impl UpdateId {
    /// The update after this one: the offset that confirms it.
    pub fn next(self) -> UpdateId {
        UpdateId(self.0.saturating_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_bare_numbers_in_json_and_in_text() {
        assert_eq!(
            serde_json::to_string(&UpdateId(900_000_001)).unwrap(),
            "900000001"
        );
        assert_eq!(
            serde_json::from_str::<Option<UserId>>("-5").unwrap(),
            Some(UserId(-5))
        );
        assert_eq!(ChatId(-100).to_string(), "-100");
        assert_eq!(UserId(7).chat(), ChatId(7));
        assert_eq!(UpdateId(i64::MAX).next(), UpdateId(i64::MAX));
    }
}
