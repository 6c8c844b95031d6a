//! A Mailpit of a test's own: the stack's binary (`scripts/stack up` builds it) on free ports
//! with a fresh database, so chaos, rejected recipients, TLS and outages touch no other test.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clinic::smoke::mail::{MailpitMessage, messages};

/// A Mailpit of the test's own: the stack's binary, a fresh database, free ports.
pub struct Mailpit {
    child: Option<std::process::Child>,
    pub smtp_port: u16,
    http_port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn mailpit_binary() -> PathBuf {
    let cache = std::env::var_os("CLINIC_STACK_CACHE").map_or_else(
        || PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/clinic-stack"),
        PathBuf::from,
    );
    std::fs::read_dir(cache.join("bin"))
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("mailpit-"))
        })
        .expect("Mailpit is installed by `scripts/stack up`; run it first")
}

impl Mailpit {
    /// Accepts recipients at `example.org` only (others get a 550), with chaos available.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// The same with more of Mailpit's flags (TLS).
    pub fn start_with(args: &[&str]) -> Self {
        let mut mailpit = Self {
            child: None,
            smtp_port: free_port(),
            http_port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        };
        mailpit.resume();
        mailpit
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Starts it (again) on the same ports and database.
    pub fn resume(&mut self) {
        let child = std::process::Command::new(mailpit_binary())
            .arg("--database")
            .arg(self.dir.path().join("mailpit.db"))
            .args(["--smtp", &format!("127.0.0.1:{}", self.smtp_port)])
            .args(["--listen", &format!("127.0.0.1:{}", self.http_port)])
            .args(["--smtp-allowed-recipients", r"@example\.org$"])
            .args([
                "--max",
                "10000",
                "--disable-version-check",
                "--enable-chaos",
            ])
            .args(&self.args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting Mailpit");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.http_port)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", self.smtp_port)).is_err()
        {
            assert!(Instant::now() < deadline, "Mailpit did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Gone, as a crashed mail server is.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Answers `RCPT TO` with a 451 `percent` of the time.
    pub async fn chaos(&self, percent: u32) {
        reqwest::Client::new()
            .put(format!("{}/api/v1/chaos", self.url()))
            .json(&serde_json::json!({ "Recipient": { "ErrorCode": 451, "Probability": percent } }))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("setting Mailpit's chaos");
    }

    /// Every message to an address of `domain_token` (all recipients of a run share it).
    pub async fn received(&self, token: &str) -> Vec<MailpitMessage> {
        messages(&self.url(), &format!("to:{token}"), 5_000)
            .await
            .expect("Mailpit answers")
    }
}

impl Drop for Mailpit {
    fn drop(&mut self) {
        self.kill();
    }
}
