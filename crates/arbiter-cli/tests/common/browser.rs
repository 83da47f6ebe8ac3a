//! A headless browser for the tests that look at a page (the HTML report, the dashboard):
//! Debian's `chromium` driven through Debian's `chromedriver` (WebDriver, with fantoccini),
//! both installed by `.ci/browser.sh`. The driver listens on a loopback port it picks; the
//! browser resolves no name but `localhost`, so a page that fetches anything from outside
//! fails to load it, and that is a console error.
//!
//! [`Browser::start`] opens one session (about a second: reuse it within a test). Every
//! call waits at most [`WITHIN`] and fails the test past it; dropping the [`Browser`] ends
//! the session and kills the driver and the browser, a failing test included. The calls
//! block: use them from a plain `#[test]`, not inside a tokio runtime.
//!
//! Console errors (`console.error` calls, uncaught exceptions and promise rejections,
//! resources that failed to load) are read from the driver's browser log by
//! [`Browser::console_errors`], from the session's start, whatever the page did before a
//! script of the test could run.

use std::ffi::OsString;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use super::WITHIN;

/// A viewport size in CSS pixels (the page's `innerWidth` × `innerHeight`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

/// A laptop's viewport, the size a session starts with.
pub const LAPTOP: Size = Size {
    width: 1280,
    height: 800,
};

/// A phone's viewport (an iPhone 12 to 15 held upright).
pub const PHONE: Size = Size {
    width: 390,
    height: 844,
};

/// Where a page element is and how large, from `getBoundingClientRect` (CSS pixels,
/// relative to the viewport).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

/// One cookie the browser holds for the current page's site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    pub name: String,
    pub value: String,
    pub path: Option<String>,
    pub http_only: bool,
    pub secure: bool,
    /// `Strict`, `Lax` or `None`, as the browser reports it.
    pub same_site: Option<String>,
}

/// One entry of the browser's console log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// `SEVERE` (errors), `WARNING`, `INFO` or `DEBUG`.
    pub level: String,
    /// `console-api` (a `console.*` call), `javascript` (an uncaught exception), `network`
    /// (a failed load), …
    pub source: String,
    pub message: String,
}

/// Where the browser and its driver are: `ARBITER_CHROMIUM` and `ARBITER_CHROMEDRIVER`
/// (set by `.ci/browser.sh`), else Debian's paths. The error says how to install them.
pub fn binaries() -> Result<(PathBuf, PathBuf), String> {
    Ok((
        binary(
            std::env::var_os("ARBITER_CHROMIUM"),
            "ARBITER_CHROMIUM",
            "/usr/bin/chromium",
            "Chromium (Debian's `chromium`)",
        )?,
        binary(
            std::env::var_os("ARBITER_CHROMEDRIVER"),
            "ARBITER_CHROMEDRIVER",
            "/usr/bin/chromedriver",
            "chromedriver (Debian's `chromium-driver`)",
        )?,
    ))
}

/// `set` (the value of `var`) when given, else `default`; it must exist.
pub fn binary(
    set: Option<OsString>,
    var: &str,
    default: &str,
    what: &str,
) -> Result<PathBuf, String> {
    let path = set
        .clone()
        .map_or_else(|| PathBuf::from(default), PathBuf::from);
    if path.is_file() {
        return Ok(path);
    }
    let looked = match set {
        Some(_) => format!("{var} = {}", path.display()),
        None => format!("{var} is unset and {default} does not exist"),
    };
    Err(format!(
        "{what} is needed for this browser test and was not found ({looked}). Install it and \
         export its location with `source .ci/browser.sh` (what .ci/run does: apt-get install \
         chromium chromium-driver, as root), then run the tests again"
    ))
}

/// `path` (absolute) as a `file://` URL, its bytes outside the unreserved set escaped.
pub fn file_url(path: &Path) -> String {
    let path = std::path::absolute(path).expect("an absolute path");
    let mut url = String::from("file://");
    for byte in path.as_os_str().as_encoded_bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                url.push(char::from(*byte));
            }
            _ => url.push_str(&format!("%{byte:02X}")),
        }
    }
    url
}

/// Where [`Browser::screenshot`] writes: `ARBITER_SCREENSHOTS` when set, else
/// `screenshots/` under Cargo's scratch directory for integration tests.
pub fn screenshots_dir() -> PathBuf {
    std::env::var_os("ARBITER_SCREENSHOTS").map_or_else(
        || Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots"),
        PathBuf::from,
    )
}

/// A headless Chromium session, killed with its driver when dropped.
pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    /// `http://127.0.0.1:PORT`, the driver.
    driver_url: String,
    session: String,
    /// Log entries read from the driver (which forgets what it hands out) and not yet
    /// taken by [`Browser::take_console`].
    log: Vec<LogEntry>,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("driver_url", &self.driver_url)
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl Browser {
    /// Starts chromedriver on a loopback port and a headless Chromium session in it, with
    /// a [`LAPTOP`] viewport. Fails the test, saying to run `.ci/browser.sh`, when either
    /// is not installed.
    pub fn start() -> Browser {
        let (chromium, chromedriver) = binaries().unwrap_or_else(|message| panic!("{message}"));
        let mut driver = Command::new(&chromedriver)
            // Port 0: it picks a free one, and says which. Without `--allowed-ips` it
            // listens on loopback only.
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // Its own process group, so that Drop can kill the browser it starts too.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", chromedriver.display()));
        let stdout = BufReader::new(driver.stdout.take().expect("piped"));
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { return };
                let _ = send.send(line);
            }
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut browser = Browser {
            runtime,
            client: None,
            driver,
            driver_url: String::new(),
            session: String::new(),
            log: Vec::new(),
        };
        // "ChromeDriver was started successfully on port 41235."
        let deadline = Instant::now() + WITHIN;
        let port = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("chromedriver did not say its port within {WITHIN:?}"));
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                break rest.trim_end_matches('.').trim().to_owned();
            }
        };
        browser.driver_url = format!("http://127.0.0.1:{port}");
        // It says so just before it listens.
        while std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on port {port} within {WITHIN:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let capabilities = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": { "pageLoad": 10_000, "script": 10_000, "implicit": 0 },
            "goog:loggingPrefs": { "browser": "ALL" },
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    // Runs as root in CI, where Chromium's sandbox cannot start.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-extensions",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-features=Translate,MediaRouter,OptimizationHints",
                    "--hide-scrollbars",
                    "--force-device-scale-factor=1",
                    "--lang=en-US",
                    "--no-proxy-server",
                    // Loopback only: any other name fails to resolve.
                    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
                    format!("--window-size={},{}", LAPTOP.width, LAPTOP.height),
                ],
            },
        });
        let capabilities = capabilities.as_object().cloned().expect("an object");
        let url = browser.driver_url.clone();
        let client = browser.within("start a browser session", async move {
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities)
                .connect(&url)
                .await
        });
        browser.session = browser
            .within("read the session id", client.session_id())
            .expect("a session id");
        browser.client = Some(client);
        browser.set_size(LAPTOP);
        browser
    }

    /// Runs `what` on the browser's runtime; past [`WITHIN`], or on an error, the test
    /// fails naming `doing`.
    fn within<T, E: std::fmt::Display>(
        &self,
        doing: &str,
        what: impl Future<Output = Result<T, E>>,
    ) -> T {
        match self
            .runtime
            .block_on(async { tokio::time::timeout(WITHIN, what).await })
        {
            Ok(Ok(value)) => value,
            Ok(Err(e)) => panic!("browser: could not {doing}: {e}"),
            Err(_) => panic!("browser: could not {doing} within {WITHIN:?}"),
        }
    }

    /// The driver's process id, which is also the id of the process group of the driver
    /// and the browser it started.
    pub fn driver_pid(&self) -> u32 {
        self.driver.id()
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("a session")
    }

    /// Opens `url` (`file://…` or `http://127.0.0.1:PORT/…`) and waits for its `load`
    /// event.
    pub fn goto(&self, url: &str) {
        self.within(&format!("open {url}"), self.client().goto(url));
    }

    /// Opens the file at `path`.
    pub fn open_file(&self, path: &Path) {
        self.goto(&file_url(path));
    }

    /// The current page's URL.
    pub fn url(&self) -> String {
        self.within("read the URL", self.client().current_url())
            .to_string()
    }

    /// Runs `script` (a function body: `return` gives the value) in the page; its value as
    /// JSON. A script that throws fails the test.
    pub fn eval(&self, script: &str) -> Value {
        self.within(
            &format!("run {script:?}"),
            self.client().execute(script, Vec::new()),
        )
    }

    /// The box of every element `selector` matches, in document order.
    pub fn boxes(&self, selector: &str) -> Vec<Rect> {
        let found = self.within(
            &format!("measure {selector:?}"),
            self.client().execute(
                "return Array.from(document.querySelectorAll(arguments[0])).map(e => { \
                   const r = e.getBoundingClientRect(); \
                   return [r.x, r.y, r.width, r.height]; })",
                vec![json!(selector)],
            ),
        );
        let found: Vec<[f64; 4]> = serde_json::from_value(found).expect("boxes");
        found
            .into_iter()
            .map(|[x, y, width, height]| Rect {
                x,
                y,
                width,
                height,
            })
            .collect()
    }

    /// The box of every `svg` element (the report's and the dashboard's charts).
    pub fn svg_boxes(&self) -> Vec<Rect> {
        self.boxes("svg")
    }

    /// The text of the first element `selector` matches, waiting for it.
    pub fn text(&self, selector: &str) -> String {
        let element = self.wait_for(selector);
        self.within(&format!("read {selector:?}"), element.text())
    }

    /// The first element `selector` matches, polled for until it is there.
    pub fn wait_for(&self, selector: &str) -> fantoccini::elements::Element {
        self.within(
            &format!("find {selector:?}"),
            self.client()
                .wait()
                .at_most(WITHIN)
                .for_element(Locator::Css(selector)),
        )
    }

    /// Polls `script` (a function body) until it returns `true`.
    pub fn wait_until(&self, script: &str) {
        let deadline = Instant::now() + WITHIN;
        while self.eval(script) != Value::Bool(true) {
            assert!(
                Instant::now() < deadline,
                "browser: {script:?} did not become true within {WITHIN:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types `text` into the input `selector` matches, after clearing it.
    pub fn fill(&self, selector: &str, text: &str) {
        let input = self.wait_for(selector);
        self.within(&format!("clear {selector:?}"), input.clear());
        self.within(&format!("type into {selector:?}"), input.send_keys(text));
    }

    /// Clicks the element `selector` matches.
    pub fn click(&self, selector: &str) {
        let element = self.wait_for(selector);
        self.within(&format!("click {selector:?}"), element.click());
    }

    /// Submits the form `selector` matches with its submit button (as a user would, so
    /// its `submit` handlers run), then waits until the page has left the current URL, or
    /// reloaded it, and loaded.
    pub fn submit(&self, selector: &str) {
        let form = self.within(
            &format!("find the form {selector:?}"),
            self.client().form(Locator::Css(selector)),
        );
        // A marker the next page will not have.
        self.eval("window.__arbiterBeforeSubmit = true; return null");
        self.within(&format!("submit {selector:?}"), form.submit());
        self.wait_until(
            "return window.__arbiterBeforeSubmit === undefined && document.readyState === 'complete'",
        );
    }

    /// The cookies the browser holds for the current page's site, HttpOnly ones included.
    pub fn cookies(&self) -> Vec<Cookie> {
        let cookies = self.within("read the cookies", self.client().get_all_cookies());
        cookies
            .into_iter()
            .map(|c| Cookie {
                name: c.name().to_owned(),
                value: c.value().to_owned(),
                path: c.path().map(str::to_owned),
                http_only: c.http_only().unwrap_or(false),
                secure: c.secure().unwrap_or(false),
                same_site: c.same_site().map(|s| s.to_string()),
            })
            .collect()
    }

    /// The cookie `name`, if the browser holds it for the current page's site.
    pub fn cookie(&self, name: &str) -> Option<Cookie> {
        self.cookies().into_iter().find(|c| c.name == name)
    }

    /// Sets the viewport (not the window) to `size`, and checks that the page sees it.
    pub fn set_size(&self, size: Size) {
        let client = self.client();
        let mut window = size;
        for _ in 0..3 {
            self.within(
                &format!("resize to {window:?}"),
                client.set_window_size(window.width, window.height),
            );
            let seen = self.viewport();
            if seen == size {
                return;
            }
            // The window's frame, if it has one, is outside the viewport.
            window = Size {
                width: (window.width + size.width).saturating_sub(seen.width),
                height: (window.height + size.height).saturating_sub(seen.height),
            };
        }
        panic!(
            "browser: the viewport is {:?}, not {size:?}",
            self.viewport()
        );
    }

    /// The page's viewport (`innerWidth` × `innerHeight`).
    pub fn viewport(&self) -> Size {
        let seen = self.eval("return [window.innerWidth, window.innerHeight]");
        let [width, height]: [u32; 2] = serde_json::from_value(seen).expect("a size");
        Size { width, height }
    }

    /// Writes a PNG of the viewport to `NAME.png` under [`screenshots_dir`] (created if
    /// need be), and returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                && !name.starts_with('.'),
            "a screenshot's name is a plain file name: {name:?}"
        );
        let png = self.within("take a screenshot", self.client().screenshot());
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Every console entry since the last call (or the session's start), of any level.
    pub fn take_console(&mut self) -> Vec<LogEntry> {
        self.read_log();
        std::mem::take(&mut self.log)
    }

    /// The errors (level `SEVERE`) among the console entries since the last call to this
    /// or [`Browser::take_console`]: `console.error` calls, uncaught exceptions and
    /// promise rejections, resources that failed to load. Other levels are dropped.
    pub fn console_errors(&mut self) -> Vec<LogEntry> {
        self.take_console()
            .into_iter()
            .filter(|e| e.level == "SEVERE")
            .collect()
    }

    /// Fails the test, listing them, when the page logged console errors since the last
    /// look.
    pub fn assert_no_console_errors(&mut self) {
        let errors = self.console_errors();
        assert!(
            errors.is_empty(),
            "the page at {} logged console errors: {errors:#?}",
            self.url()
        );
    }

    /// Moves what the driver has logged into `self.log`. chromedriver's own endpoint (not
    /// in the W3C protocol, so not in fantoccini).
    fn read_log(&mut self) {
        let client = reqwest::blocking::Client::builder()
            .timeout(WITHIN)
            .build()
            .unwrap();
        let response = client
            .post(format!(
                "{}/session/{}/se/log",
                self.driver_url, self.session
            ))
            .json(&json!({ "type": "browser" }))
            .send()
            .unwrap_or_else(|e| panic!("browser: could not read the console log: {e}"));
        let status = response.status();
        let body: Value = response.json().expect("a JSON answer");
        assert!(status.is_success(), "browser: the console log: {body}");
        let entries = body["value"].as_array().expect("a list of log entries");
        self.log.extend(entries.iter().map(|e| LogEntry {
            level: e["level"].as_str().unwrap_or_default().to_owned(),
            source: e["source"].as_str().unwrap_or_default().to_owned(),
            message: e["message"].as_str().unwrap_or_default().to_owned(),
        }));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Ends the session: chromedriver quits the browser.
            let _ = self.runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), client.close()).await
            });
        }
        // Whatever is left of the driver and the browser: the driver's process group.
        if let Some(group) = i32::try_from(self.driver.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
