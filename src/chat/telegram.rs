//! The Bot API client: only the methods and types tgknock uses, over a blocking ureq agent.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::base::duration;
use crate::base::error::{ApiError, BODY_LIMIT};
use crate::base::error::{Error, Result};
use crate::base::ids::{ChatId, MessageId, UpdateId, UserId};
use crate::base::text::shown;
use crate::os::logging::redact;
use crate::store::config::{TelegramSettings, Token};

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    #[serde(default)]
    pub is_bot: bool,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
}

impl User {
    /// `12345 (@bob)` or `12345 (Bob Smith)`, for logs and summaries.
    pub fn describe(&self) -> String {
        let name = match &self.username {
            Some(u) => format!("@{u}"),
            None => match &self.last_name {
                Some(l) => format!("{} {l}", self.first_name),
                None => self.first_name.clone(),
            },
        };
        let name: String = name.chars().filter(|c| shown(*c)).take(64).collect();
        format!("{} ({name})", self.id)
    }
}

/// A field whose presence is all that matters (its content is skipped unread).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Present;

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Present)
    }
}

/// What kind of chat a message is in.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ChatKind {
    Private,
    Group,
    Supergroup,
    Channel,
    #[default]
    #[serde(other)]
    Other,
}

impl std::fmt::Display for ChatKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChatKind::Private => "private",
            ChatKind::Group => "group",
            ChatKind::Supergroup => "supergroup",
            ChatKind::Channel => "channel",
            ChatKind::Other => "other",
        })
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Chat {
    pub id: ChatId,
    #[serde(rename = "type", default)]
    pub kind: ChatKind,
}

impl Chat {
    pub fn is_private(&self) -> bool {
        self.kind == ChatKind::Private
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Message {
    pub message_id: MessageId,
    #[serde(default)]
    pub from: Option<User>,
    pub chat: Chat,
    pub date: i64,
    #[serde(default)]
    pub text: Option<String>,
    /// Set on a forwarded message (Bot API 7.0 and later).
    #[serde(default)]
    pub forward_origin: Option<Present>,
    /// Set on a forwarded message (before Bot API 7.0).
    #[serde(default)]
    pub forward_date: Option<Present>,
    /// A channel post copied into its discussion group.
    #[serde(default)]
    pub is_automatic_forward: Option<bool>,
}

impl Message {
    /// A forwarded message quotes someone: it is never a command.
    pub fn is_forwarded(&self) -> bool {
        self.forward_origin.is_some()
            || self.forward_date.is_some()
            || self.is_automatic_forward == Some(true)
    }
}

/// The bot's message a press was on: which one, in which chat (the rest is not needed).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct PressedMessage {
    pub message_id: MessageId,
    pub chat: Chat,
}

/// A press on an inline keyboard button of one of the bot's messages.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct CallbackQuery {
    /// What `answerCallbackQuery` answers.
    pub id: String,
    pub from: User,
    /// The message whose keyboard was pressed; absent for a message sent in inline mode,
    /// which tgknock never sends.
    #[serde(default)]
    pub message: Option<PressedMessage>,
    /// The button's `callback_data`, as the client sent it: untrusted.
    #[serde(default)]
    pub data: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Update {
    pub update_id: UpdateId,
    #[serde(default)]
    pub message: Option<Message>,
    #[serde(default)]
    pub edited_message: Option<Message>,
    #[serde(default)]
    pub channel_post: Option<Message>,
    #[serde(default)]
    pub callback_query: Option<CallbackQuery>,
}

impl Update {
    /// What kind of update this is, for logs.
    pub fn kind(&self) -> &'static str {
        if self.message.is_some() {
            "message"
        } else if self.edited_message.is_some() {
            "edited message"
        } else if self.channel_post.is_some() {
            "channel post"
        } else if self.callback_query.is_some() {
            "button press"
        } else {
            "other"
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
pub struct ResponseParameters {
    #[serde(default)]
    pub retry_after: Option<u64>,
}

/// The envelope of every Bot API answer.
#[derive(Debug, Deserialize)]
pub struct ApiResponse<'a> {
    pub ok: bool,
    #[serde(borrow, default)]
    pub result: Option<&'a RawValue>,
    #[serde(default)]
    pub error_code: Option<i64>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Option<ResponseParameters>,
}

/// One update of a batch: decoded, or its id (if readable) and why it could not be.
#[derive(Debug)]
pub enum Incoming {
    Update(Box<Update>),
    Undecodable {
        update_id: Option<UpdateId>,
        reason: String,
    },
}

/// Decodes a `getUpdates` result update by update, so one odd update never blocks the rest.
pub fn decode_updates(result: &RawValue) -> Result<Vec<Incoming>, String> {
    #[derive(Deserialize)]
    struct Id {
        update_id: UpdateId,
    }
    let items: Vec<&RawValue> =
        serde_json::from_str(result.get()).map_err(|e| format!("result is not a list: {e}"))?;
    Ok(items
        .into_iter()
        .map(|raw| match serde_json::from_str::<Update>(raw.get()) {
            Ok(u) => Incoming::Update(Box::new(u)),
            Err(e) => Incoming::Undecodable {
                update_id: serde_json::from_str::<Id>(raw.get())
                    .ok()
                    .map(|i| i.update_id),
                reason: e.to_string(),
            },
        })
        .collect())
}

impl ApiError {
    fn from_ureq(e: ureq::Error) -> ApiError {
        if let Some(tls) = crate::chat::tls::rustls_error(&e) {
            let message = redact(&crate::chat::tls::describe(tls));
            let clock =
                crate::chat::tls::is_clock_error(tls) || crate::os::clock::clock_before_build();
            let clock = clock.then(crate::os::clock::now);
            return ApiError::Tls { message, clock };
        }
        let message = redact(&e.to_string());
        match e {
            ureq::Error::Timeout(_) => ApiError::Timeout,
            ureq::Error::Io(ref io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) =>
            {
                ApiError::Timeout
            }
            ureq::Error::Tls(_) | ureq::Error::Pem(_) => ApiError::Tls {
                message,
                clock: crate::os::clock::clock_before_build().then(crate::os::clock::now),
            },
            ureq::Error::BodyExceedsLimit(_) => ApiError::TooLarge,
            _ => {
                if message.to_lowercase().contains("limit") && message.contains("body") {
                    ApiError::TooLarge
                } else {
                    ApiError::Network(message)
                }
            }
        }
    }
}

/// A message's text as it may leave the board: a reply may echo what the owner typed, a
/// pasted token too, or an action's output; the token is never sent back. Telegram takes at
/// most 4096 characters.
pub(crate) fn outgoing(text: &str) -> String {
    redact(text).chars().take(4000).collect()
}

/// The Bot API, reached through one agent.
#[derive(Clone)]
pub(crate) struct BotApi {
    agent: ureq::Agent,
    base: String,
}

/// A successful answer: the raw result and the server's clock (`Date` header).
pub(crate) struct Answer {
    pub(crate) body: String,
    pub(crate) server_time: Option<u64>,
}

impl Answer {
    /// The decoded `result` of the envelope.
    pub(crate) fn result<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        let env: ApiResponse =
            serde_json::from_str(&self.body).map_err(|e| ApiError::Malformed(e.to_string()))?;
        let raw = env
            .result
            .ok_or_else(|| ApiError::Malformed("no result".into()))?;
        serde_json::from_str(raw.get()).map_err(|e| ApiError::Malformed(e.to_string()))
    }

    /// The raw `result`, borrowed from the body.
    pub(crate) fn raw_result(&self) -> Result<&RawValue, ApiError> {
        let env: ApiResponse =
            serde_json::from_str(&self.body).map_err(|e| ApiError::Malformed(e.to_string()))?;
        env.result
            .ok_or_else(|| ApiError::Malformed("no result".into()))
    }
}

impl BotApi {
    pub(crate) fn new(cfg: &TelegramSettings, token: &Token) -> Result<BotApi> {
        crate::os::logging::add_secret(token.expose());
        let proxy = match &cfg.proxy {
            Some(p) => Some(ureq::Proxy::new(&p.url).map_err(|e| {
                Error::config(
                    p.source,
                    format!("not a usable proxy URL ({})", redact(&e.to_string())),
                )
            })?),
            None => None,
        };
        let mut tls = ureq::tls::TlsConfig::builder()
            .unversioned_rustls_crypto_provider(crate::chat::tls::provider());
        if let Some(path) = &cfg.ca_file {
            let ca = |problem: String| Error::config("TGKNOCK_CA_FILE", problem);
            let pem = std::fs::read(path)
                .map_err(|e| ca(format!("cannot read {}: {e}", path.display())))?;
            let mut certs = Vec::new();
            for item in ureq::tls::parse_pem(&pem) {
                match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
                    Ok(_) => {}
                    Err(e) => {
                        // rustls' PEM errors print their fields as bytes: the kind is enough.
                        let e = e.to_string();
                        let kind = e.split(" {").next().unwrap_or_default();
                        return Err(ca(format!("{} is not a PEM file ({kind})", path.display())));
                    }
                }
            }
            if certs.is_empty() {
                return Err(ca(format!("{} holds no certificate", path.display())));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(proxy)
            .tls_config(tls.build())
            .user_agent(format!("tgknock/{}", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(30)))
            .max_idle_connections(2)
            .max_idle_connections_per_host(2)
            .build();
        Ok(BotApi {
            agent: ureq::Agent::new_with_config(config),
            base: format!("{}/bot{}", cfg.api_url, token.expose()),
        })
    }

    /// Calls a Bot API method with a JSON body; `ok: false` and HTTP errors become
    /// [`ApiError::Http`].
    pub(crate) fn call(
        &self,
        method: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<Answer, ApiError> {
        log::debug!("Bot API {method} {body}");
        let mut response = self
            .agent
            .post(format!("{}/{method}", self.base))
            .config()
            .timeout_global(Some(timeout))
            .build()
            .send_json(body)
            .map_err(ApiError::from_ureq)?;
        let status = response.status().as_u16();
        let server_time = response
            .headers()
            .get("date")
            .and_then(|v| v.to_str().ok())
            .and_then(duration::parse_http_date);
        let text = response
            .body_mut()
            .with_config()
            .limit(BODY_LIMIT)
            .lossy_utf8(true)
            .read_to_string()
            .map_err(ApiError::from_ureq)?;
        let envelope: Result<ApiResponse, _> = serde_json::from_str(&text);
        match envelope {
            Ok(env) if env.ok && (200..300).contains(&status) => Ok(Answer {
                body: text,
                server_time,
            }),
            Ok(env) => {
                let code = env
                    .error_code
                    .and_then(|c| u16::try_from(c).ok())
                    .filter(|c| (100..600).contains(c));
                Err(ApiError::Http {
                    status: if (200..300).contains(&status) {
                        code.unwrap_or(500)
                    } else {
                        status
                    },
                    description: redact(
                        &env.description
                            .unwrap_or_else(|| "no description".into())
                            .chars()
                            .take(300)
                            .collect::<String>(),
                    ),
                    retry_after: env.parameters.and_then(|p| p.retry_after),
                })
            }
            Err(e) if !(200..300).contains(&status) => Err(ApiError::Http {
                status,
                description: format!(
                    "not a Bot API answer ({})",
                    redact(&text.chars().take(80).collect::<String>()).replace('\n', " ")
                ),
                retry_after: None,
            })
            .inspect_err(|_| log::debug!("undecodable error body: {e}")),
            Err(e) => Err(ApiError::Malformed(e.to_string())),
        }
    }

    pub(crate) fn get_me(&self) -> Result<(User, Option<u64>), ApiError> {
        let a = self.call("getMe", &serde_json::json!({}), Duration::from_secs(30))?;
        Ok((a.result()?, a.server_time))
    }

    /// Long-polls for updates; `timeout` is Telegram's long-poll time in seconds.
    pub(crate) fn get_updates(
        &self,
        offset: Option<UpdateId>,
        timeout: u64,
        limit: u32,
    ) -> Result<Answer, ApiError> {
        let mut body = serde_json::json!({
            "timeout": timeout,
            "limit": limit,
            "allowed_updates": ["message", "edited_message", "callback_query"],
        });
        if let Some(o) = offset {
            body["offset"] = o.0.into();
        }
        self.call("getUpdates", &body, Duration::from_secs(timeout + 15))
    }

    /// `sendMessage`, with an inline keyboard when one is given, that gives up after
    /// `timeout`.
    pub(crate) fn send_message_within(
        &self,
        chat_id: ChatId,
        text: &str,
        keyboard: Option<&serde_json::Value>,
        timeout: Duration,
    ) -> Result<(), ApiError> {
        self.send(chat_id, text, keyboard, timeout)
    }

    pub(crate) fn send(
        &self,
        chat_id: ChatId,
        text: &str,
        keyboard: Option<&serde_json::Value>,
        timeout: Duration,
    ) -> Result<(), ApiError> {
        let mut body = serde_json::json!({
            "chat_id": chat_id,
            "text": outgoing(text),
            "link_preview_options": {"is_disabled": true},
        });
        if let Some(k) = keyboard {
            body["reply_markup"] = k.clone();
        }
        self.call("sendMessage", &body, timeout).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> String {
        let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn updates(name: &str) -> Vec<Incoming> {
        let body = data(name);
        let env: ApiResponse = serde_json::from_str(&body).unwrap();
        assert!(env.ok);
        decode_updates(env.result.unwrap()).unwrap()
    }

    #[test]
    fn decodes_private_and_group_messages() {
        let u = updates("updates_private_and_group.json");
        assert_eq!(u.len(), 2);
        let got = &u[0];
        let Incoming::Update(first) = got else {
            panic!("{got:?}")
        };
        let m = first.message.as_ref().unwrap();
        assert_eq!(m.from.as_ref().unwrap().id, UserId(111_111_111));
        assert!(m.chat.is_private());
        assert_eq!(m.text.as_deref(), Some("/open"));
        let got = &u[1];
        let Incoming::Update(second) = got else {
            panic!("{got:?}")
        };
        let g = second.message.as_ref().unwrap();
        assert_eq!(g.chat.kind, ChatKind::Supergroup);
        assert!(g.chat.id < ChatId(0));
        assert_eq!(g.text.as_deref(), Some("/open@tgknock_test_bot web 30m"));
    }

    #[test]
    fn decodes_edits_callbacks_and_odd_updates() {
        let u = updates("updates_edited_callback.json");
        let kinds: Vec<&str> = u
            .iter()
            .map(|i| match i {
                Incoming::Update(u) => u.kind(),
                Incoming::Undecodable { .. } => "undecodable",
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                "edited message",
                "button press",
                "other",
                "undecodable",
                "undecodable"
            ]
        );
        let got = &u[1];
        let Incoming::Update(press) = got else {
            panic!("{got:?}")
        };
        let q = press.callback_query.as_ref().unwrap();
        assert_eq!(q.id, "4382bfdwdsb323b2d9");
        assert_eq!(q.from.id, UserId(111_111_111));
        assert_eq!(q.data.as_deref(), Some("open:ssh"));
        let m = q.message.as_ref().unwrap();
        assert_eq!(
            (m.message_id, m.chat.id),
            (MessageId(19), ChatId(111_111_111))
        );
        let got = &u[3];
        let Incoming::Undecodable { update_id, .. } = got else {
            panic!("{got:?}")
        };
        assert_eq!(*update_id, Some(UpdateId(900_000_004)));
        let got = &u[4];
        let Incoming::Undecodable { update_id, .. } = got else {
            panic!("{got:?}")
        };
        assert_eq!(*update_id, None);
    }

    #[test]
    fn decodes_error_bodies() {
        for (name, code, retry) in [
            ("error_429.json", 429, Some(7)),
            ("error_409.json", 409, None),
            ("error_401.json", 401, None),
        ] {
            let body = data(name);
            let env: ApiResponse = serde_json::from_str(&body).unwrap();
            assert!(!env.ok);
            assert_eq!(env.error_code, Some(code));
            assert_eq!(env.parameters.unwrap_or_default().retry_after, retry);
            assert!(env.description.is_some());
        }
    }

    #[test]
    fn decodes_get_me() {
        let a = Answer {
            body: data("get_me.json"),
            server_time: None,
        };
        let me: User = a.result().unwrap();
        assert!(me.is_bot);
        assert_eq!(me.username.as_deref(), Some("tgknock_test_bot"));
    }

    #[test]
    fn describes_users() {
        let u = User {
            id: UserId(5),
            is_bot: false,
            first_name: "Eve\u{7}".into(),
            last_name: None,
            username: None,
        };
        assert_eq!(u.describe(), "5 (Eve)");
        let sneaky = User {
            first_name: "\u{202e}evE\u{200b}\u{2066}x\u{feff}".into(),
            ..u
        };
        assert_eq!(sneaky.describe(), "5 (evEx)");
    }
}
