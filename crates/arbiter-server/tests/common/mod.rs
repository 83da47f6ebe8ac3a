//! The test harness: the real server on a loopback port and an HTTP client for it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    dead_code,
    reason = "a test harness; each test file uses part of it"
)]

use std::fs;
use std::path::{Path, PathBuf};

use arbiter_server::{App, Durability, Options};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::oneshot;

pub const ADMIN: &str = "test-admin-token";

/// Polls `check` until it holds or `within` has passed (file events and the log writer
/// run on their own time); says whether it held.
pub async fn eventually<F, Fut>(within: std::time::Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

pub const SECOND: std::time::Duration = std::time::Duration::from_secs(1);

pub fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/agents-and-pipelines")
}

pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Guards the pack's decision endpoints with the PEP token `secret` (its hash goes into
/// `[server] pep_tokens`); returns `arbiter.toml` as it was before.
pub fn add_pep_token(pack: &Path, secret: &[u8]) -> String {
    use sha2::Digest;
    let hash = format!("sha256:{}", hex::encode(sha2::Sha256::digest(secret)));
    let config = fs::read_to_string(pack.join("arbiter.toml")).unwrap();
    fs::write(
        pack.join("arbiter.toml"),
        format!("{config}\n[server]\npep_tokens = [\"{hash}\"]\n"),
    )
    .unwrap();
    config
}

pub struct Server {
    pub base: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    pub pack: PathBuf,
    pub data: PathBuf,
    pub _dirs: tempfile::TempDir,
}

impl Server {
    pub async fn start(durability: Durability) -> Server {
        let dirs = tempfile::tempdir().unwrap();
        let pack = dirs.path().join("pack");
        copy_dir(&example(), &pack);
        let data = dirs.path().join("data");
        Self::start_in(dirs, pack, data, durability).await
    }

    pub async fn start_in(
        dirs: tempfile::TempDir,
        pack: PathBuf,
        data: PathBuf,
        durability: Durability,
    ) -> Server {
        Self::start_with(dirs, pack, data, |options| options.durability = durability).await
    }

    /// Starts with the test's own options (the admin token is always [`ADMIN`]).
    pub async fn start_with(
        dirs: tempfile::TempDir,
        pack: PathBuf,
        data: PathBuf,
        configure: impl FnOnce(&mut Options),
    ) -> Server {
        let mut options = Options::new(&pack, &data);
        configure(&mut options);
        options.admin_token = Some(ADMIN.to_owned());
        let (app, _) = App::start(options).await.unwrap_or_else(|e| panic!("{e}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(arbiter_server::serve(app, listener, async {
            let _ = stopped.await;
        }));
        Server {
            base,
            client: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
            pack,
            data,
            _dirs: dirs,
        }
    }

    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    pub async fn metrics(&self) -> String {
        let url = format!("{}/metrics", self.base);
        self.client
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn post(
        &self,
        path: &str,
        body: &Value,
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body, headers)
    }

    pub async fn raw(&self, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        (
            status,
            response.json().await.unwrap_or(Value::Null),
            headers,
        )
    }
}
