//! The image config mapped to an appc image manifest (see docs/images.md for the table).

use std::collections::BTreeMap;

use appc::schema::{Annotation, App, EnvVar, Label, MountPoint, Port};
use appc::{AcIdentifier, AcName, ImageManifest};
use oci_spec::image::ImageConfiguration;

use crate::reference::{Format, Reference};
use crate::OciError;

/// Derives a valid AC identifier: lower-case; a character outside `a-z 0-9 - . _ ~ /`
/// becomes `-`; a run of separators keeps its first; separators at either end are dropped;
/// `image` if nothing is left.
pub(crate) fn sanitize_identifier(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else {
            let sep = if matches!(c, '-' | '.' | '_' | '~' | '/') {
                c
            } else {
                '-'
            };
            if !out.is_empty() && !out.ends_with(['-', '.', '_', '~', '/']) {
                out.push(sep);
            }
        }
    }
    while out.ends_with(['-', '.', '_', '~', '/']) {
        out.pop();
    }
    if out.is_empty() {
        out.push_str("image");
    }
    out
}

/// Splits `name:tag` (the `:` after the last `/`); None when there is no tag.
fn split_tag(r: &str) -> Option<(&str, &str)> {
    let (n, t) = r.rsplit_once(':')?;
    (!t.contains('/') && !n.is_empty() && !t.is_empty()).then_some((n, t))
}

/// The image's name and `version` label: from a `name:tag` reference (a Docker RepoTag, or
/// an OCI ref name that is a full reference), else the file or directory name (without
/// `.tar`) with the OCI tag (default `latest`).
pub(crate) fn name_and_version(
    r: &Reference,
    ref_name: Option<&str>,
    warnings: &mut Vec<String>,
) -> (AcIdentifier, String) {
    let (raw_name, version) = match ref_name.and_then(split_tag) {
        Some((n, t)) => (n.to_string(), t.to_string()),
        None => {
            let base = r
                .path
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let base = match r.format {
                Format::OciDir => base,
                _ => base
                    .strip_suffix(".tar")
                    .map(str::to_string)
                    .unwrap_or(base),
            };
            let version = match (r.format, ref_name) {
                (Format::DockerArchive, _) | (_, None) => "latest".to_string(),
                (_, Some(t)) => t.to_string(),
            };
            (base, version)
        }
    };
    let name = sanitize_identifier(&raw_name);
    if name != raw_name {
        warnings.push(format!(
            "image name {raw_name:?} is not a valid appc name: using {name:?}"
        ));
    }
    let id = AcIdentifier::new(name).unwrap_or_else(|_| {
        AcIdentifier::new("image").unwrap_or_else(|_| unreachable_identifier())
    });
    (id, version)
}

/// `image` is a valid identifier; this keeps the code free of `unwrap`.
fn unreachable_identifier() -> AcIdentifier {
    serde_json::from_str("\"image\"").unwrap_or_else(|_| std::process::abort())
}

/// appc's names for OCI architectures (`arm64` -> `aarch64`, `arm` v7 -> `armv7l`, ...).
fn appc_arch(arch: &str, variant: Option<&str>) -> String {
    match (arch, variant) {
        ("386", _) => "i386".into(),
        ("arm64", _) => "aarch64".into(),
        ("arm", Some("v6")) => "armv6l".into(),
        ("arm", _) => "armv7l".into(),
        (a, _) => a.into(),
    }
}

/// The primary gid of `user` (a name or uid) in `passwd` text.
fn primary_gid(passwd: &[u8], user: &str) -> Option<u32> {
    let text = std::str::from_utf8(passwd).ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        let (name, uid, gid) = (f.first()?, f.get(2)?, f.get(3)?);
        (*name == user || *uid == user).then(|| gid.parse().ok())?
    })
}

fn label(name: &str, value: &str) -> Option<Label> {
    Some(Label {
        name: AcIdentifier::new(name).ok()?,
        value: value.to_string(),
    })
}

/// A unique ACName derived from `raw` (`-2`, `-3`... on collisions).
fn unique_name(raw: &str, used: &mut Vec<String>) -> AcName {
    let base = AcName::sanitize(raw).as_str().to_string();
    let mut n = base.clone();
    let mut i = 2;
    while used.contains(&n) {
        n = format!("{base}-{i}");
        i += 1;
    }
    used.push(n.clone());
    AcName::sanitize(&n)
}

/// The appc manifest for `config`. `passwd` is the image's final `/etc/passwd` (the group of
/// a user given without one is its primary group there, else 0, as Docker does).
pub(crate) fn manifest(
    config: &ImageConfiguration,
    name: &AcIdentifier,
    version: &str,
    passwd: Option<&[u8]>,
    warnings: &mut Vec<String>,
) -> Result<ImageManifest, OciError> {
    let mut m = ImageManifest::new(name.clone());
    let os = config.os().to_string();
    let arch = appc_arch(
        &config.architecture().to_string(),
        config.variant().as_deref(),
    );
    m.labels.extend(label("version", version));
    m.labels.extend(label("os", &os));
    m.labels.extend(label("arch", &arch));
    let c = config.config().clone().unwrap_or_default();
    let mut exec: Vec<String> = c.entrypoint().clone().unwrap_or_default();
    exec.extend(c.cmd().clone().unwrap_or_default());
    let mut app = App::default();
    let (user, group) = match c.user().as_deref().unwrap_or("") {
        "" => ("0".to_string(), "0".to_string()),
        u => match u.split_once(':') {
            Some((u, g)) => (u.to_string(), g.to_string()),
            None => {
                let gid = passwd.and_then(|p| primary_gid(p, u)).unwrap_or(0);
                (u.to_string(), gid.to_string())
            }
        },
    };
    app.user = user;
    app.group = group;
    for kv in c.env().clone().unwrap_or_default() {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        if k.is_empty() {
            warnings.push(format!("environment entry {kv:?} has no name: dropped"));
            continue;
        }
        app.environment.push(EnvVar {
            name: k.to_string(),
            value: v.to_string(),
        });
    }
    if let Some(wd) = c.working_dir().as_deref().filter(|w| !w.is_empty()) {
        if wd.starts_with('/') {
            app.working_directory = Some(wd.to_string());
        } else {
            warnings.push(format!("WorkingDir {wd:?} is relative: using \"/{wd}\""));
            app.working_directory = Some(format!("/{wd}"));
        }
    }
    let mut used = Vec::new();
    let mut ports = c.exposed_ports().clone().unwrap_or_default();
    ports.sort();
    for p in ports {
        let (num, proto) = p.split_once('/').unwrap_or((p.as_str(), "tcp"));
        let Ok(port) = num.parse::<u32>() else {
            warnings.push(format!("exposed port {p:?} is not a port number: dropped"));
            continue;
        };
        if port == 0 || port > 65535 || !matches!(proto, "tcp" | "udp") {
            warnings.push(format!("exposed port {p:?} is not a tcp/udp port: dropped"));
            continue;
        }
        app.ports.push(Port {
            name: unique_name(&format!("{proto}-{port}"), &mut used),
            protocol: proto.to_string(),
            port,
            count: 1,
            socket_activated: false,
        });
    }
    let mut volumes = c.volumes().clone().unwrap_or_default();
    volumes.sort();
    for v in volumes {
        if !v.starts_with('/') {
            warnings.push(format!("volume {v:?} is not an absolute path: dropped"));
            continue;
        }
        app.mount_points.push(MountPoint {
            name: unique_name(&format!("volume{v}"), &mut used),
            path: v,
            read_only: false,
        });
    }
    let labels: BTreeMap<_, _> = c.labels().clone().unwrap_or_default().into_iter().collect();
    for (k, v) in labels {
        let n = sanitize_identifier(&k);
        if n != k {
            warnings.push(format!(
                "label {k:?} is not a valid annotation name: stored as {n:?}"
            ));
        }
        if m.annotations.iter().any(|a| a.name.as_str() == n) {
            warnings.push(format!(
                "label {k:?} collides with another after sanitizing: dropped"
            ));
            continue;
        }
        if let Ok(name) = AcIdentifier::new(n) {
            m.annotations.push(Annotation { name, value: v });
        }
    }
    if c.stop_signal().is_some() {
        warnings.push("StopSignal is not supported by appc: ignored (apps get SIGTERM)".into());
    }
    if exec.is_empty() {
        warnings
            .push("the image has no Entrypoint or Cmd: it has no app (run it with --exec)".into());
    } else {
        app.exec = exec;
        m.app = Some(app);
    }
    m.validate()
        .map_err(|e| OciError::Manifest(e.to_string()))?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert_eq!(
            sanitize_identifier("Example.com/My_App"),
            "example.com/my_app"
        );
        assert_eq!(sanitize_identifier("a b  c"), "a-b-c");
        assert_eq!(sanitize_identifier("--x--"), "x");
        assert_eq!(sanitize_identifier("!!!"), "image");
        assert!(AcIdentifier::is_valid(&sanitize_identifier(
            "Org.Label-Schema.Name"
        )));
    }

    #[test]
    fn gid_lookup() {
        let p = b"root:x:0:0::/root:/bin/sh\nalice:x:1000:1001::/home/alice:/bin/sh\n";
        assert_eq!(primary_gid(p, "alice"), Some(1001));
        assert_eq!(primary_gid(p, "1000"), Some(1001));
        assert_eq!(primary_gid(p, "bob"), None);
    }

    #[test]
    fn names() {
        let mut w = Vec::new();
        let r = Reference::parse("oci:/tmp/My Image:1.0").and_then(Result::ok);
        let Some(r) = r else { panic!("parses") };
        let (n, v) = name_and_version(&r, Some("1.0"), &mut w);
        assert_eq!((n.as_str(), v.as_str()), ("my-image", "1.0"));
        assert_eq!(w.len(), 1);
        let (n, v) = name_and_version(&r, Some("example.com/app:2"), &mut w);
        assert_eq!((n.as_str(), v.as_str()), ("example.com/app", "2"));
    }
}
