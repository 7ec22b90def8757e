//! End-to-end: an OCI image made at test time with Debian's umoci and skopeo
//! (`tests/fixtures/oci-image.sh`: two layers, a whiteout, an opaque directory, a user by
//! name, entrypoint + cmd) imports from `oci:`, `oci-archive:` and `docker-archive:` to one ID
//! and runs under stage1-ns (and stage1-kvm) with the expected output, user and working
//! directory.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use rkt_tests::{skip, stderr, stdout, workspace_root, E2e};

/// What the fixture's app prints.
const WANT: &[&str] = &[
    "args:one two\n",
    "uid=1000 gid=1001\n",
    "cwd=/work\n",
    "opq=new.txt \n",
    "keep=a.txt b.txt \n",
    "gone=absent\n",
    "greeting=hello\n",
];

/// Builds the fixture under the test's scratch directory, or prints SKIP and returns None.
fn fixture(e: &E2e, test: &str) -> Option<PathBuf> {
    let have = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    for tool in ["umoci", "skopeo"] {
        if !have(tool) {
            skip(
                test,
                &format!("{tool} is not installed (ci/deps.sh installs it)"),
            );
            return None;
        }
    }
    if !std::path::Path::new("/bin/busybox").is_file() {
        skip(
            test,
            "no static /bin/busybox (busybox-static; ci/deps.sh installs it)",
        );
        return None;
    }
    let out = e.path("fixture");
    let o = Command::new("bash")
        .arg(workspace_root().join("tests/fixtures/oci-image.sh"))
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "fixture: {}", stderr(&o));
    Some(out)
}

fn check_output(o: &std::process::Output) {
    assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
    let out = stdout(o);
    for line in WANT {
        assert!(out.contains(line), "want {line:?} in {out:?}");
    }
}

#[test]
fn ns_oci_forms_share_an_id_and_run() {
    let test = "ns_oci_forms_share_an_id_and_run";
    let Some(e) = E2e::require(test) else {
        return;
    };
    let Some(fx) = fixture(&e, test) else {
        return;
    };
    // The same image with zstd layers (skopeo recompresses them; the layout's directory
    // name, which names the image, kept).
    let zstd = fx.join("zstd/oci-test");
    std::fs::create_dir_all(zstd.parent().unwrap()).unwrap();
    let o = Command::new("skopeo")
        .args(["copy", "--dest-compress-format=zstd"])
        .arg(format!("oci:{}:1.0", fx.join("oci-test").display()))
        .arg(format!("oci:{}:1.0", zstd.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "skopeo: {}", stderr(&o));
    let forms = [
        format!("oci:{}:1.0", fx.join("oci-test").display()),
        format!("oci-archive:{}:1.0", fx.join("oci-test.tar").display()),
        format!("docker-archive:{}", fx.join("docker.tar").display()),
        format!("oci:{}:1.0", zstd.display()),
    ];
    let ids: Vec<String> = forms
        .iter()
        .map(|f| {
            let o = e.run(&["fetch", f.as_str()]);
            assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
            stdout(&o).trim().to_string()
        })
        .collect();
    assert!(ids[0].starts_with("sha256-"), "{ids:?}");
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    let o = e.run(&["image", "list", "--no-legend", "--fields=name"]);
    assert_eq!(stdout(&o).trim(), "oci-test:1.0");
    // A multi-platform image in a layout (an index under the tag): its linux/amd64 entry.
    add_multi_platform_index(&fx.join("oci-test"));
    let o = e.run(&[
        "fetch",
        &format!("oci:{}:multi", fx.join("oci-test").display()),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = e.run(&["image", "cat-manifest", stdout(&o).trim()]);
    let m: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(m["app"]["workingDirectory"], "/work", "{m}");
    for f in [&forms[2], &"oci-test:1.0".to_string()] {
        let o = e.run(&["run", &e.stage1_flag(), f.as_str()]);
        check_output(&o);
    }
}

#[test]
fn kvm_oci_archive_runs() {
    let test = "kvm_oci_archive_runs";
    let Some(e) = E2e::require_kvm(test) else {
        return;
    };
    let Some(fx) = fixture(&e, test) else {
        return;
    };
    let f = format!("docker-archive:{}", fx.join("docker.tar").display());
    let o = e.run(&["run", &e.stage1_flag(), f.as_str()]);
    check_output(&o);
}

/// A real Docker registry (Debian's `docker-registry`, the distribution project's registry)
/// on a loopback port, its storage and access log under the test's directory.
struct Registry {
    child: std::process::Child,
    addr: String,
    log: PathBuf,
    storage: PathBuf,
}

impl Registry {
    /// Starts one: open, with htpasswd authentication of `user:password` pairs, or with
    /// Docker's token authentication against a token service; `None` after a SKIP line when
    /// the registry is not installed.
    fn start(e: &E2e, test: &str, tag: &str, auth: &RegistryAuth) -> Option<Registry> {
        if !std::path::Path::new("/usr/bin/docker-registry").is_file() {
            skip(
                test,
                "docker-registry is not installed (ci/deps.sh installs it)",
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = e.path(&format!("registry-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        let storage = dir.join("storage");
        let mut auth_conf = String::new();
        if let RegistryAuth::Token(t) = auth {
            auth_conf = format!(
                "auth:\n  token:\n    realm: http://{}/token\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                t.addr,
                t.cert.display()
            );
        }
        if let RegistryAuth::Htpasswd(users) = auth {
            let mut lines = String::new();
            for (u, p) in users {
                let o = Command::new("htpasswd")
                    .args(["-Bbn", u, p])
                    .output()
                    .expect("htpasswd (apache2-utils; ci/deps.sh installs it)");
                assert!(o.status.success(), "{}", stderr(&o));
                lines.push_str(stdout(&o).trim());
                lines.push('\n');
            }
            std::fs::write(dir.join("htpasswd"), lines).unwrap();
            auth_conf = format!(
                "auth:\n  htpasswd:\n    realm: rkt-test\n    path: {}\n",
                dir.join("htpasswd").display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: rkt-test\n{auth_conf}",
            storage.display()
        );
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let log = dir.join("log");
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        let t0 = std::time::Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(20),
                "the registry did not listen: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Some(Registry {
            child,
            addr,
            log,
            storage,
        })
    }

    /// Copies `src` (a skopeo reference) to `docker://ADDR/DEST` with skopeo (`extra`: more
    /// `skopeo copy` flags).
    fn push(&self, src: &str, dest: &str, creds: Option<&str>, extra: &[&str]) {
        let mut c = Command::new("skopeo");
        c.args([
            "--insecure-policy",
            "copy",
            "-q",
            "--all",
            "--dest-tls-verify=false",
        ]);
        c.args(extra);
        if let Some(cr) = creds {
            c.arg(format!("--dest-creds={cr}"));
        }
        let o = c
            .arg(src)
            .arg(format!("docker://{}/{dest}", self.addr))
            .output()
            .unwrap();
        assert!(o.status.success(), "skopeo: {}", stderr(&o));
    }

    /// How many blob downloads (`GET .../blobs/...`) the access log shows.
    fn blob_gets(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
            .count()
    }
}

/// How a test registry authenticates.
enum RegistryAuth<'a> {
    /// Not at all.
    None,
    /// htpasswd users (`Basic`).
    Htpasswd(Vec<(&'a str, &'a str)>),
    /// Docker's token authentication (`Bearer`) against this token service.
    Token(&'a TokenService),
}

/// The `service` and `issuer` of the test's token authentication.
const TOKEN_SERVICE: &str = "rkt-test-registry";
const TOKEN_ISSUER: &str = "rkt-test-issuer";

/// A token service as Docker Hub's: `GET /token?service=..&scope=..` with `Basic` credentials
/// answers `{"token": JWT}`, the JWT signed (RS256, by `openssl`) with a key whose self-signed
/// certificate the registry trusts, granting the scope asked for; anything without the right
/// credentials gets 401. Runs on a thread until dropped.
struct TokenService {
    addr: String,
    cert: PathBuf,
    /// Tokens issued.
    issued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    server: std::sync::Arc<tiny_http::Server>,
}

/// Base64 (standard alphabet with padding, or URL-safe without: JWT's).
fn b64(data: &[u8], url: bool) -> String {
    let t: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            out.push(char::from(t[((n >> (18 - 6 * i)) & 63) as usize]));
        }
        if !url {
            out.push_str(&"=".repeat(3 - c.len()));
        }
    }
    out
}

impl TokenService {
    fn start(e: &E2e, user: &str, password: &str) -> TokenService {
        let dir = e.path("token-service");
        std::fs::create_dir_all(&dir).unwrap();
        let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
        let o = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=rkt-test-token"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(o.status.success(), "openssl req: {}", stderr(&o));
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .unwrap()
            .stdout;
        let server = std::sync::Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let addr = server.server_addr().to_ip().unwrap().to_string();
        let issued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let want = format!(
            "Basic {}",
            b64(format!("{user}:{password}").as_bytes(), false)
        );
        let (srv, count) = (server.clone(), issued.clone());
        std::thread::spawn(move || {
            for req in srv.incoming_requests() {
                let authorized = req
                    .headers()
                    .iter()
                    .any(|h| h.field.equiv("Authorization") && h.value.as_str() == want);
                let url = req.url().to_string();
                let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
                let scopes: Vec<String> = query
                    .split('&')
                    .filter_map(|kv| kv.strip_prefix("scope="))
                    .map(|v| {
                        v.replace("%3A", ":")
                            .replace("%2F", "/")
                            .replace("%2C", ",")
                    })
                    .collect();
                if !authorized || !url.starts_with("/token") {
                    let _ = req.respond(tiny_http::Response::empty(401));
                    continue;
                }
                let access: Vec<serde_json::Value> = scopes
                    .iter()
                    .filter_map(|sc| {
                        let mut p = sc.splitn(3, ':');
                        let (kind, name, actions) = (p.next()?, p.next()?, p.next()?);
                        Some(serde_json::json!({
                            "type": kind, "name": name,
                            "actions": actions.split(',').collect::<Vec<_>>()
                        }))
                    })
                    .collect();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let header =
                    serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [b64(&der, false)]});
                let claims = serde_json::json!({
                    "iss": TOKEN_ISSUER, "sub": "alice", "aud": TOKEN_SERVICE,
                    "exp": now + 300, "nbf": now - 10, "iat": now,
                    "jti": format!("t{}", count.load(std::sync::atomic::Ordering::SeqCst)),
                    "access": access
                });
                let signing = format!(
                    "{}.{}",
                    b64(header.to_string().as_bytes(), true),
                    b64(claims.to_string().as_bytes(), true)
                );
                let mut c = Command::new("openssl")
                    .args(["dgst", "-sha256", "-sign"])
                    .arg(&key)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                std::io::Write::write_all(c.stdin.as_mut().unwrap(), signing.as_bytes()).unwrap();
                let sig = c.wait_with_output().unwrap().stdout;
                let jwt = format!("{signing}.{}", b64(&sig, true));
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = serde_json::json!({"token": jwt, "expires_in": 300}).to_string();
                let _ = req.respond(tiny_http::Response::from_string(body));
            }
        });
        TokenService {
            addr,
            cert,
            issued,
            server,
        }
    }

    fn issued(&self) -> usize {
        self.issued.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for TokenService {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Adds to the fixture's layout an image index whose `linux/amd64` entry is the image and
/// whose `linux/arm64` entry is a manifest of a foreign platform, tagged `multi`.
fn add_multi_platform_index(layout: &std::path::Path) {
    use sha2::Digest;
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let image = index["manifests"][0].clone();
    let mut amd64 = image.clone();
    amd64["platform"] = serde_json::json!({"os": "linux", "architecture": "amd64"});
    amd64.as_object_mut().unwrap().remove("annotations");
    let mut arm64 = amd64.clone();
    arm64["platform"]["architecture"] = "arm64".into();
    let multi = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [arm64, amd64]
    })
    .to_string();
    let hex = hex::encode(sha2::Sha256::digest(multi.as_bytes()));
    std::fs::write(layout.join("blobs/sha256").join(&hex), &multi).unwrap();
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{hex}"),
            "size": multi.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi"}
        }));
    std::fs::write(&index_path, index.to_string()).unwrap();
}

/// `docker://` against a real registry on loopback: unsigned images and plain http need their
/// `--insecure-options`; the image is fetched, named after the registry and repository, runs
/// as its `oci:` form does; a second `rkt fetch` asks for the manifest only; `rkt run` of it
/// works with the registry gone; a digest reference and an image index (its `linux/amd64`
/// entry) fetch too; a missing tag is "not found"; a layer the registry serves altered is
/// refused and stores nothing; a registry that wants a password (htpasswd's `Basic`, or
/// Docker's `Bearer` tokens from a token service) gets the `dockerAuth` credentials of
/// `auth.d`, and without them the error says what is missing.
#[test]
fn ns_docker_registry_fetch_run_revalidate() {
    let test = "ns_docker_registry_fetch_run_revalidate";
    let Some(e) = E2e::require(test) else {
        return;
    };
    let Some(fx) = fixture(&e, test) else {
        return;
    };
    let layout = fx.join("oci-test");
    add_multi_platform_index(&layout);
    let Some(reg) = Registry::start(&e, test, "open", &RegistryAuth::None) else {
        return;
    };
    reg.push(
        &format!("oci:{}:1.0", layout.display()),
        "test/app:1.0",
        None,
        &[],
    );
    reg.push(
        &format!("oci:{}:multi", layout.display()),
        "test/multi:2",
        None,
        &[],
    );
    reg.push(
        &format!("oci:{}:1.0", layout.display()),
        "test/zstd:1",
        None,
        &["--dest-compress-format=zstd"],
    );
    // Docker's own manifest format (schema 2), as most registries serve.
    reg.push(
        &format!("oci:{}:1.0", layout.display()),
        "test/v2s2:1",
        None,
        &["--format=v2s2"],
    );
    let url = format!("docker://{}/test/app:1.0", reg.addr);
    // `E2e::run` passes `--insecure-options=image`; these choose their own.
    let rkt = |args: &[String]| {
        let o = Command::new(&e.rkt)
            .arg(format!("--dir={}", e.dir().display()))
            .args(args)
            .output()
            .unwrap();
        eprintln!("rkt {args:?}: {}{}", stdout(&o), stderr(&o));
        o
    };
    let fetch = |opts: &str, extra: &[&str], r: &str| {
        let mut args = vec![format!("--insecure-options={opts}"), "fetch".to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(r.to_string());
        rkt(&args)
    };
    // Refused without the insecure options, with rkt's exit codes.
    let o = fetch("none", &[], &url);
    assert_eq!(
        o.status.code(),
        Some(pod_abi::exit::UNSIGNED_IMAGE),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("--insecure-options=image"),
        "{}",
        stderr(&o)
    );
    let o = fetch("image", &[], &url);
    assert_ne!(o.status.code(), Some(0), "https to a plain http registry");
    assert_eq!(reg.blob_gets(), 0);

    let o = fetch("image,http", &[], &url);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    assert!(id.starts_with("sha256-"), "{id}");
    let gets = reg.blob_gets();
    assert_eq!(gets, 3, "config and two layers");
    let o = e.run(&["image", "list", "--no-legend", "--fields=name"]);
    let name = format!("{}/test/app:1.0", reg.addr.replace(':', "-"));
    assert_eq!(stdout(&o).trim(), name);
    // Again: the manifest is asked for, nothing more is downloaded.
    let o = fetch("image,http", &[], &url);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), id);
    assert_eq!(reg.blob_gets(), gets);

    // A Docker schema 2 manifest: the same image as its OCI form (the name aside).
    let o = fetch(
        "image,http",
        &[],
        &format!("docker://{}/test/v2s2:1", reg.addr),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = e.run(&["image", "cat-manifest", stdout(&o).trim()]);
    let m: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(m["app"]["workingDirectory"], "/work", "{m}");
    // An index: its linux/amd64 image.
    let o = fetch(
        "image,http",
        &[],
        &format!("docker://{}/test/multi:2", reg.addr),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // zstd layers, as `--dest-compress-format=zstd` pushes them.
    let o = fetch(
        "image,http",
        &[],
        &format!("docker://{}/test/zstd:1", reg.addr),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = e.run(&["image", "cat-manifest", stdout(&o).trim()]);
    let m: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(m["app"]["workingDirectory"], "/work", "{m}");
    // A digest reference.
    let manifest_hex = {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let o = fetch(
        "image,http",
        &[],
        &format!("docker://{}/test/app@{manifest_hex}", reg.addr),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // A tag the registry does not have.
    let o = fetch(
        "image,http",
        &[],
        &format!("docker://{}/test/app:9.9", reg.addr),
    );
    assert_eq!(
        o.status.code(),
        Some(pod_abi::exit::IMAGE_NOT_FOUND),
        "{}",
        stderr(&o)
    );

    // A layer altered in the registry's storage: refused, nothing stored.
    let before = stdout(&e.run(&["image", "list", "--no-legend", "--full"]));
    let blobs = reg.storage.join("docker/registry/v2/blobs/sha256");
    let mut layer = None;
    for d in std::fs::read_dir(&blobs).unwrap().flatten() {
        for b in std::fs::read_dir(d.path()).unwrap().flatten() {
            let data = b.path().join("data");
            let bytes = std::fs::read(&data).unwrap();
            if bytes.starts_with(&[0x1f, 0x8b]) {
                layer = Some((data, bytes));
            }
        }
    }
    let (data, mut bytes) = layer.expect("a gzip layer in the registry");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    let o = fetch("image,http", &["--no-store"], &url);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("digest"), "{}", stderr(&o));
    assert_eq!(
        stdout(&e.run(&["image", "list", "--no-legend", "--full"])),
        before
    );

    // rkt run (pull policy new) with the registry gone: the stored image.
    drop(reg);
    let o = rkt(&[
        "--insecure-options=image,http".into(),
        "run".into(),
        e.stage1_flag(),
        url.clone(),
    ]);
    check_output(&o);

    // A registry that wants a password.
    let Some(locked) = Registry::start(
        &e,
        test,
        "auth",
        &RegistryAuth::Htpasswd(vec![("alice", "s3cret")]),
    ) else {
        return;
    };
    locked.push(
        &format!("oci:{}:1.0", layout.display()),
        "team/app:1.0",
        Some("alice:s3cret"),
        &[],
    );
    let url = format!("docker://{}/team/app:1.0", locked.addr);
    let o = fetch("image,http", &[], &url);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("dockerAuth"), "{}", stderr(&o));
    // rkt's dockerAuth file for `registries`, then the fetch of `url` with it.
    let fetch_with_credentials = |registries: &[&str], url: &str| -> std::process::Output {
        let conf = e.path("conf");
        std::fs::create_dir_all(conf.join("auth.d")).unwrap();
        std::fs::write(
            conf.join("auth.d/registry.json"),
            serde_json::json!({
                "rktKind": "dockerAuth", "rktVersion": "v1",
                "registries": registries, "credentials": {"user": "alice", "password": "s3cret"}
            })
            .to_string(),
        )
        .unwrap();
        let o = rkt(&[
            format!("--local-config={}", conf.display()),
            "--insecure-options=image,http".into(),
            "fetch".into(),
            url.to_string(),
        ]);
        o
    };
    let o = fetch_with_credentials(&[&locked.addr], &url);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    drop(locked);

    // Docker's token authentication (Docker Hub's, quay's): the registry's Bearer challenge
    // sends rkt to the token service, which wants the credentials.
    let tokens = TokenService::start(&e, "alice", "s3cret");
    let Some(bearer) = Registry::start(&e, test, "token", &RegistryAuth::Token(&tokens)) else {
        return;
    };
    bearer.push(
        &format!("oci:{}:1.0", layout.display()),
        "team/app:1.0",
        Some("alice:s3cret"),
        &[],
    );
    let pushed = tokens.issued();
    assert!(pushed > 0, "skopeo went through the token service");
    let url = format!("docker://{}/team/app:1.0", bearer.addr);
    let o = fetch("image,http", &[], &url);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("token service"), "{}", stderr(&o));
    // The token service is another host:port: the registry's credentials go there only when
    // its dockerAuth entry lists it too.
    let o = fetch_with_credentials(&[&bearer.addr], &url);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains(&format!("its token service {} is not", tokens.addr)),
        "{}",
        stderr(&o)
    );
    let o = fetch_with_credentials(&[&bearer.addr, &tokens.addr], &url);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(tokens.issued(), pushed + 1, "one token for the whole fetch");
}
