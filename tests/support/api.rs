//! An in-test fake of the Telegram Bot API: a std TcpListener on 127.0.0.1 that speaks
//! just enough HTTP/1.1 (or HTTPS, through a rustls server), queues updates, records
//! requests, and injects faults.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{BOT, TOKEN};

/// A fault served instead of the next `getUpdates` answer.
#[derive(Debug, Clone)]
pub enum Fault {
    /// An HTTP error status with a Bot API error body (500, 502, 401…).
    Status(u16),
    /// 429 with `parameters.retry_after`.
    RetryAfter(u64),
    /// 409 Conflict (another poller, or a webhook if one is set).
    Conflict,
    /// 200 with a JSON body cut short.
    Malformed,
    /// 200 with a body that is not JSON at all.
    NotJson,
    /// 502 with an HTML page, as a proxy sends.
    Html,
    /// Close the connection without an answer.
    Close,
    /// Hold the request this long, then close without an answer.
    Hang(Duration),
    /// 200 with a body of this many bytes (over the client's limit).
    Huge(usize),
    /// 200 with this exact body.
    Body(String),
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub body: Value,
    pub at: Instant,
}

#[derive(Default)]
struct State {
    updates: VecDeque<(i64, Value)>,
    next_id: i64,
    requests: Vec<Request>,
    sent: Vec<(i64, String)>,
    faults: VecDeque<Fault>,
    /// Faults served so far, with when.
    served: Vec<(Instant, Fault)>,
    webhook: Option<String>,
    token: String,
    /// Longest long poll the fake honours, so tests stay quick.
    max_poll: u64,
    /// Telegram's clock minus the machine's, in seconds (a board whose clock is off).
    clock_offset: i64,
    /// Messages edited: (chat, message id, text).
    edits: Vec<(i64, i64, String)>,
    /// The last message id given to a message the bot sent.
    last_message_id: i64,
    /// Button presses whose answer Telegram refuses, as for a press that waited too long.
    too_old: Vec<String>,
    /// Methods whose requests are held this long, then closed without an answer.
    hang: Vec<(String, Duration)>,
    /// Why TLS handshakes failed, as the server saw it (HTTPS only).
    handshake_errors: Vec<String>,
    /// Every update queued, by id, as it was queued (for replays).
    history: Vec<(i64, Value)>,
    /// Telegram numbered its updates afresh ([`FakeApi::renumber`]): an offset above
    /// every id of the new numbering confirms nothing, and the updates are handed back.
    renumbered: bool,
    /// Presses answered: Telegram refuses to answer one twice.
    answered: Vec<String>,
    /// What each completed TLS handshake agreed on (HTTPS only).
    handshakes: Vec<Handshake>,
}

/// What a TLS handshake agreed on, as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// `TLSv1_3`, `TLSv1_2`.
    pub version: String,
    /// The key exchange group: `secp256r1`, `X25519`, …
    pub group: String,
}

/// Telegram's answer to `answerCallbackQuery` for a press that waited too long.
pub const TOO_OLD: &str =
    "Bad Request: query is too old and response timeout expired or query ID is invalid";

#[derive(Clone)]
pub struct FakeApi {
    addr: SocketAddr,
    /// Serves HTTPS with this configuration, else plain HTTP.
    tls: Option<Arc<rustls::ServerConfig>>,
    inner: Arc<(Mutex<State>, Condvar)>,
}

/// An inline keyboard as rows of (text, data); empty when there is none.
pub fn rows(markup: &Value) -> Vec<Vec<(String, String)>> {
    markup["inline_keyboard"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    r.as_array()
                        .into_iter()
                        .flatten()
                        .map(|b| {
                            (
                                b["text"].as_str().unwrap_or("").to_string(),
                                b["callback_data"].as_str().unwrap_or("").to_string(),
                            )
                        })
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default()
}

impl FakeApi {
    pub fn start() -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        Self::serve(listener)
    }

    /// Serves HTTPS on 127.0.0.1 with this server configuration (its certificate chain).
    pub fn start_tls(tls: Arc<rustls::ServerConfig>) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        Self::serve_with(listener, Some(tls))
    }

    /// Serves on an already bound listener (the netns tests bind inside a namespace).
    pub fn serve(listener: TcpListener) -> FakeApi {
        Self::serve_with(listener, None)
    }

    fn serve_with(listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) -> FakeApi {
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new((
            Mutex::new(State {
                next_id: 500_000_001,
                token: TOKEN.to_string(),
                max_poll: 60,
                ..State::default()
            }),
            Condvar::new(),
        ));
        let api = FakeApi { addr, tls, inner };
        let a = api.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let a = a.clone();
                std::thread::spawn(move || {
                    let _ = a.connection(conn);
                });
            }
        });
        api
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Why TLS handshakes failed so far, as the server saw them.
    pub fn handshake_errors(&self) -> Vec<String> {
        self.lock().handshake_errors.clone()
    }

    /// What the TLS handshakes completed so far agreed on, as the server saw them.
    pub fn handshakes(&self) -> Vec<Handshake> {
        self.lock().handshakes.clone()
    }

    /// Serves one connection: plain, or TLS once its handshake is through.
    fn connection(&self, mut tcp: TcpStream) -> std::io::Result<()> {
        tcp.set_read_timeout(Some(Duration::from_secs(120)))?;
        let Some(config) = &self.tls else {
            return self.handle(&mut tcp);
        };
        let mut server =
            rustls::ServerConnection::new(config.clone()).map_err(std::io::Error::other)?;
        while server.is_handshaking() {
            if let Err(e) = server.complete_io(&mut tcp) {
                self.lock().handshake_errors.push(e.to_string());
                return Err(e);
            }
        }
        let shown = |d: Option<String>| d.unwrap_or_else(|| "none".to_string());
        let handshake = Handshake {
            version: shown(server.protocol_version().map(|v| format!("{v:?}"))),
            group: shown(
                server
                    .negotiated_key_exchange_group()
                    .map(|g| format!("{:?}", g.name())),
            ),
        };
        self.lock().handshakes.push(handshake);
        let mut stream = rustls::StreamOwned::new(server, tcp);
        let result = self.handle(&mut stream);
        stream.conn.send_close_notify();
        let _ = stream.flush();
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an update (`update_id` is added) and returns its id.
    pub fn push_update(&self, mut update: Value) -> i64 {
        let mut s = self.lock();
        let id = s.next_id;
        s.next_id += 1;
        update["update_id"] = json!(id);
        s.history.push((id, update.clone()));
        s.updates.push_back((id, update));
        self.inner.1.notify_all();
        id
    }

    /// The update queued under `id`, as it was queued (the last one, if several were).
    pub fn update(&self, id: i64) -> Value {
        self.lock()
            .history
            .iter()
            .rev()
            .find(|(i, _)| *i == id)
            .map(|(_, u)| u.clone())
            .unwrap_or_else(|| panic!("no update {id} was queued"))
    }

    /// Serves these updates again, exactly as they were first queued (same ids, same
    /// dates), as the answer to the next `getUpdates`, whatever its offset: a proxy or
    /// server that sends updates the bot confirmed long ago.
    pub fn replay(&self, ids: &[i64]) {
        let updates: Vec<Value> = ids.iter().map(|id| self.update(*id)).collect();
        self.inject(Fault::Body(
            json!({"ok": true, "result": updates}).to_string(),
        ));
    }

    /// Numbers the next updates afresh from `base`, as Telegram does after a week without
    /// updates (the Bot API's `Update.update_id`): the new ids may be far below the offset
    /// the bot confirmed, and, as Telegram did in go-telegram-bot-api issue #156, a client
    /// asking with an offset above every id of the new numbering gets them anyway, over
    /// and over, and confirms nothing. Updates still queued are dropped: Telegram keeps
    /// them 24 hours at most.
    pub fn renumber(&self, base: i64) {
        let mut s = self.lock();
        s.updates.clear();
        s.next_id = base;
        s.renumbered = true;
    }

    /// Queues raw update text as is (for hostile bodies), under a fresh id for ordering.
    pub fn push_message_at(
        &self,
        from: i64,
        chat: i64,
        chat_type: &str,
        text: &str,
        date: i64,
    ) -> i64 {
        self.push_update(json!({
            "message": {
                "message_id": 1000 + (self.lock().next_id % 100_000),
                "from": {"id": from, "is_bot": false, "first_name": format!("user{from}"), "username": format!("u{from}")},
                "chat": {"id": chat, "type": chat_type, "title": if chat_type == "private" { Value::Null } else { json!("Board admins") }},
                "date": date,
                "text": text,
            }
        }))
    }

    /// A private message from `from`, sent now (by Telegram's clock).
    pub fn say(&self, from: i64, text: &str) -> i64 {
        self.push_message_at(from, from, "private", text, self.now())
    }

    /// Telegram's clock: the machine's, moved by [`FakeApi::set_clock_offset`].
    pub fn now(&self) -> i64 {
        super::now() + self.lock().clock_offset
    }

    /// Sets Telegram's clock `secs` ahead of the machine's (behind when negative): the
    /// `Date` header of every answer and the dates of messages sent with `say`. A board
    /// whose own clock is behind is one whose Telegram is ahead.
    pub fn set_clock_offset(&self, secs: i64) {
        self.lock().clock_offset = secs;
    }

    /// Queues a fault; a poll waiting now gets it at once.
    pub fn inject(&self, f: Fault) {
        self.lock().faults.push_back(f);
        self.inner.1.notify_all();
    }

    /// Faults injected but not served yet.
    pub fn faults_left(&self) -> usize {
        self.lock().faults.len()
    }

    /// Faults served so far, each with the time it was served (before the answer went out).
    pub fn served(&self) -> Vec<(Instant, Fault)> {
        self.lock().served.clone()
    }

    /// Waits until every injected fault has been served.
    pub fn wait_faults_served(&self, secs: u64) {
        super::wait_for(secs, "the injected faults to be served", || {
            (self.faults_left() == 0).then_some(())
        });
    }

    /// Takes the next update id for an update served by other means (a `Fault::Body`).
    pub fn reserve_id(&self) -> i64 {
        let mut s = self.lock();
        s.next_id += 1;
        s.next_id - 1
    }

    /// The id the next queued update gets (ids must keep growing, as Telegram's do).
    pub fn set_next_id(&self, id: i64) {
        self.lock().next_id = id;
    }

    /// Queues an update under a given id, in id order (Telegram redelivering an update
    /// whose confirmation never came).
    pub fn push_update_with_id(&self, id: i64, mut update: Value) {
        let mut s = self.lock();
        update["update_id"] = json!(id);
        s.history.push((id, update.clone()));
        let at = s
            .updates
            .iter()
            .position(|(i, _)| *i > id)
            .unwrap_or(s.updates.len());
        s.updates.insert(at, (id, update));
        self.inner.1.notify_all();
    }

    pub fn set_webhook(&self, url: Option<&str>) {
        self.lock().webhook = url.map(String::from);
    }

    pub fn webhook(&self) -> Option<String> {
        self.lock().webhook.clone()
    }

    pub fn set_token(&self, token: &str) {
        self.lock().token = token.to_string();
    }

    /// Queues a press on a button with `data` of the bot's message `message_id` in `chat`,
    /// by `from`; returns the query's id.
    pub fn press(&self, from: i64, chat: i64, message_id: i64, data: &str) -> String {
        self.press_then(from, chat, message_id, data, false)
    }

    /// A press that waited too long: Telegram refuses to answer it ("query is too old").
    pub fn press_too_old(&self, from: i64, chat: i64, message_id: i64, data: &str) -> String {
        self.press_then(from, chat, message_id, data, true)
    }

    fn press_then(&self, from: i64, chat: i64, message_id: i64, data: &str, old: bool) -> String {
        let query = format!("q{}", self.lock().next_id);
        if old {
            self.set_too_old(&query);
        }
        let chat_type = if chat < 0 { "supergroup" } else { "private" };
        self.push_update(json!({
            "callback_query": {
                "id": query,
                "from": {"id": from, "is_bot": false, "first_name": format!("user{from}"), "username": format!("u{from}")},
                "message": {
                    "message_id": message_id,
                    "from": {"id": 7_000_000_001i64, "is_bot": true, "first_name": "tgknock", "username": BOT},
                    "chat": {"id": chat, "type": chat_type},
                    "date": self.now() - 30,
                    "text": "(the keyboard's message)",
                },
                "chat_instance": "-5",
                "data": data,
            }
        }));
        query
    }

    /// Makes Telegram refuse to answer the press `query` ("query is too old").
    pub fn set_too_old(&self, query: &str) {
        self.lock().too_old.push(query.to_string());
    }

    /// Holds every request of `method` for `d`, then closes it without an answer.
    pub fn hang(&self, method: &str, d: Duration) {
        self.lock().hang.push((method.to_string(), d));
    }

    /// Edits of the bot's messages: (chat, message id, text).
    pub fn edits(&self) -> Vec<(i64, i64, String)> {
        self.lock().edits.clone()
    }

    /// Waits for an edit of a message in `chat` whose text contains `needle`.
    pub fn wait_edit(&self, chat: i64, needle: &str, secs: u64) -> (i64, String) {
        super::wait_for(
            secs,
            &format!(
                "an edit in {chat} containing {needle:?} (edits so far: {:?})",
                self.edits()
            ),
            || {
                self.edits()
                    .into_iter()
                    .find(|(c, _, t)| *c == chat && t.contains(needle))
                    .map(|(_, m, t)| (m, t))
            },
        )
    }

    /// The answers to presses: (query id, text shown, if any).
    pub fn answers(&self) -> Vec<(String, Option<String>)> {
        self.requests("answerCallbackQuery")
            .iter()
            .map(|r| {
                (
                    r.body["callback_query_id"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    r.body["text"].as_str().map(String::from),
                )
            })
            .collect()
    }

    /// The last message sent to `chat` (or edited) whose text contains `needle`: its id,
    /// and its keyboard as rows of (text, data). The nth message sent has id n.
    pub fn keyboard_of(&self, chat: i64, needle: &str) -> (i64, Vec<Vec<(String, String)>>) {
        let mut sent = 0;
        let mut found = None;
        for r in self.lock().requests.iter() {
            let id = match r.method.as_str() {
                "sendMessage" => {
                    sent += 1;
                    sent
                }
                "editMessageText" => r.body["message_id"].as_i64().unwrap_or(0),
                _ => continue,
            };
            if r.body["chat_id"].as_i64() == Some(chat)
                && r.body["text"].as_str().is_some_and(|t| t.contains(needle))
            {
                found = Some((id, rows(&r.body["reply_markup"])));
            }
        }
        found.unwrap_or_else(|| panic!("no message to {chat} containing {needle:?}"))
    }

    /// Messages the bot sent: (chat id, text).
    pub fn sent(&self) -> Vec<(i64, String)> {
        self.lock().sent.clone()
    }

    pub fn sent_to(&self, chat: i64) -> Vec<String> {
        self.sent()
            .into_iter()
            .filter(|(c, _)| *c == chat)
            .map(|(_, t)| t)
            .collect()
    }

    /// Waits for the next message to `chat` that contains `needle`.
    pub fn wait_reply(&self, chat: i64, needle: &str, secs: u64) -> String {
        super::wait_for(
            secs,
            &format!(
                "a reply to {chat} containing {needle:?} (sent so far: {:?})",
                self.sent_to(chat)
            ),
            || self.sent_to(chat).into_iter().find(|t| t.contains(needle)),
        )
    }

    /// Waits until `n` messages have gone to `chat`, then returns the last.
    pub fn wait_nth_reply(&self, chat: i64, n: usize, secs: u64) -> String {
        super::wait_for(secs, &format!("reply #{n} to {chat}"), || {
            let s = self.sent_to(chat);
            (s.len() >= n).then(|| s[n - 1].clone())
        })
    }

    /// Every request so far, in the order they came.
    pub fn all_requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    pub fn requests(&self, method: &str) -> Vec<Request> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.method == method)
            .cloned()
            .collect()
    }

    /// Updates not yet confirmed by an offset past them.
    pub fn pending(&self) -> usize {
        self.lock().updates.len()
    }

    fn handle<S: Read + Write>(&self, conn: &mut S) -> std::io::Result<()> {
        let mut reader = BufReader::new(conn);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let (token, method) = path
            .trim_start_matches("/bot")
            .rsplit_once('/')
            .map(|(t, m)| (t.to_string(), m.to_string()))
            .unwrap_or_default();
        let conn = reader.get_mut();
        let offset = self.lock().clock_offset;
        DATE_OFFSET.with(|d| d.set(offset));
        {
            let mut s = self.lock();
            s.requests.push(Request {
                method: method.clone(),
                body: body.clone(),
                at: Instant::now(),
            });
            if token != s.token {
                drop(s);
                return respond(
                    conn,
                    401,
                    &json!({"ok": false, "error_code": 401, "description": "Unauthorized"})
                        .to_string(),
                );
            }
        }
        let ok = |result: Value| json!({"ok": true, "result": result}).to_string();
        let held = self
            .lock()
            .hang
            .iter()
            .find(|(m, _)| *m == method)
            .map(|(_, d)| *d);
        if let Some(d) = held {
            std::thread::sleep(d);
            return Ok(());
        }
        match method.as_str() {
            "getMe" => respond(
                conn,
                200,
                &ok(json!({"id": 7_000_000_001i64, "is_bot": true, "first_name": "tgknock", "username": BOT})),
            ),
            "sendMessage" => {
                let chat = body["chat_id"].as_i64().unwrap_or(0);
                let text = body["text"].as_str().unwrap_or("").to_string();
                let id = {
                    let mut s = self.lock();
                    s.sent.push((chat, text.clone()));
                    s.last_message_id += 1;
                    s.last_message_id
                };
                respond(
                    conn,
                    200,
                    &ok(json!({"message_id": id, "chat": {"id": chat, "type": "private"}, "date": super::now(), "text": text})),
                )
            }
            "editMessageText" => {
                let chat = body["chat_id"].as_i64().unwrap_or(0);
                let id = body["message_id"].as_i64().unwrap_or(0);
                let text = body["text"].as_str().unwrap_or("").to_string();
                self.lock().edits.push((chat, id, text.clone()));
                respond(
                    conn,
                    200,
                    &ok(json!({"message_id": id, "chat": {"id": chat, "type": "private"}, "date": super::now(), "text": text})),
                )
            }
            "answerCallbackQuery" => {
                let query = body["callback_query_id"].as_str().unwrap_or("").to_string();
                // A press answered before is refused like one that waited too long.
                let refused = {
                    let mut s = self.lock();
                    let refused = s.too_old.contains(&query) || s.answered.contains(&query);
                    s.answered.push(query);
                    refused
                };
                if refused {
                    respond(
                        conn,
                        400,
                        &json!({"ok": false, "error_code": 400, "description": TOO_OLD}).to_string(),
                    )
                } else {
                    respond(conn, 200, &ok(json!(true)))
                }
            }
            "setMyCommands" | "deleteWebhook" => {
                if method == "deleteWebhook" {
                    self.lock().webhook = None;
                }
                respond(conn, 200, &ok(json!(true)))
            }
            "getWebhookInfo" => {
                let url = self.lock().webhook.clone().unwrap_or_default();
                respond(conn, 200, &ok(json!({"url": url, "has_custom_certificate": false, "pending_update_count": 0})))
            }
            "getUpdates" => self.get_updates(conn, &body),
            _ => respond(conn, 404, &json!({"ok": false, "error_code": 404, "description": "Not Found: method not found"}).to_string()),
        }
    }

    fn get_updates(&self, conn: &mut impl Write, body: &Value) -> std::io::Result<()> {
        let offset = body["offset"].as_i64();
        let limit = body["limit"].as_u64().unwrap_or(100).clamp(1, 100) as usize;
        let timeout = body["timeout"].as_u64().unwrap_or(0);
        let (lock, cv) = &*self.inner;
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        let end = Instant::now() + Duration::from_secs(timeout.min(s.max_poll));
        loop {
            // Like Telegram, an offset confirms the updates below it; after a
            // renumbering, an offset from the old numbering (above every new id) confirms
            // nothing, and the new updates are handed back.
            let offset = offset.filter(|o| !(s.renumbered && *o > s.next_id));
            if let Some(o) = offset {
                s.updates.retain(|(id, _)| *id >= o);
            }
            // A fault injected while this poll waits is its answer.
            if let Some(f) = s.faults.pop_front() {
                s.served.push((Instant::now(), f.clone()));
                let webhook = s.webhook.is_some();
                drop(s);
                return serve_fault(conn, f, webhook);
            }
            if !s.updates.is_empty() || Instant::now() >= end {
                break;
            }
            let left = end.saturating_duration_since(Instant::now());
            s = cv
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let batch: Vec<Value> = s
            .updates
            .iter()
            .take(limit)
            .map(|(_, u)| u.clone())
            .collect();
        drop(s);
        respond(conn, 200, &json!({"ok": true, "result": batch}).to_string())
    }
}

fn respond(conn: &mut impl Write, status: u16, body: &str) -> std::io::Result<()> {
    respond_typed(conn, status, "application/json", body)
}

fn respond_typed(
    conn: &mut impl Write,
    status: u16,
    ctype: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nDate: {}\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len(),
        http_date()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())?;
    conn.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        409 => "Conflict",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        _ => "Status",
    }
}

thread_local! {
    /// The clock offset of the fake serving this connection (each has its own thread).
    static DATE_OFFSET: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

fn http_date() -> String {
    let t = (tgknock::os::clock::now() as i64 + DATE_OFFSET.with(|d| d.get())) as u64;
    let (y, mo, d, h, mi, s) = tgknock::base::duration::civil(t);
    let days = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {d:02} {} {y} {h:02}:{mi:02}:{s:02} GMT",
        days[((t / 86_400) % 7) as usize],
        months[(mo - 1) as usize]
    )
}

fn serve_fault(conn: &mut impl Write, f: Fault, webhook: bool) -> std::io::Result<()> {
    match f {
        Fault::Status(code) => respond(
            conn,
            code,
            &json!({"ok": false, "error_code": code, "description": format!("Fault {code}")}).to_string(),
        ),
        Fault::RetryAfter(secs) => respond(
            conn,
            429,
            &json!({"ok": false, "error_code": 429, "description": format!("Too Many Requests: retry after {secs}"), "parameters": {"retry_after": secs}}).to_string(),
        ),
        Fault::Conflict => {
            let description = if webhook {
                "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"
            } else {
                "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"
            };
            respond(conn, 409, &json!({"ok": false, "error_code": 409, "description": description}).to_string())
        }
        Fault::Malformed => respond(conn, 200, "{\"ok\":true,\"result\":[{\"update_id\":"),
        Fault::NotJson => respond_typed(conn, 200, "text/plain", "hello, I am not JSON"),
        Fault::Html => respond_typed(
            conn,
            502,
            "text/html",
            "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>",
        ),
        Fault::Close => Ok(()),
        Fault::Hang(d) => {
            std::thread::sleep(d);
            Ok(())
        }
        Fault::Huge(n) => {
            let mut body = String::with_capacity(n + 64);
            body.push_str("{\"ok\":true,\"result\":[],\"pad\":\"");
            body.extend(std::iter::repeat_n('x', n));
            body.push_str("\"}");
            respond(conn, 200, &body)
        }
        Fault::Body(b) => respond(conn, 200, &b),
    }
}
