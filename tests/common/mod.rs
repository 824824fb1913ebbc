//! Shared by the process-level HTTP tests: starts the real `quiver` binary on an ephemeral
//! loopback port and talks to it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Server {
    pub port: u16,
    pub child: Child,
    pub base: String,
}

impl Server {
    /// Starts `quiver` with its storage under `dir` and extra environment variables.
    pub fn start(dir: &Path, extra_env: &[(&str, &str)]) -> Server {
        Self::start_with_args(dir, extra_env, &[])
    }

    /// Starts `quiver` with command-line arguments too.
    pub fn start_with_args(dir: &Path, extra_env: &[(&str, &str)], args: &[&str]) -> Server {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_quiver"));
        cmd.args(args);
        cmd.current_dir(dir)
            .env("QDRANT__SERVICE__HOST", "127.0.0.1")
            .env("QDRANT__SERVICE__HTTP_PORT", port.to_string())
            .env("QDRANT__STORAGE__STORAGE_PATH", dir.join("storage"))
            .env("QDRANT__LOG_LEVEL", "ERROR")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn quiver");
        let s = Server {
            port,
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while s.call("GET", "/readyz", None).0 != 200 {
            assert!(Instant::now() < deadline, "server did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    pub fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .new_agent()
    }

    /// Sends raw bytes; returns the status and the body parsed as JSON (Null when not JSON).
    pub fn raw(&self, method: &str, path: &str, body: Option<&[u8]>, headers: &[(&str, &str)]) -> (u16, Value) {
        let uri = format!("{}{}", self.base, path);
        let mut req = ureq::http::Request::builder().method(method).uri(&uri);
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            req = req.header("content-type", "application/json");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let result = match body {
            Some(b) => Self::agent().run(req.body(b.to_vec()).unwrap()),
            None => Self::agent().run(req.body(()).unwrap()),
        };
        match result {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let text = resp.body_mut().read_to_string().unwrap_or_default();
                (status, serde_json::from_str(&text).unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let bytes = body.map(|b| b.to_string().into_bytes());
        self.raw(method, path, bytes.as_deref(), &[])
    }

    pub fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method, path, body);
        assert_eq!(status, 200, "{method} {path}: {v}");
        assert_eq!(v["status"], "ok", "{v}");
        assert!(v["time"].is_number());
        v["result"].clone()
    }

    /// Announces a body of `len` bytes, sends only its first bytes, and reads the answer: the
    /// server must refuse by the declared length, without waiting for the whole body.
    pub fn oversized(&self, method: &str, path: &str, len: usize) -> (u16, Value) {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(self.base.trim_start_matches("http://")).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n{{"
        );
        tcp.write_all(head.as_bytes()).unwrap();
        let mut resp = Vec::new();
        let _ = tcp.read_to_end(&mut resp);
        let text = String::from_utf8_lossy(&resp);
        let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    /// Sends SIGTERM (the `kill` command's default) and waits for the exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(sent.success(), "SIGTERM delivered");
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts Qdrant's error envelope with the expected status.
pub fn assert_error(status: u16, v: &Value, expected: u16, ctx: &str) {
    assert_eq!(status, expected, "{ctx}: {v}");
    assert!(
        v["status"]["error"].as_str().is_some_and(|m| !m.is_empty()),
        "{ctx}: error envelope: {v}"
    );
    assert!(v["time"].is_number(), "{ctx}: {v}");
}
