//! Pre-declared actions (`TGKNOCK_ACTION_<NAME>`) and how `/run NAME` runs one: the program
//! and its arguments as the config gives them, never through a shell, with a cleared
//! environment, standard input closed, in a process group of its own (a timeout kills all it
//! started) and without the daemon's capabilities. Its output's tail is the reply. One
//! thread per run, which reads the output and watches the clock.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::base::duration;

/// Most actions a config may declare (each is a button of `/help`).
pub(crate) const MAX_ACTIONS: usize = 32;
/// Most words (program and arguments) of one action.
const MAX_WORDS: usize = 64;
/// Most characters of output a reply shows.
pub(crate) const OUTPUT_LIMIT: usize = 3000;
/// Bytes of output kept while an action runs: its tail, whole lines.
const KEEP: usize = 16 * 1024;
/// After the program exits (or is killed), how long its output may take to close.
const DRAIN: Duration = Duration::from_secs(1);
/// The environment an action gets: nothing of the daemon's, a `PATH` for scripts.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One action: its name in chat (lowercase) and the program with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Declared {
    pub(crate) name: String,
    /// The program (an absolute path), then its arguments.
    pub(crate) argv: Vec<String>,
}

impl Declared {
    /// The words as a config would give them, for `check` and logs.
    pub(crate) fn command_line(&self) -> String {
        self.argv
            .iter()
            .map(|w| {
                if w.is_empty() || w.contains(' ') {
                    format!("\"{w}\"")
                } else {
                    w.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The declared actions and `TGKNOCK_ACTION_TIMEOUT`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Actions {
    /// In order of their names.
    pub(crate) list: Vec<Declared>,
    /// Seconds.
    pub(crate) timeout: u64,
}

impl Actions {
    pub(crate) fn find(&self, name: &str) -> Option<&Declared> {
        self.list.iter().find(|a| a.name == name)
    }

    /// `backup, restart_nginx`.
    pub(crate) fn names(&self) -> String {
        self.list
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The reply to `/run` alone.
    pub(crate) fn listing(&self) -> String {
        if self.list.is_empty() {
            return "No actions are declared. An action is a line like TGKNOCK_ACTION_RESTART_NGINX=\"/usr/bin/systemctl restart nginx\" in the config; then /run restart_nginx runs it.".into();
        }
        let mut s = String::from("Actions (/run NAME):");
        for a in &self.list {
            s.push_str(&format!("\n  {} - {}", a.name, a.command_line()));
        }
        s.push_str(&format!(
            "\nEach may run {} at most (TGKNOCK_ACTION_TIMEOUT).",
            duration::human(self.timeout)
        ));
        s
    }
}

/// Splits an action's value into words: separated by spaces, `"…"` groups a word that holds
/// spaces (no other quoting, no escapes, no shell). The first word must be an absolute path.
pub(crate) fn split_words(value: &str) -> Result<Vec<String>, String> {
    if value.chars().any(char::is_control) {
        return Err("holds a control character".into());
    }
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for c in value.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            ' ' if !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err("a double quote is not closed".into());
    }
    if in_word {
        words.push(word);
    }
    let Some(program) = words.first() else {
        return Err("is empty: give the program's absolute path and its arguments".into());
    };
    if !program.starts_with('/') {
        return Err(format!(
            "'{}' must be an absolute path (e.g. /usr/bin/systemctl); no shell looks it up",
            crate::base::text::short(program)
        ));
    }
    if words.len() > MAX_WORDS {
        return Err(format!("more than {MAX_WORDS} words"));
    }
    Ok(words)
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    Exited(i32),
    Signalled(i32),
    /// Still running at `TGKNOCK_ACTION_TIMEOUT`: its process group was killed.
    TimedOut,
    /// The program could not be started: why.
    NotStarted(String),
}

/// What a run gave.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub(crate) end: End,
    pub(crate) took: Duration,
    /// The tail of standard output and standard error, interleaved as written.
    pub(crate) output: Vec<u8>,
    /// The output's start was dropped (it was longer than what is kept).
    pub(crate) cut: bool,
    /// Processes it left running in its group were killed when it exited.
    pub(crate) left_behind: bool,
}

/// The tail of a stream, whole lines where it can.
#[derive(Default)]
struct Tail {
    bytes: Vec<u8>,
    cut: bool,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > 2 * KEEP {
            let from = self.bytes.len() - KEEP;
            self.bytes.drain(..from);
            self.cut = true;
        }
    }
}

/// How often the run is looked at while its output is quiet.
const TICK: Duration = Duration::from_millis(100);

/// Runs `action`, killing its process group at `timeout`; returns when it is over. Its
/// standard output and error are one socket (a socket, unlike a pipe, can be read with a
/// timeout, so one thread both reads and watches the clock).
pub(crate) fn run(action: &Declared, timeout: Duration) -> Run {
    let started = Instant::now();
    let (ours, child) = match spawn(action) {
        Ok(s) => s,
        Err(why) => {
            return Run {
                end: End::NotStarted(why),
                took: started.elapsed(),
                output: Vec::new(),
                cut: false,
                left_behind: false,
            };
        }
    };
    let w = watch(child, ours, started + timeout);
    let end = if w.timed_out {
        End::TimedOut
    } else {
        ending(w.status)
    };
    Run {
        end,
        took: started.elapsed(),
        output: w.tail.bytes,
        cut: w.tail.cut,
        left_behind: w.left_behind,
    }
}

/// Starts the program in its own process group, without a shell, its output one socket:
/// our end of it and the child; else why it could not start.
fn spawn(action: &Declared) -> std::result::Result<(UnixStream, Child), String> {
    let (ours, theirs) = UnixStream::pair().map_err(|e| format!("cannot make a socket: {e}"))?;
    let mut cmd = Command::new(&action.argv[0]);
    cmd.args(&action.argv[1..])
        .env_clear()
        .env("PATH", PATH)
        .current_dir("/")
        .stdin(Stdio::null());
    let t = theirs
        .try_clone()
        .map_err(|e| format!("cannot make a socket: {e}"))?;
    cmd.stdout(OwnedFd::from(t)).stderr(OwnedFd::from(theirs));
    crate::os::sys::own_group(&mut cmd);
    let spawned = cmd.spawn();
    // Our copies of the socket's other end go with `cmd`: the output ends when the
    // action's does.
    drop(cmd);
    let child = spawned.map_err(|e| format!("{}: {e}", action.argv[0]))?;
    Ok((ours, child))
}

/// What watching a run saw.
struct Watched {
    status: Option<std::io::Result<ExitStatus>>,
    timed_out: bool,
    left_behind: bool,
    tail: Tail,
}

/// Reads the output of `child` until it is over, killing its group at `deadline`.
fn watch(mut child: Child, mut ours: UnixStream, deadline: Instant) -> Watched {
    let pgid = child.id();
    let mut w = Watched {
        status: None,
        timed_out: false,
        left_behind: false,
        tail: Tail::default(),
    };
    let mut eof = false;
    // Once the program is over (exited, or killed), its output has until then to close.
    let mut drain_until: Option<Instant> = None;
    let mut buf = [0u8; 4096];
    loop {
        if w.status.is_none() {
            match child.try_wait() {
                Ok(None) => {}
                Ok(Some(s)) => {
                    w.status = Some(Ok(s));
                    if !w.timed_out {
                        // Nothing of a run outlives it: what it left in its group goes too.
                        w.left_behind = crate::os::sys::kill_group(pgid);
                    }
                    drain_until.get_or_insert(Instant::now() + DRAIN);
                }
                Err(e) => w.status = Some(Err(e)),
            }
        }
        if w.status.is_some() && eof {
            break;
        }
        let now = Instant::now();
        if w.status.is_none() && !w.timed_out && now >= deadline {
            w.timed_out = true;
            crate::os::sys::kill_group(pgid);
            drain_until = Some(now + DRAIN * 2);
        }
        // A process outside the group holds the output, or a killed one is stuck.
        if drain_until.is_some_and(|d| now >= d) {
            break;
        }
        if eof {
            // The output closed as the program ends: its exit is a moment away.
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let wait = TICK.min(deadline.saturating_duration_since(now));
        let _ = ours.set_read_timeout(Some(wait.max(Duration::from_millis(1))));
        match ours.read(&mut buf) {
            Ok(0) => eof = true,
            Ok(n) => w.tail.push(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => eof = true,
        }
    }
    w
}

/// How a run that was not timed out ended, from its wait status.
fn ending(status: Option<std::io::Result<ExitStatus>>) -> End {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(Ok(s)) => match (s.code(), s.signal()) {
            (Some(c), _) => End::Exited(c),
            (None, Some(sig)) => End::Signalled(sig),
            (None, None) => End::Exited(-1),
        },
        Some(Err(e)) => End::NotStarted(format!("cannot wait for it: {e}")),
        None => End::TimedOut,
    }
}

/// Output as a chat may show it: escape sequences, control, bidirectional and zero-width
/// characters removed, the token redacted, at most [`OUTPUT_LIMIT`] characters of its end,
/// starting at a line. `cut`: the bytes begin in the middle of the output.
pub(crate) fn shown_output(bytes: &[u8], cut: bool) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut text: &str = &text;
    if cut {
        // The first line is a piece of one (a piece of a token, maybe): drop it.
        text = text.split_once('\n').map_or("", |(_, rest)| rest);
    }
    let mut clean = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameters, then a final byte in @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ESC \.
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' {
                            chars.next_if_eq(&'\\');
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\n' => clean.push('\n'),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\r' => clean.push('\n'),
            '\t' => clean.push(' '),
            c if crate::base::text::shown(c) => clean.push(c),
            _ => {}
        }
    }
    let clean = crate::os::logging::redact(&clean);
    let clean = clean.trim_end();
    let count = clean.chars().count();
    if count <= OUTPUT_LIMIT && !cut {
        return clean.to_string();
    }
    let skip = count.saturating_sub(OUTPUT_LIMIT - 2);
    let rest: String = clean.chars().skip(skip).collect();
    let rest = match rest.split_once('\n') {
        Some((_, whole)) if skip > 0 && !whole.is_empty() => whole.to_string(),
        _ => rest,
    };
    format!("…\n{rest}")
}

/// The reply to `/run NAME`: how it ended, how long it took, the end of its output.
pub(crate) fn reply(name: &str, run: &Run, timeout: u64) -> String {
    let took = took_text(run.took);
    let mut head = match &run.end {
        End::Exited(c) => format!("{name}: exit status {c} after {took}"),
        End::Signalled(s) => format!("{name}: killed by signal {s} after {took}"),
        End::TimedOut => format!(
            "{name}: timed out after {} (TGKNOCK_ACTION_TIMEOUT); its process group was killed",
            duration::human(timeout)
        ),
        End::NotStarted(why) => format!("{name}: could not start: {why}"),
    };
    if run.left_behind {
        head.push_str("; the processes it left running were killed");
    }
    if matches!(run.end, End::NotStarted(_)) {
        return head;
    }
    let out = shown_output(&run.output, run.cut);
    if out.is_empty() {
        format!("{head}\n(no output)")
    } else {
        format!("{head}\n\n{out}")
    }
}

/// `0.4 s`, `12.0 s`, `2 min 5 s`.
fn took_text(d: Duration) -> String {
    if d < Duration::from_secs(60) {
        format!("{} s", duration::tenths(d))
    } else {
        duration::human(d.as_secs())
    }
}

/// The actions running now, by name, with when each started: at most one run of each.
#[derive(Clone, Default)]
pub(crate) struct Running(Arc<Mutex<Vec<(String, Instant)>>>);

/// A run in progress; it ends (for [`Running`]) when dropped.
pub(crate) struct Slot {
    running: Running,
    name: String,
}

impl Running {
    /// A slot for `name`, or how long ago the run in progress started.
    pub(crate) fn start(&self, name: &str) -> Result<Slot, Duration> {
        let mut list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, at)) = list.iter().find(|(n, _)| n == name) {
            return Err(at.elapsed());
        }
        list.push((name.to_string(), Instant::now()));
        Ok(Slot {
            running: self.clone(),
            name: name.to_string(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.running
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(n, _)| *n != self.name);
    }
}

/// The longest action name (`TGKNOCK_ACTION_<NAME>`).
pub(crate) const MAX_ACTION_NAME: usize = 32;

/// Whether `name` can name an action: ASCII letters, digits and `_`, at most
/// [`MAX_ACTION_NAME`] of them (what an environment variable name allows).
pub(crate) fn valid_action_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ACTION_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(v: &str) -> Result<Vec<String>, String> {
        split_words(v)
    }

    #[test]
    fn words_split_on_spaces_and_quotes_group() {
        assert_eq!(
            words("/usr/bin/systemctl restart nginx").unwrap(),
            ["/usr/bin/systemctl", "restart", "nginx"]
        );
        assert_eq!(
            words("  /usr/bin/logger   \"hello  world\" x\"y z\" \"\"").unwrap(),
            ["/usr/bin/logger", "hello  world", "xy z", ""]
        );
        assert_eq!(
            words("\"/opt/my tools/run\" a").unwrap(),
            ["/opt/my tools/run", "a"]
        );
        for (bad, why) in [
            ("", "is empty"),
            ("   ", "is empty"),
            ("systemctl restart nginx", "must be an absolute path"),
            ("/bin/echo \"open", "not closed"),
            ("/bin/echo a\tb", "control character"),
            ("/bin/echo a\nb", "control character"),
        ] {
            let e = words(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        let many = format!("/bin/echo {}", "x ".repeat(64));
        assert!(words(&many).unwrap_err().contains("more than 64"));
    }

    #[test]
    fn command_lines_read_back() {
        let a = Declared {
            name: "x".into(),
            argv: words("/usr/bin/logger \"a b\" c").unwrap(),
        };
        assert_eq!(a.command_line(), "/usr/bin/logger \"a b\" c");
        assert_eq!(words(&a.command_line()).unwrap(), a.argv);
    }

    #[test]
    fn output_is_cleaned_and_cut_to_its_end() {
        let raw = b"ok\r\n\x1b[31mred\x1b[0m\tdone\x07\n\x1b]0;title\x07bell\xff\n";
        let raw = [&raw[..], "\u{202e}x\n".as_bytes()].concat();
        assert_eq!(shown_output(&raw, false), "ok\nred done\nbell\u{fffd}\nx");
        let long: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        let out = shown_output(long.as_bytes(), false);
        assert!(out.chars().count() <= OUTPUT_LIMIT, "{}", out.len());
        assert!(out.starts_with("…\nline "), "{}", &out[..20]);
        assert!(out.ends_with("line 999"));
        let second = out.lines().nth(1).unwrap();
        assert!(
            long.contains(&format!("{second}\n")),
            "cut at a line: {second}"
        );
        // A cut buffer loses its first, partial line.
        assert_eq!(shown_output(b"ken-piece\nrest\n", true), "…\nrest");
    }

    #[test]
    fn the_token_is_never_shown() {
        crate::os::logging::add_secret("5:ActionSecretActionSecret_1234");
        let out = shown_output(b"token is 5:ActionSecretActionSecret_1234\n", false);
        assert_eq!(out, "token is 5:<redacted>");
    }

    #[test]
    fn replies_say_how_it_ended() {
        let run = |end, output: &[u8]| Run {
            end,
            took: Duration::from_millis(1234),
            output: output.to_vec(),
            cut: false,
            left_behind: false,
        };
        assert_eq!(
            reply("backup", &run(End::Exited(0), b"done\n"), 30),
            "backup: exit status 0 after 1.2 s\n\ndone"
        );
        assert_eq!(
            reply("backup", &run(End::Exited(3), b""), 30),
            "backup: exit status 3 after 1.2 s\n(no output)"
        );
        assert!(
            reply("x", &run(End::TimedOut, b"a\n"), 30)
                .starts_with("x: timed out after 30 s (TGKNOCK_ACTION_TIMEOUT)")
        );
        assert_eq!(
            reply(
                "x",
                &run(End::NotStarted("/nope: not found".into()), b""),
                30
            ),
            "x: could not start: /nope: not found"
        );
        assert_eq!(took_text(Duration::from_secs(125)), "2 min 5 s");
    }

    #[test]
    fn one_run_of_each_action_at_a_time() {
        let r = Running::default();
        let slot = r.start("a").unwrap();
        assert!(r.start("a").is_err());
        let _b = r.start("b").unwrap();
        drop(slot);
        assert!(r.start("a").is_ok());
    }
}
