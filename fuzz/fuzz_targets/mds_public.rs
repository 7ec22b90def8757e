//! The metadata service's public side (`mds::handler::public`), which every pod on the host
//! reaches: a request is any method, flavor header, path after the token and body a hostile
//! pod sends. Two pods are registered; the requester is pod A (its token first in the path),
//! or holds whatever token the path starts with. Whatever it sends, the answer is one of the
//! service's statuses; it never carries pod B's UUID, token or metadata (B's pod annotation,
//! its app's image annotation), unless the request itself spelled them out (an unknown app's
//! name is echoed); a stranger gets nothing but 400 or 404; and a signature the service hands
//! out is pod A's, never B's. The control, once at start: B's token does reach B's pod
//! annotation, A's does not.
#![no_main]

use std::sync::OnceLock;

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use mds::handler::{public, Request, FLAVOR_HEADER};
use mds::Registry;

const IMAGE_ID: &str = "sha512-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const A_UUID: &str = "aaaaaaaa-1111-4111-8111-aaaaaaaaaaaa";
const B_UUID: &str = "bbbbbbbb-2222-4222-8222-bbbbbbbbbbbb";
const A_TOKEN: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const B_TOKEN: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";
/// Pod B's pod annotation value and its app's image annotation value.
const B_SECRETS: [&str; 2] = ["b-pod-annotation-7f3e", "b-image-annotation-91c2"];

fn pod_manifest(app: &str, annotation: &str) -> String {
    format!(
        r#"{{"acVersion":"0.8.11","acKind":"PodManifest","apps":[
        {{"name":"{app}","image":{{"id":"{IMAGE_ID}","name":"example.com/{app}"}}}}],
        "volumes":[],"isolators":[],"annotations":[{{"name":"note","value":"{annotation}"}}],"ports":[]}}"#
    )
}

fn image_manifest(app: &str, annotation: &str) -> String {
    format!(
        r#"{{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/{app}",
           "annotations":[{{"name":"note","value":"{annotation}"}}]}}"#
    )
}

fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(|| {
        let reg = Registry::new(1);
        let pods = [
            (
                A_UUID,
                A_TOKEN,
                "web",
                "a-pod-annotation",
                "a-image-annotation",
            ),
            (B_UUID, B_TOKEN, "db", B_SECRETS[0], B_SECRETS[1]),
        ];
        for (uuid, token, app, pod_note, image_note) in pods {
            reg.register_pod(uuid, token, pod_manifest(app, pod_note).as_bytes())
                .expect("register a pod");
            reg.register_app(uuid, app, image_manifest(app, image_note).as_bytes())
                .expect("register an app");
        }
        // The control: B's token reaches B's data, so the checks below can fail.
        for (token, sees_b) in [(B_TOKEN, true), (A_TOKEN, false)] {
            let url = format!("/{token}/acMetadata/v1/pod/annotations");
            let r = public(
                &reg,
                &Request {
                    method: "GET",
                    url: &url,
                    flavor: Some(FLAVOR_HEADER.1),
                    body: b"",
                },
            );
            assert_eq!(r.status, 200);
            assert_eq!(contains(&r.body, B_SECRETS[0].as_bytes()), sees_b);
        }
        reg
    })
}

const METHODS: [&str; 6] = ["GET", "POST", "PUT", "DELETE", "HEAD", "get"];
const STATUSES: [u16; 5] = [200, 400, 403, 404, 405];

fuzz_target!(|data: &[u8]| {
    let reg = registry();
    let (head, rest) = data.split_at(data.len().min(2));
    let method = METHODS[usize::from(head.first().copied().unwrap_or(0)) % METHODS.len()];
    let flags = head.get(1).copied().unwrap_or(0);
    let flavor = match flags & 3 {
        0 => None,
        1 => Some("appcontainer"),
        _ => Some(FLAVOR_HEADER.1),
    };
    let (tail, body) = match rest.iter().position(|b| *b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let tail = String::from_utf8_lossy(tail);
    // The requester: pod A (its token first), or whoever holds the path's first segment.
    let url = match (flags >> 2) & 1 {
        0 => format!("/{A_TOKEN}{tail}"),
        _ => format!("/{tail}"),
    };
    let path = url.split('?').next().unwrap_or("");
    let token = path.trim_start_matches('/').split('/').next().unwrap_or("");
    if token == B_TOKEN {
        return; // the input spelled out B's token itself
    }
    let stranger = token != A_TOKEN;
    let req = Request {
        method,
        url: &url,
        flavor,
        body,
    };
    let resp = public(reg, &req);
    assert!(
        STATUSES.contains(&resp.status),
        "status {} for {method} {url:?}",
        resp.status
    );
    let asked = |s: &str| url.contains(s) || contains(body, s.as_bytes());
    for s in [B_UUID, B_TOKEN, B_SECRETS[0], B_SECRETS[1]] {
        if !asked(s) {
            assert!(
                !contains(&resp.body, s.as_bytes()),
                "{method} {url:?} answered with pod B's {s:?}"
            );
        }
    }
    if stranger {
        assert!(
            matches!(resp.status, 400 | 404),
            "a stranger got {} for {method} {url:?}",
            resp.status
        );
        return;
    }
    // A signature handed out is the requester's (pod A's) for the content it sent.
    if resp.status == 200 && method == "POST" && path.ends_with("/pod/hmac/sign") {
        let content = form_urlencoded::parse(body)
            .find(|(k, _)| k == "content")
            .map(|(_, v)| v.into_owned())
            .expect("a signed request named its content");
        let sig = base64::engine::general_purpose::STANDARD
            .decode(&resp.body)
            .expect("a signature is base64");
        let a = reg.by_uuid(A_UUID).expect("pod A");
        let b = reg.by_uuid(B_UUID).expect("pod B");
        assert!(a.verify(content.as_bytes(), &sig), "pod A's signature");
        assert!(!b.verify(content.as_bytes(), &sig), "never pod B's");
    }
});

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}
