//! Tests: the spec's example manifests and a table of invalid manifests.
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};

use super::*;
use crate::types::{IsolatorValue, Quantity};

const IMAGE: &[u8] = include_bytes!("../../testdata/image.json");
const POD_RUNTIME: &[u8] = include_bytes!("../../testdata/pod_runtime.json");
const POD_TEMPLATE: &[u8] = include_bytes!("../../testdata/pod_template.json");

#[test]
fn image_example_parses_and_round_trips() {
    let m = ImageManifest::from_json(IMAGE).unwrap();
    assert_eq!(m.name.as_str(), "example.com/reduce-worker");
    assert_eq!(m.label("version"), Some("1.0.0"));
    assert_eq!(m.label("os"), Some("linux"));
    let app = m.app.as_ref().unwrap();
    assert_eq!(app.exec, ["/usr/bin/reduce-worker", "--quiet"]);
    assert_eq!(
        app.event_handler("post-stop").unwrap().exec[0],
        "/usr/bin/deregister-worker"
    );
    assert_eq!(app.ports[0].count, 1);
    assert!(app.ports[0].socket_activated);
    assert_eq!(
        app.isolators[0].parsed().unwrap(),
        IsolatorValue::ResourceCpu {
            request: None,
            limit: Some(Quantity::from_millis(20))
        }
    );
    assert_eq!(
        app.isolators[1].parsed().unwrap(),
        IsolatorValue::ResourceMemory {
            request: None,
            limit: Some(Quantity::from_millis(1_000_000_000_000))
        }
    );
    assert_eq!(
        app.isolators[3].parsed().unwrap(),
        IsolatorValue::NoNewPrivileges(true)
    );
    assert_eq!(m.dependencies[0].image_id.as_deref(), Some("sha512-..."));
    assert_eq!(m.path_whitelist.len(), 5);

    let out = m.to_json();
    let again = ImageManifest::from_json(&out).unwrap();
    assert_eq!(again, m);
    // Spec keys in the output.
    let v: Value = serde_json::from_slice(&out).unwrap();
    for key in [
        "acKind",
        "acVersion",
        "name",
        "labels",
        "app",
        "dependencies",
        "pathWhitelist",
        "annotations",
    ] {
        assert!(v.get(key).is_some(), "{key}");
    }
    assert!(v["app"].get("eventHandlers").is_some());
    assert!(v["app"].get("mountPoints").is_some());
    assert!(v["app"]["ports"][0].get("socketActivated").is_some());
    assert!(v["dependencies"][0].get("imageName").is_some());
    assert!(v["dependencies"][0].get("imageID").is_some());
    // Every field of the input survives (modulo the defaulted port count).
    let mut orig: Value = serde_json::from_slice(IMAGE).unwrap();
    orig["app"]["ports"][0]["count"] = json!(1);
    assert_eq!(v, orig);
}

#[test]
fn pod_examples_parse_and_round_trip() {
    for bytes in [POD_RUNTIME, POD_TEMPLATE] {
        let p = PodManifest::from_json(bytes).unwrap();
        let out = p.to_json();
        assert_eq!(PodManifest::from_json(&out).unwrap(), p);
        let v: Value = serde_json::from_slice(&out).unwrap();
        for key in [
            "acKind",
            "acVersion",
            "apps",
            "volumes",
            "isolators",
            "annotations",
            "ports",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
    }
    let p = PodManifest::from_json(POD_RUNTIME).unwrap();
    assert_eq!(p.apps.len(), 3);
    assert_eq!(
        p.volume("dbvolume").unwrap().source.as_deref(),
        Some("/opt/tenant1/database")
    );
    assert!(p.volume("dbvolume").unwrap().is_read_only());
    assert_eq!(p.volume("buildoutput").unwrap().effective_mode(), 0o777);
    assert_eq!(
        p.app("backup").unwrap().mounts[1].volume.as_str(),
        "buildoutput"
    );
    assert!(p.validate_reified().is_ok());
    let t = PodManifest::from_json(POD_TEMPLATE).unwrap();
    assert_eq!(
        t.validate_reified().unwrap_err().to_string(),
        "apps[1].image.id: must be set"
    );
    // Serialized volumes keep their spec keys.
    let v: Value = serde_json::from_slice(&p.to_json()).unwrap();
    assert_eq!(v["volumes"][0]["readOnly"], json!(true));
    assert_eq!(
        v["apps"][0]["app"]["mountPoints"][0]["name"],
        json!("database")
    );
}

#[test]
fn go_nulls_accepted() {
    let j = br#"{"acVersion":"0.8.11","acKind":"PodManifest","apps":[{"name":"a","image":{"id":"sha512-aa","labels":null},"mounts":null,"annotations":null,"app":{"exec":["/x"],"user":"0","group":"0","environment":null,"isolators":null,"ports":null,"mountPoints":null,"eventHandlers":null,"userLabels":null}}],"volumes":null,"isolators":null,"annotations":null,"ports":null,"userAnnotations":null}"#;
    let p = PodManifest::from_json(j).unwrap();
    assert!(
        p.volumes.is_empty()
            && p.isolators.is_empty()
            && p.annotations.is_empty()
            && p.ports.is_empty()
    );
    let v: Value = serde_json::from_slice(&p.to_json()).unwrap();
    assert_eq!(v["volumes"], json!([]));
}

#[test]
fn user_annotations_and_labels_keep_their_keys_in_apps_and_pods() {
    let j = br#"{"acVersion":"0.8.11","acKind":"PodManifest","apps":[{"name":"a","image":{"id":"sha512-aa"},"app":{"exec":["/x"],"user":"0","group":"0","userAnnotations":{"k":"v"}}}],"userLabels":{"tier":"web"}}"#;
    let p = PodManifest::from_json(j).unwrap();
    let app = p.apps[0].app.as_ref().unwrap();
    assert_eq!(
        app.user_meta.annotations.get("k").map(String::as_str),
        Some("v")
    );
    assert!(app.user_meta.labels.is_empty());
    assert_eq!(
        p.user_meta.labels.get("tier").map(String::as_str),
        Some("web")
    );
    assert!(p.user_meta.annotations.is_empty());
    // Written back under the same keys; empty maps are left out.
    let v: Value = serde_json::from_slice(&p.to_json()).unwrap();
    assert_eq!(v["userLabels"], json!({"tier": "web"}));
    assert_eq!(v["apps"][0]["app"]["userAnnotations"], json!({"k": "v"}));
    assert!(v.get("userAnnotations").is_none());
    assert!(v["apps"][0]["app"].get("userLabels").is_none());
    assert_eq!(PodManifest::from_json(&p.to_json()).unwrap(), p);
}

#[test]
fn new_manifests_are_valid() {
    let m = ImageManifest::new(crate::AcIdentifier::new("example.com/x").unwrap());
    m.validate().unwrap();
    PodManifest::new().validate().unwrap();
}

/// Apply `path = value` (JSON pointer; `null` value with `remove` deletes) to a document.
fn patch(doc: &[u8], ptr: &str, value: Option<Value>) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(doc).unwrap();
    let (parent, key) = ptr.rsplit_once('/').unwrap();
    let target = v.pointer_mut(parent).unwrap();
    match (target, value) {
        (Value::Object(o), Some(val)) => {
            o.insert(key.to_string(), val);
        }
        (Value::Object(o), None) => {
            o.remove(key);
        }
        (Value::Array(a), Some(val)) => {
            let i: usize = key.parse().unwrap();
            if i == a.len() {
                a.push(val)
            } else {
                a[i] = val
            }
        }
        (Value::Array(a), None) => {
            a.remove(key.parse::<usize>().unwrap());
        }
        _ => panic!("bad pointer {ptr}"),
    }
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn invalid_image_manifests() {
    let cases: Vec<(&str, Option<Value>, &str)> = vec![
        (
            "/acKind",
            Some(json!("PodManifest")),
            r#"acKind: must be "ImageManifest", got "PodManifest""#,
        ),
        (
            "/acVersion",
            Some(json!("0.8")),
            r#"acVersion: invalid semver "0.8""#,
        ),
        ("/acVersion", None, "acVersion: must be set"),
        (
            "/name",
            Some(json!("Example.com/x")),
            r#"name: invalid ACIdentifier "Example.com/x""#,
        ),
        ("/name", Some(json!("")), "name: must be set"),
        (
            "/labels/3",
            Some(json!({"name":"name","value":"x"})),
            r#"labels[3].name: label name "name" is forbidden"#,
        ),
        (
            "/labels/3",
            Some(json!({"name":"version","value":"2"})),
            r#"labels[3].name: duplicate name "version""#,
        ),
        (
            "/labels/3",
            Some(json!({"name":"Bad_Label","value":"2"})),
            r#"labels[3].name: invalid ACIdentifier "Bad_Label""#,
        ),
        (
            "/labels/2/value",
            Some(json!("plan9")),
            r#"labels[2].value: unsupported os "plan9""#,
        ),
        (
            "/labels/1/value",
            Some(json!("x86_64")),
            r#"labels[1].value: unsupported arch "x86_64" for os "linux""#,
        ),
        ("/app/user", Some(json!("")), "app.user: must be set"),
        ("/app/group", None, "app.group: must be set"),
        (
            "/app/exec/0",
            Some(json!("")),
            "app.exec[0]: must not be empty",
        ),
        (
            "/app/eventHandlers/1/name",
            Some(json!("pre-start")),
            r#"app.eventHandlers[1].name: duplicate name "pre-start""#,
        ),
        (
            "/app/eventHandlers/1/name",
            Some(json!("on-crash")),
            r#"app.eventHandlers[1].name: unknown event handler "on-crash" (must be pre-start or post-stop)"#,
        ),
        (
            "/app/eventHandlers/0/exec",
            Some(json!([])),
            "app.eventHandlers[0].exec: must not be empty",
        ),
        (
            "/app/workingDirectory",
            Some(json!("opt/x")),
            r#"app.workingDirectory: path "opt/x" is not absolute"#,
        ),
        (
            "/app/environment/1",
            Some(json!({"name":"A=B","value":"x"})),
            r#"app.environment[1].name: invalid environment variable name "A=B""#,
        ),
        (
            "/app/environment/1",
            Some(json!({"name":"REDUCE_WORKER_DEBUG","value":"x"})),
            r#"app.environment[1].name: duplicate name "REDUCE_WORKER_DEBUG""#,
        ),
        (
            "/app/isolators/1/value/limit",
            Some(json!("12Q")),
            r#"app.isolators[1].value.limit: invalid quantity "12Q""#,
        ),
        (
            "/app/isolators/0/value/request",
            Some(json!("-1")),
            r#"app.isolators[0].value.request: invalid quantity "-1""#,
        ),
        (
            "/app/isolators/1/value",
            Some(json!("1G")),
            "app.isolators[1].value: expected an object",
        ),
        (
            "/app/isolators/2/value/set/0",
            Some(json!("CAP_FLY")),
            r#"app.isolators[2].value.set[0]: unknown capability "CAP_FLY""#,
        ),
        (
            "/app/isolators/2/value/set",
            Some(json!([])),
            "app.isolators[2].value.set: must not be empty",
        ),
        (
            "/app/isolators/3/value",
            Some(json!("yes")),
            "app.isolators[3].value: expected a boolean",
        ),
        (
            "/app/isolators/4/value/errno",
            Some(json!("eperm")),
            r#"app.isolators[4].value.errno: invalid value "eperm""#,
        ),
        (
            "/app/isolators/5",
            Some(json!({"name":"resource/memory","value":{"limit":"2G"}})),
            r#"app.isolators[5].name: isolator "resource/memory" may appear only once"#,
        ),
        (
            "/app/isolators/5",
            Some(json!({"name":"os/linux/capabilities-remove-set","value":{"set":["CAP_KILL"]}})),
            r#"app.isolators[5].name: isolator "os/linux/capabilities-remove-set" conflicts with "os/linux/capabilities-retain-set""#,
        ),
        (
            "/app/isolators/5",
            Some(json!({"name":"os/unix/sysctl","value":{"net.x":"1"}})),
            r#"app.isolators[5].name: isolator "os/unix/sysctl" not allowed in an app"#,
        ),
        (
            "/app/isolators/5",
            Some(json!({"name":"os/linux/oom-score-adj","value":1001})),
            "app.isolators[5].value: value 1001 out of range -1000..=1000",
        ),
        (
            "/app/isolators/5",
            Some(json!({"name":"resource/block-iops","value":{"limit":"100"}})),
            r#"app.isolators[5].value.default: invalid value "must be true""#,
        ),
        (
            "/app/mountPoints/0/name",
            Some(json!("Data_Base")),
            r#"app.mountPoints[0].name: invalid ACName "Data_Base""#,
        ),
        (
            "/app/mountPoints/0/path",
            Some(json!("var/lib")),
            r#"app.mountPoints[0].path: path "var/lib" is not absolute"#,
        ),
        (
            "/app/ports/0/port",
            Some(json!(70000)),
            "app.ports[0].port: port 70000 out of range 1-65535",
        ),
        (
            "/app/ports/0/port",
            Some(json!(0)),
            "app.ports[0].port: port 0 out of range 1-65535",
        ),
        (
            "/app/ports/0/count",
            Some(json!(10)),
            "app.ports[0].count: port 65544 out of range 1-65535",
        ),
        (
            "/app/ports/0/protocol",
            Some(json!("")),
            "app.ports[0].protocol: must be set",
        ),
        (
            "/dependencies/0/imageName",
            Some(json!("a//b")),
            r#"dependencies[0].imageName: invalid ACIdentifier "a//b""#,
        ),
        (
            "/dependencies/0/imageID",
            Some(json!("md5-abc")),
            r#"dependencies[0].imageID: invalid image hash "md5-abc""#,
        ),
        (
            "/dependencies/0/labels/1/name",
            Some(json!("os")),
            r#"dependencies[0].labels[1].name: duplicate name "os""#,
        ),
        (
            "/pathWhitelist/2",
            Some(json!("opt/libs")),
            r#"pathWhitelist[2]: path "opt/libs" is not absolute"#,
        ),
        (
            "/annotations/1/value",
            Some(json!("yesterday")),
            r#"annotations[1].value: invalid RFC 3339 date "yesterday""#,
        ),
        (
            "/annotations/3/value",
            Some(json!("example.com")),
            r#"annotations[3].value: invalid http(s) URL "example.com""#,
        ),
        (
            "/annotations/4/name",
            Some(json!("created")),
            r#"annotations[4].name: duplicate name "created""#,
        ),
    ];
    for (ptr, val, want) in cases {
        let mut doc = patch(IMAGE, ptr, val.clone());
        if ptr == "/app/ports/0/count" {
            doc = patch(&doc, "/app/ports/0/port", Some(json!(65535)));
        }
        match ImageManifest::from_json(&doc) {
            Err(ManifestError::Invalid(e)) => assert_eq!(e.to_string(), want, "{ptr} = {val:?}"),
            other => panic!("{ptr} = {val:?}: expected invalid, got {other:?}"),
        }
    }
}

#[test]
fn invalid_pod_manifests() {
    let cases: Vec<(&str, Option<Value>, &str)> = vec![
        (
            "/acKind",
            Some(json!("ImageManifest")),
            r#"acKind: must be "PodManifest", got "ImageManifest""#,
        ),
        (
            "/apps/1/name",
            Some(json!("reduce-worker")),
            r#"apps[1].name: duplicate name "reduce-worker""#,
        ),
        (
            "/apps/1/name",
            Some(json!("Backup")),
            r#"apps[1].name: invalid ACName "Backup""#,
        ),
        (
            "/apps/0/image/id",
            Some(json!("sha1-abc")),
            r#"apps[0].image.id: invalid image hash "sha1-abc""#,
        ),
        ("/apps/0/app/user", None, "apps[0].app.user: must be set"),
        (
            "/apps/0/app/isolators/0/value/limit",
            Some(json!("lots")),
            r#"apps[0].app.isolators[0].value.limit: invalid quantity "lots""#,
        ),
        (
            "/apps/0/mounts/0/volume",
            Some(json!("nothere")),
            r#"apps[0].mounts[0].volume: unknown volume "nothere""#,
        ),
        (
            "/apps/0/mounts/0/path",
            Some(json!("rel")),
            r#"apps[0].mounts[0].path: path "rel" is not absolute"#,
        ),
        (
            "/apps/1/mounts/1/path",
            Some(json!("/mnt/db")),
            r#"apps[1].mounts[1].path: duplicate name "/mnt/db""#,
        ),
        (
            "/apps/1/annotations/0/name",
            Some(json!("Foo")),
            r#"apps[1].annotations[0].name: invalid ACIdentifier "Foo""#,
        ),
        ("/volumes/0/source", None, "volumes[0].source: must be set"),
        (
            "/volumes/0/source",
            Some(json!("opt/x")),
            r#"volumes[0].source: path "opt/x" is not absolute"#,
        ),
        (
            "/volumes/0/mode",
            Some(json!("0755")),
            "volumes[0].mode: must not be set for a host volume",
        ),
        (
            "/volumes/0/kind",
            Some(json!("nfs")),
            r#"volumes[0].kind: unknown volume kind "nfs" (must be empty or host)"#,
        ),
        ("/volumes/0/kind", None, "volumes[0].kind: must be set"),
        (
            "/volumes/1/mode",
            Some(json!("rwx")),
            r#"volumes[1].mode: invalid mode "rwx" (must be octal like "0755")"#,
        ),
        (
            "/volumes/1/source",
            Some(json!("/x")),
            "volumes[1].source: must not be set for an empty volume",
        ),
        (
            "/volumes/1/name",
            Some(json!("dbvolume")),
            r#"volumes[1].name: duplicate name "dbvolume""#,
        ),
        (
            "/isolators/0/value/limit",
            Some(json!("4X")),
            r#"isolators[0].value.limit: invalid quantity "4X""#,
        ),
        (
            "/isolators/1",
            Some(json!({"name":"os/linux/no-new-privileges","value":true})),
            r#"isolators[1].name: isolator "os/linux/no-new-privileges" not allowed in a pod"#,
        ),
        (
            "/annotations/0/name",
            Some(json!("")),
            r#"annotations[0].name: invalid ACIdentifier """#,
        ),
        (
            "/ports",
            Some(json!([{"name":"http","hostPort":0}])),
            "ports[0].hostPort: port 0 out of range 1-65535",
        ),
        (
            "/ports",
            Some(json!([{"name":"http","hostPort":80,"hostIP":"localhost"}])),
            r#"ports[0].hostIP: invalid value "localhost""#,
        ),
    ];
    for (ptr, val, want) in cases {
        let doc = patch(POD_RUNTIME, ptr, val.clone());
        match PodManifest::from_json(&doc) {
            Err(ManifestError::Invalid(e)) => assert_eq!(e.to_string(), want, "{ptr} = {val:?}"),
            other => panic!("{ptr} = {val:?}: expected invalid, got {other:?}"),
        }
    }
}

#[test]
fn malformed_json_is_a_json_error() {
    assert!(matches!(
        ImageManifest::from_json(b"{"),
        Err(ManifestError::Json(_))
    ));
    assert!(matches!(
        ImageManifest::from_json(br#"{"acKind":"ImageManifest"}"#),
        Err(ManifestError::Json(_))
    ));
    assert!(matches!(
        PodManifest::from_json(br#"{"apps":[{"name":1}]}"#),
        Err(ManifestError::Json(_))
    ));
}
