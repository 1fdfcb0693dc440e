//! Any bytes as a `getUpdates` answer: the envelope, then the updates one by one. Never a
//! panic, and one entry out for each entry in.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use tgknock::chat::telegram::{ApiResponse, Incoming, decode_updates};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The whole answer, as the daemon reads it.
    if let Ok(env) = serde_json::from_str::<ApiResponse>(text)
        && let Some(raw) = env.result
    {
        for item in decode_updates(raw).unwrap_or_default() {
            // What the daemon does next with an update.
            if let Incoming::Update(u) = item
                && let Some(m) = u.message
            {
                if let Some(from) = &m.from {
                    let d = from.describe();
                    assert!(!d.chars().any(char::is_control), "{d:?}");
                }
                let gates = tgknock::base::gate::parse_gates("ssh=22/tcp web=80/tcp").unwrap();
                let _ = tgknock::chat::command::parse(m.text.as_deref().unwrap_or(""), "bot", &gates);
            }
        }
    }
    // The input as the `result` itself.
    if let Ok(raw) = serde_json::from_str::<&RawValue>(text)
        && let Ok(items) = decode_updates(raw)
    {
        let n = serde_json::from_str::<Vec<&RawValue>>(text).map(|v| v.len());
        assert_eq!(Ok(items.len()), n.map_err(|_| ()));
    }
});
