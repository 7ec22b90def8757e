//! Support for the store/fetch/image integration tests: run the real `rkt` binary against a
//! temporary `--dir`, build real ACIs, and serve them from a real HTTP server on 127.0.0.1.

#![allow(dead_code)]

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use appc::aci::{AciBuilder, Compression};
use appc::schema::{Dependency, Label};
use appc::{AcIdentifier, ImageManifest};

/// Path of the `rkt` binary under test.
pub fn rkt_bin() -> &'static str {
    env!("CARGO_BIN_EXE_rkt")
}

/// A command running `rkt --dir <dir> args...`.
pub fn rkt_cmd(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(rkt_bin());
    c.arg(format!("--dir={}", dir.display())).args(args);
    c.stdin(Stdio::null());
    c
}

/// Runs `rkt --dir <dir> args...` to completion.
pub fn rkt(dir: &Path, args: &[&str]) -> Output {
    rkt_cmd(dir, args).output().expect("run rkt")
}

/// stdout as a trimmed string.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// stderr as a string.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Asserts success and returns trimmed stdout.
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "rkt failed: {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// A manifest named `name` with `labels`, an app running /bin/true, and `deps`.
pub fn manifest(name: &str, labels: &[(&str, &str)], deps: &[&str]) -> ImageManifest {
    let mut m = ImageManifest::new(AcIdentifier::new(name).expect("valid name"));
    m.labels = labels
        .iter()
        .map(|(k, v)| Label {
            name: AcIdentifier::new(*k).expect("label"),
            value: v.to_string(),
        })
        .collect();
    m.dependencies = deps
        .iter()
        .map(|d| Dependency {
            image_name: AcIdentifier::new(*d).expect("dep name"),
            image_id: None,
            labels: Vec::new(),
            size: None,
        })
        .collect();
    m
}

/// Builds an ACI with `files` (path in rootfs, contents), gzip-compressed if `gzip`.
pub fn build_aci(m: &ImageManifest, files: &[(&str, &[u8])], gzip: bool) -> Vec<u8> {
    let c = if gzip {
        Compression::Gzip
    } else {
        Compression::None
    };
    let mut b = AciBuilder::new(Vec::new(), c, m).expect("builder");
    for (p, data) in files {
        b.add_file(p, 0o644, data).expect("add file");
    }
    b.finish().expect("finish")
}

/// A simple gzip ACI named `name` (version label `version`) with one file holding `content`.
pub fn simple_aci(name: &str, version: &str, content: &str) -> Vec<u8> {
    let m = manifest(
        name,
        &[("version", version), ("os", "linux"), ("arch", "amd64")],
        &[],
    );
    build_aci(&m, &[("etc/content", content.as_bytes())], true)
}

/// Writes `data` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).expect("write file");
    p
}

/// `gzip -dc <file> | <tool>` with the real tools; returns the hex digest.
pub fn gunzip_digest(file: &Path, tool: &str) -> String {
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -dc '{}' | {tool}", file.display()))
        .output()
        .expect("run gzip");
    assert!(o.status.success(), "gzip -dc | {tool} failed");
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// All blob files in the store.
pub fn blobs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let root = dir.join("cas/blob/sha256");
    if let Ok(shards) = std::fs::read_dir(root) {
        for s in shards.flatten() {
            if let Ok(files) = std::fs::read_dir(s.path()) {
                out.extend(files.flatten().map(|f| f.path()));
            }
        }
    }
    out
}

/// Lines of `rkt image list --no-legend --full`.
pub fn image_rows(dir: &Path) -> Vec<String> {
    let o = rkt(dir, &["image", "list", "--no-legend", "--full"]);
    ok(&o)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// What the test server answers.
#[derive(Clone, Default)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// Stream the body in chunks of this many bytes with this delay between them.
    pub slow: Option<(usize, Duration)>,
    /// Counts as a full image download.
    pub is_download: bool,
}

impl Reply {
    /// 200 with `body`.
    pub fn ok(body: Vec<u8>) -> Reply {
        Reply {
            status: 200,
            body,
            ..Default::default()
        }
    }
    /// An empty reply with `status`.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            ..Default::default()
        }
    }
    /// Adds a header.
    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
    /// Marks the reply as an image download.
    pub fn download(mut self) -> Reply {
        self.is_download = true;
        self
    }
}

/// One request as the handler sees it.
pub struct Req {
    /// The HTTP method (`GET`, `HEAD`).
    pub method: String,
    /// The URL path with query.
    pub url: String,
    /// Request headers (name lower-cased).
    pub headers: Vec<(String, String)>,
}

impl Req {
    /// A header's value.
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// A real HTTP server on 127.0.0.1 counting requests and full downloads.
pub struct TestServer {
    /// The port.
    pub port: u16,
    server: Arc<tiny_http::Server>,
    /// Requests received.
    pub requests: Arc<AtomicUsize>,
    /// Replies marked as downloads that were sent.
    pub downloads: Arc<AtomicUsize>,
    threads: Vec<thread::JoinHandle<()>>,
}

struct SlowReader {
    data: Vec<u8>,
    pos: usize,
    chunk: usize,
    delay: Duration,
}

impl Read for SlowReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.data.len() {
            return Ok(0);
        }
        if self.pos > 0 {
            thread::sleep(self.delay);
        }
        let n = self.chunk.min(buf.len()).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl TestServer {
    /// Starts a server with 8 worker threads calling `handler`.
    pub fn start(handler: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> TestServer {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind"));
        let port = server.server_addr().to_ip().expect("ip").port();
        let handler = Arc::new(handler);
        let requests = Arc::new(AtomicUsize::new(0));
        let downloads = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        for _ in 0..8 {
            let (server, handler, requests, downloads) = (
                server.clone(),
                handler.clone(),
                requests.clone(),
                downloads.clone(),
            );
            threads.push(thread::spawn(move || {
                for rq in server.incoming_requests() {
                    requests.fetch_add(1, Ordering::SeqCst);
                    let req = Req {
                        method: rq.method().as_str().to_string(),
                        url: rq.url().to_string(),
                        headers: rq
                            .headers()
                            .iter()
                            .map(|h| {
                                (
                                    h.field.as_str().as_str().to_ascii_lowercase(),
                                    h.value.as_str().to_string(),
                                )
                            })
                            .collect(),
                    };
                    let reply = handler(&req);
                    let headers: Vec<tiny_http::Header> = reply
                        .headers
                        .iter()
                        .filter_map(|(k, v)| {
                            tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).ok()
                        })
                        .collect();
                    let len = reply.body.len();
                    let reader: Box<dyn Read + Send> = match reply.slow {
                        Some((chunk, delay)) => Box::new(SlowReader {
                            data: reply.body,
                            pos: 0,
                            chunk,
                            delay,
                        }),
                        None => Box::new(io::Cursor::new(reply.body)),
                    };
                    let resp = tiny_http::Response::new(
                        tiny_http::StatusCode(reply.status),
                        headers,
                        reader,
                        Some(len),
                        None,
                    );
                    if rq.respond(resp).is_ok() && reply.is_download {
                        downloads.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }));
        }
        let port = tls_rejecting_front(port);
        TestServer {
            port,
            server,
            requests,
            downloads,
            threads,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Requests so far.
    pub fn request_count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Full downloads so far.
    pub fn download_count(&self) -> usize {
        self.downloads.load(Ordering::SeqCst)
    }
}

/// Listens on a new port and forwards plain-HTTP connections to `backend`; connections that
/// start with a TLS handshake are closed at once, as a real http-only server rejects them
/// (tiny_http itself would wait for a request line forever). Returns the new port.
fn tls_rejecting_front(backend: u16) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind front");
    let port = l.local_addr().expect("addr").port();
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(client) = c else { continue };
            thread::spawn(move || {
                let mut first = [0u8; 1];
                if client.peek(&mut first).is_err() || first[0] == 0x16 {
                    return;
                }
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", backend)) else {
                    return;
                };
                let (mut c2, mut s2) = match (client.try_clone(), server.try_clone()) {
                    (Ok(c), Ok(s)) => (c, s),
                    _ => return,
                };
                let up = thread::spawn(move || {
                    let _ = io::copy(&mut c2, &mut s2);
                    let _ = s2.shutdown(std::net::Shutdown::Write);
                });
                let (mut client, mut server) = (client, server);
                let _ = io::copy(&mut server, &mut client);
                let _ = client.shutdown(std::net::Shutdown::Both);
                let _ = up.join();
            });
        }
    });
    port
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.server.unblock();
        for _ in 1..self.threads.len() {
            self.server.unblock();
        }
    }
}
