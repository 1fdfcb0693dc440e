//! A test environment: a scratch directory, the fake Bot API, the fake iptables, and the
//! settings to run the real binary against them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{FakeApi, OWNER, SECRET, TOKEN};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The binary under test: `TGKNOCK_TEST_BIN` or Cargo's build, run through
/// `TGKNOCK_TEST_RUNNER` (e.g. `qemu-arm-static`) when set.
pub fn command() -> Command {
    let bin = std::env::var("TGKNOCK_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_tgknock").to_string());
    let mut c = match std::env::var("TGKNOCK_TEST_RUNNER") {
        Ok(r) if !r.is_empty() => {
            let mut parts = r.split_whitespace();
            let mut c = Command::new(parts.next().unwrap());
            c.args(parts).arg(bin);
            c
        }
        _ => Command::new(bin),
    };
    // The binary must see only what the test gives it.
    for (k, _) in std::env::vars() {
        if k.starts_with("TGKNOCK_")
            || k.ends_with("_PROXY")
            || k.ends_with("_proxy")
            || k == "NOTIFY_SOCKET"
            || k.starts_with("WATCHDOG_")
        {
            c.env_remove(k);
        }
    }
    c
}

/// Under `make coverage`, `LLVM_PROFILE_FILE=…`: where the instrumented binary writes what
/// it ran, for a program that gets an environment of its own (pam_exec passes PAM's only),
/// so that its run is counted too. None otherwise.
pub fn coverage_env() -> Option<String> {
    std::env::var("LLVM_PROFILE_FILE")
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| format!("LLVM_PROFILE_FILE={v}"))
}

pub struct Env {
    pub dir: PathBuf,
    pub api: FakeApi,
    pub vars: Vec<(String, String)>,
}

impl Env {
    /// A fresh environment: fake API, fake iptables, owner allowed, 2 s polls, trace logs.
    pub fn new() -> Env {
        let api = FakeApi::start();
        Self::with_api(api)
    }

    pub fn with_api(api: FakeApi) -> Env {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("tgknock-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        super::fake_fw::install(&dir);
        let vars = vec![
            ("TGKNOCK_TOKEN".into(), TOKEN.into()),
            ("TGKNOCK_ALLOWED_USERS".into(), OWNER.to_string()),
            ("TGKNOCK_API_URL".into(), api.url()),
            ("TGKNOCK_POLL_TIMEOUT".into(), "2s".into()),
            (
                "TGKNOCK_STATE_DIR".into(),
                dir.join("state").display().to_string(),
            ),
            (
                "TGKNOCK_IPTABLES".into(),
                dir.join("bin/iptables").display().to_string(),
            ),
            (
                "TGKNOCK_IP6TABLES".into(),
                dir.join("bin/ip6tables").display().to_string(),
            ),
            // Never the host's real nft: `auto` falls back to it when iptables is missing.
            (
                "TGKNOCK_NFT".into(),
                dir.join("bin/no-nft").display().to_string(),
            ),
            ("TGKNOCK_PROXY".into(), String::new()),
            ("RUST_LOG".into(), "trace".into()),
        ];
        Env { dir, api, vars }
    }

    /// Sets (or with an empty value, keeps empty) a variable for every run.
    pub fn set(&mut self, key: &str, value: &str) -> &mut Env {
        self.vars.retain(|(k, _)| k != key);
        self.vars.push((key.into(), value.into()));
        self
    }

    pub fn unset(&mut self, key: &str) -> &mut Env {
        self.vars.retain(|(k, _)| k != key);
        self
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = command();
        c.args(args);
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c.stdin(Stdio::null());
        c
    }

    /// Runs a console command to completion; checks no output holds the token.
    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().expect("run tgknock");
        assert_no_secret(&String::from_utf8_lossy(&out.stdout));
        assert_no_secret(&String::from_utf8_lossy(&out.stderr));
        out
    }

    /// Starts `tgknock run`, its output to a file in the scratch directory.
    pub fn spawn(&self) -> Daemon {
        self.spawn_with(&["run"])
    }

    /// Starts the daemon with these arguments (`run --config …`).
    pub fn spawn_with(&self, args: &[&str]) -> Daemon {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let log = self.dir.join(format!("daemon-{n}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let child = self
            .command(args)
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn tgknock run");
        Daemon {
            child: Some(child),
            log,
        }
    }

    /// Starts `tgknock run` and waits until it polls (its first `getUpdates` after start).
    pub fn start(&self) -> Daemon {
        let before = self.api.requests("getUpdates").len();
        let d = self.spawn();
        super::wait_for(30, "the daemon's first getUpdates", || {
            (self.api.requests("getUpdates").len() > before).then_some(())
        });
        d.check_secret();
        d
    }

    /// The openings of the saved state (an empty object when there are none).
    pub fn openings(&self) -> serde_json::Map<String, serde_json::Value> {
        self.state()["openings"]
            .as_object()
            .cloned()
            .unwrap_or_default()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn state(&self) -> serde_json::Value {
        std::fs::read_to_string(self.state_dir().join("state.json"))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// The fake kernel's rules of one family: INPUT then tgknock's chain.
    pub fn rules(&self, family: u8) -> String {
        let d = self.dir.join(format!("fw/v{family}"));
        let input = std::fs::read_to_string(d.join("INPUT")).unwrap_or_default();
        let chain = std::fs::read_to_string(d.join("TGKNOCK")).unwrap_or_default();
        format!("{input}{chain}")
    }

    /// Whether a gate drops new connections from everyone else in a family: its DROP rule
    /// is there (closed, or open to some only), and no RETURN of it lets everyone through
    /// (an opening to everyone whose deadline the kernel keeps: `-m time … -j RETURN`).
    pub fn drops(&self, family: u8, gate: &str) -> bool {
        let tag = format!("tgknock-gate:{gate} ");
        let rules = self.rules(family);
        let mine: Vec<&str> = rules.lines().filter(|l| l.contains(&tag)).collect();
        mine.iter().any(|l| l.ends_with("-j DROP"))
            && !mine
                .iter()
                .any(|l| l.ends_with("-j RETURN") && !l.contains(" -s "))
    }

    pub fn calls(&self) -> String {
        std::fs::read_to_string(self.dir.join("fw/calls.log")).unwrap_or_default()
    }

    /// Number of restore transactions so far.
    pub fn restores(&self) -> usize {
        self.calls()
            .lines()
            .filter(|l| l.starts_with("iptables-restore") || l.starts_with("ip6tables-restore"))
            .count()
    }

    /// Makes a fake tool fail with `code` and `message` (always, or once).
    pub fn fail(&self, tool: &str, code: i32, message: &str, once: bool) {
        let name = if once {
            format!("fail-once-{tool}")
        } else {
            format!("fail-{tool}")
        };
        std::fs::write(
            self.dir.join("fw").join(name),
            format!("{code} {message}\n"),
        )
        .unwrap();
    }

    /// Holds the next listing (`-S`) by the fake `tool` until [`Env::release`].
    pub fn hold(&self, tool: &str) {
        std::fs::write(self.dir.join("fw").join(format!("hold-{tool}")), "").unwrap();
    }

    /// Whether a listing by `tool` is being held now.
    pub fn held(&self, tool: &str) -> bool {
        let prefix = format!("held-{tool}.");
        std::fs::read_dir(self.dir.join("fw"))
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            })
            .unwrap_or(false)
    }

    /// Lets a held listing of `tool` go.
    pub fn release(&self, tool: &str) {
        let prefix = format!("held-{tool}.");
        for e in std::fs::read_dir(self.dir.join("fw")).unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    pub fn heal(&self, tool: &str) {
        let _ = std::fs::remove_file(self.dir.join("fw").join(format!("fail-{tool}")));
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("test files kept in {}", self.dir.display());
        }
    }
}

/// A running `tgknock run`; killed when dropped.
pub struct Daemon {
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits for a line of output containing `needle`.
    pub fn wait_log(&self, needle: &str, secs: u64) {
        super::wait_for(secs, &format!("daemon output {needle:?}"), || {
            self.output().contains(needle).then_some(())
        });
        self.check_secret();
    }

    /// Whether it exited, and how.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().unwrap().try_wait().unwrap()
    }

    pub fn wait_exit(&mut self, secs: u64) -> std::process::ExitStatus {
        let status = super::wait_for(secs, "the daemon to exit", || self.try_exit());
        self.check_secret();
        status
    }

    /// SIGKILL, like a crash or a power cut.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.check_secret();
    }

    pub fn check_secret(&self) {
        assert_no_secret(&self.output());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !std::thread::panicking() {
            self.check_secret();
        } else {
            eprintln!(
                "--- daemon output ({}) ---\n{}",
                self.log.display(),
                self.output()
            );
        }
    }
}

/// Fails if `text` holds the token's secret, whole or in pieces of 12 characters or more
/// (a hex dump of a request splits it over lines).
pub fn assert_no_secret(text: &str) {
    assert!(
        !text.contains(SECRET),
        "the token's secret appears in output:\n{text}"
    );
    for i in 0..=SECRET.len() - 12 {
        let piece = &SECRET[i..i + 12];
        if let Some(at) = text.find(piece) {
            let line = text[..at].rsplit('\n').next().unwrap_or("");
            let rest = text[at..].split('\n').next().unwrap_or("");
            panic!("a piece of the token's secret ({piece:?}) appears in output: {line}{rest}");
        }
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
