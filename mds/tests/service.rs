//! The metadata service over real sockets: registration on a unix socket (the client), the
//! public API on TCP loopback, every endpoint the ACE validator reads, hostile requests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use mds::client::Client;
use mds::server::{self, Side};
use mds::Registry;

const UUID: &str = "6f1f3b43-2a3b-4c5d-8e9f-0a1b2c3d4e5f";
const IMAGE_ID: &str = "sha512-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn pod_manifest() -> String {
    format!(
        r#"{{"acVersion":"0.8.11","acKind":"PodManifest","apps":[
        {{"name":"main","image":{{"id":"{IMAGE_ID}","name":"example.com/main"}},
          "annotations":[{{"name":"lorem","value":"pod-wins"}},{{"name":"pod-only","value":"x"}}]}},
        {{"name":"side","image":{{"id":"{IMAGE_ID}"}}}}],
        "volumes":[],"isolators":[],"annotations":[{{"name":"pod","value":"annot"}}],"ports":[]}}"#
    )
}

fn image_manifest() -> &'static str {
    r#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/main",
       "annotations":[{"name":"created","value":"2026-11-30T00:00:00Z"},{"name":"lorem","value":"ipsum"}]}"#
}

struct Svc {
    _dir: tempfile::TempDir,
    client: Client,
    addr: SocketAddr,
    servers: Vec<Arc<tiny_http::Server>>,
    public: Arc<server::PublicServer>,
}

impl Drop for Svc {
    fn drop(&mut self) {
        for s in &self.servers {
            s.unblock();
        }
        self.public.unblock();
    }
}

fn start() -> Svc {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("run/mds.sock");
    let reg = Arc::new(Registry::new(18112));
    let r = Arc::new(server::bind_registration(&sock).unwrap());
    let p = Arc::new(server::bind_public("127.0.0.1:0".parse().unwrap()).unwrap());
    let addr = p.local_addr().unwrap();
    server::serve(r.clone(), reg.clone(), Side::Registration).unwrap();
    server::serve_public(p.clone(), reg).unwrap();
    Svc {
        _dir: dir,
        client: Client::new(sock),
        addr,
        servers: vec![r],
        public: p,
    }
}

/// One HTTP request on loopback; (status, content type, body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    flavor: bool,
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    if flavor {
        req += "Metadata-Flavor: AppContainer\r\n";
    }
    if !body.is_empty() {
        req += "Content-Type: application/x-www-form-urlencoded\r\n";
    }
    req += &format!("Content-Length: {}\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let mut h = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut h);
    let n = match r.parse(&out).unwrap() {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => panic!("partial answer"),
    };
    let ct = r
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-type"))
        .map(|h| String::from_utf8_lossy(h.value).into_owned())
        .unwrap_or_default();
    (
        r.code.unwrap(),
        ct,
        String::from_utf8_lossy(&out[n..]).into_owned(),
    )
}

fn registered() -> (Svc, String) {
    let svc = start();
    let token = mds::new_token().unwrap();
    svc.client
        .register_pod(UUID, &token, pod_manifest().as_bytes())
        .unwrap();
    svc.client
        .register_app(UUID, "main", image_manifest().as_bytes())
        .unwrap();
    (svc, token)
}

#[test]
fn every_endpoint_answers_with_the_spec_content_type() {
    let (svc, token) = registered();
    let base = format!("/{token}/acMetadata/v1");
    let get = |p: &str| http(svc.addr, "GET", &format!("{base}{p}"), true, "");

    let (st, ct, body) = get("/pod/uuid");
    assert_eq!(
        (st, ct.as_str(), body.as_str()),
        (200, "text/plain; charset=us-ascii", UUID)
    );

    let (st, ct, body) = get("/pod/manifest");
    assert_eq!((st, ct.as_str()), (200, "application/json"));
    assert_eq!(body, pod_manifest(), "the manifest is served as registered");

    let (st, ct, body) = get("/pod/annotations");
    assert_eq!((st, ct.as_str()), (200, "application/json"));
    assert_eq!(body, r#"[{"name":"pod","value":"annot"}]"#);

    let (st, _, body) = get("/apps/main/image/id");
    assert_eq!((st, body.as_str()), (200, IMAGE_ID));
    let (st, ct, body) = get("/apps/main/image/manifest");
    assert_eq!(
        (st, ct.as_str(), body.as_str()),
        (200, "application/json", image_manifest())
    );

    // image annotations, pod-app annotations winning in place, new ones appended
    let (st, _, body) = get("/apps/main/annotations");
    assert_eq!(st, 200);
    assert_eq!(
        body,
        r#"[{"name":"created","value":"2026-11-30T00:00:00Z"},{"name":"lorem","value":"pod-wins"},{"name":"pod-only","value":"x"}]"#
    );
    // an app whose image was not registered, an app not in the pod
    assert_eq!(get("/apps/side/annotations").0, 404);
    assert_eq!(get("/apps/nope/image/id").0, 404);
}

#[test]
fn sign_then_verify_and_forgeries_get_403() {
    let (svc, token) = registered();
    let base = format!("/{token}/acMetadata/v1");
    let (st, ct, sig) = http(
        svc.addr,
        "POST",
        &format!("{base}/pod/hmac/sign"),
        true,
        "content=Old+MacDonald",
    );
    assert_eq!((st, ct.as_str()), (200, "text/plain; charset=us-ascii"));
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&sig)
        .unwrap();
    assert_eq!(raw.len(), 64, "HMAC-SHA512");
    let enc: String = form_urlencoded::byte_serialize(sig.as_bytes()).collect();
    let verify = |content: &str, uuid: &str| {
        let body = format!("content={content}&uuid={uuid}&signature={enc}");
        http(
            svc.addr,
            "POST",
            &format!("{base}/pod/hmac/verify"),
            true,
            &body,
        )
    };
    let (st, ct, _) = verify("Old+MacDonald", UUID);
    assert_eq!((st, ct.as_str()), (200, "text/plain; charset=us-ascii"));
    assert_eq!(verify("Old+MacDonalds", UUID).0, 403, "other content");
    assert_eq!(
        verify("Old+MacDonald", "00000000-0000-0000-0000-000000000000").0,
        403
    );
    // another pod's key gives another signature
    let t2 = mds::new_token().unwrap();
    let u2 = "11111111-2222-3333-4444-555555555555";
    svc.client
        .register_pod(u2, &t2, pod_manifest().as_bytes())
        .unwrap();
    assert_eq!(verify("Old+MacDonald", u2).0, 403);
}

#[test]
fn flavor_header_token_and_methods_are_checked() {
    let (svc, token) = registered();
    let p = format!("/{token}/acMetadata/v1/pod/uuid");
    assert_eq!(
        http(svc.addr, "GET", &p, false, "").0,
        400,
        "no Metadata-Flavor"
    );
    let other = mds::new_token().unwrap();
    let (st, _, body) = http(
        svc.addr,
        "GET",
        &format!("/{other}/acMetadata/v1/pod/uuid"),
        true,
        "",
    );
    assert_eq!(st, 404);
    assert!(!body.contains(UUID));
    assert_eq!(
        http(
            svc.addr,
            "GET",
            &format!("/{UUID}/acMetadata/v1/pod/uuid"),
            true,
            ""
        )
        .0,
        404
    );
    assert_eq!(http(svc.addr, "DELETE", &p, true, "").0, 405);
    assert_eq!(http(svc.addr, "GET", "/", true, "").0, 404);
    let big = "content=".to_string() + &"a".repeat(70 * 1024);
    let (st, _, _) = http(
        svc.addr,
        "POST",
        &format!("/{token}/acMetadata/v1/pod/hmac/sign"),
        true,
        &big,
    );
    assert_eq!(st, 413);
}

#[test]
fn registration_is_validated_and_unregistration_ends_access() {
    let svc = start();
    let token = mds::new_token().unwrap();
    let m = pod_manifest();
    let refused = |r: Result<u16, mds::MdsError>| match r.map(drop) {
        Err(mds::MdsError::Refused { status, .. }) => status,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        refused(svc.client.register_pod("not-a-uuid", &token, m.as_bytes())),
        400
    );
    assert_eq!(
        refused(svc.client.register_pod(UUID, "abcd", m.as_bytes())),
        400,
        "short token"
    );
    assert_eq!(
        refused(
            svc.client
                .register_pod(UUID, &UUID.replace('-', ""), m.as_bytes())
        ),
        400,
        "the UUID as token"
    );
    assert_eq!(
        refused(svc.client.register_pod(UUID, &token, b"{not json")),
        400
    );
    svc.client.register_pod(UUID, &token, m.as_bytes()).unwrap();
    assert_eq!(
        refused(
            svc.client
                .register_app(UUID, "ghost", image_manifest().as_bytes())
                .map(|()| 0)
        ),
        404
    );
    assert_eq!(
        refused(svc.client.register_pod(
            "11111111-2222-3333-4444-555555555555",
            &token,
            m.as_bytes()
        )),
        409,
        "a token belongs to one pod"
    );
    let p = format!("/{token}/acMetadata/v1/pod/uuid");
    assert_eq!(http(svc.addr, "GET", &p, true, "").0, 200);
    assert!(svc.client.unregister_pod(UUID).unwrap());
    assert!(!svc.client.unregister_pod(UUID).unwrap());
    assert_eq!(http(svc.addr, "GET", &p, true, "").0, 404);
}

#[test]
fn registration_socket_is_root_only_and_a_second_service_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let svc = start();
    let mode = std::fs::metadata(svc.client.socket())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let dir = svc.client.socket().parent().unwrap();
    assert_eq!(
        std::fs::metadata(dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    match server::bind_registration(svc.client.socket()) {
        Err(mds::MdsError::Conflict(m)) => assert!(m.contains("already running"), "{m}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
}
