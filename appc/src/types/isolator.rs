//! Isolators: `{name, value}` pairs with a typed view ([`IsolatorValue`]) and list rules
//! (at most one of each kind, mutually exclusive kinds, app-only / pod-only kinds).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{index, join};
use super::{parse_quantity, AcIdentifier, Invalid, Quantity, ValidationError};

/// rkt's default capability bounding set for apps (the appc remove-set applies to it).
pub const DEFAULT_CAPABILITIES: [&str; 14] = linux_caps::DEFAULT;

/// Every Linux capability name, indexed by capability number (0..=40).
pub const KNOWN_CAPABILITIES: [&str; 41] = linux_caps::NAMES;

/// Isolator names from the spec.
pub mod names {
    /// `{request, limit}` in cores.
    pub const CPU: &str = "resource/cpu";
    /// `{request, limit}` in bytes.
    pub const MEMORY: &str = "resource/memory";
    /// `{default: true, limit}`.
    pub const BLOCK_BANDWIDTH: &str = "resource/block-bandwidth";
    /// `{default: true, limit}`.
    pub const BLOCK_IOPS: &str = "resource/block-iops";
    /// `{default: true, limit}`.
    pub const NETWORK_BANDWIDTH: &str = "resource/network-bandwidth";
    /// `{set: [CAP_..]}`.
    pub const CAPS_RETAIN: &str = "os/linux/capabilities-retain-set";
    /// `{set: [CAP_..]}`.
    pub const CAPS_REMOVE: &str = "os/linux/capabilities-remove-set";
    /// `true|false`.
    pub const NO_NEW_PRIVILEGES: &str = "os/linux/no-new-privileges";
    /// `{set: [..], errno}`.
    pub const SECCOMP_RETAIN: &str = "os/linux/seccomp-retain-set";
    /// `{set: [..], errno}`.
    pub const SECCOMP_REMOVE: &str = "os/linux/seccomp-remove-set";
    /// `{user, role, type, level}`.
    pub const SELINUX_CONTEXT: &str = "os/linux/selinux-context";
    /// integer -1000..=1000.
    pub const OOM_SCORE_ADJ: &str = "os/linux/oom-score-adj";
    /// integer 2..=262144.
    pub const CPU_SHARES: &str = "os/linux/cpu-shares";
    /// `{"net.x": "v"}`.
    pub const SYSCTL: &str = "os/unix/sysctl";
}

/// One isolator as it appears in a manifest. The value is kept as raw JSON so unknown
/// isolators round-trip; [`Isolator::parsed`] gives the typed view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Isolator {
    /// Isolator kind, e.g. `resource/memory`.
    pub name: AcIdentifier,
    /// Kind-specific value.
    #[serde(default)]
    pub value: Value,
}

/// `{request, limit}` of a resource isolator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResourceLimits {
    /// Guaranteed amount.
    pub request: Option<Quantity>,
    /// Upper bound.
    pub limit: Option<Quantity>,
}

/// A seccomp isolator's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeccompSet {
    /// Syscall names or `@appc.io/all` / `@appc.io/empty` style groups.
    pub set: Vec<String>,
    /// errno name returned for filtered syscalls; `None` means SIGSYS.
    pub errno: Option<String>,
}

/// An SELinux context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelinuxContext {
    /// SELinux user.
    pub user: String,
    /// SELinux role.
    pub role: String,
    /// SELinux type.
    pub typ: String,
    /// SELinux level.
    pub level: String,
}

/// The typed value of an isolator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IsolatorValue {
    /// `resource/cpu` (units: cores).
    ResourceCpu {
        /// Requested cores.
        request: Option<Quantity>,
        /// Maximum cores.
        limit: Option<Quantity>,
    },
    /// `resource/memory` (units: bytes).
    ResourceMemory {
        /// Requested bytes.
        request: Option<Quantity>,
        /// Maximum bytes.
        limit: Option<Quantity>,
    },
    /// `resource/block-bandwidth` limit (bytes/s).
    ResourceBlockBandwidth(Option<Quantity>),
    /// `resource/block-iops` limit (operations/s).
    ResourceBlockIops(Option<Quantity>),
    /// `resource/network-bandwidth` limit (bytes/s).
    ResourceNetworkBandwidth(Option<Quantity>),
    /// `os/linux/capabilities-retain-set`.
    CapsRetain(Vec<String>),
    /// `os/linux/capabilities-remove-set`.
    CapsRemove(Vec<String>),
    /// `os/linux/no-new-privileges`.
    NoNewPrivileges(bool),
    /// `os/linux/seccomp-retain-set`.
    SeccompRetain(SeccompSet),
    /// `os/linux/seccomp-remove-set`.
    SeccompRemove(SeccompSet),
    /// `os/linux/selinux-context`.
    SelinuxContext(SelinuxContext),
    /// `os/linux/oom-score-adj`.
    OomScoreAdj(i32),
    /// `os/linux/cpu-shares`.
    CpuShares(u32),
    /// `os/unix/sysctl`.
    Sysctl(BTreeMap<String, String>),
    /// Any other isolator name (may be ignored, but must be reported).
    Unknown,
}

/// Where an isolator list lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `app.isolators`.
    App,
    /// `isolators` of a pod.
    Pod,
}

/// Range of `os/linux/oom-score-adj` (inclusive, unitless).
const OOM_RANGE: (i64, i64) = (-1000, 1000);
/// Range of `os/linux/cpu-shares` (inclusive, cgroup v1 shares).
const SHARES_RANGE: (i64, i64) = (2, 262_144);

fn obj<'a>(
    v: &'a Value,
    path: &str,
) -> Result<&'a serde_json::Map<String, Value>, ValidationError> {
    v.as_object()
        .ok_or_else(|| ValidationError::new(path, Invalid::Type("an object")))
}

fn opt_quantity(
    o: &serde_json::Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<Quantity>, ValidationError> {
    let p = join(path, key);
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_quantity(s)
            .map(Some)
            .map_err(|_| ValidationError::new(p, Invalid::Quantity(s.clone()))),
        // Go's resource.Quantity also accepts bare JSON numbers.
        Some(Value::Number(n)) => parse_quantity(&n.to_string())
            .map(Some)
            .map_err(|_| ValidationError::new(p, Invalid::Quantity(n.to_string()))),
        Some(_) => Err(ValidationError::new(p, Invalid::Type("a quantity string"))),
    }
}

fn opt_bool(
    o: &serde_json::Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<bool, ValidationError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ValidationError::new(
            join(path, key),
            Invalid::Type("a boolean"),
        )),
    }
}

fn string_list(
    o: &serde_json::Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Vec<String>, ValidationError> {
    let p = join(path, key);
    let arr = match o.get(key) {
        None | Some(Value::Null) => return Err(ValidationError::new(p, Invalid::Empty)),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(ValidationError::new(
                p,
                Invalid::Type("an array of strings"),
            ))
        }
    };
    if arr.is_empty() {
        return Err(ValidationError::new(p, Invalid::Empty));
    }
    arr.iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| ValidationError::new(index(&p, i), Invalid::Type("a string")))
        })
        .collect()
}

fn resource(v: &Value, path: &str) -> Result<ResourceLimits, ValidationError> {
    let o = obj(v, path)?;
    if opt_bool(o, "default", path)? {
        return Err(ValidationError::new(
            join(path, "default"),
            Invalid::NotAllowed("to true for this resource"),
        ));
    }
    Ok(ResourceLimits {
        request: opt_quantity(o, "request", path)?,
        limit: opt_quantity(o, "limit", path)?,
    })
}

fn default_resource(v: &Value, path: &str) -> Result<Option<Quantity>, ValidationError> {
    let o = obj(v, path)?;
    if !opt_bool(o, "default", path)? {
        return Err(ValidationError::new(
            join(path, "default"),
            Invalid::Value("must be true".into()),
        ));
    }
    if o.get("request").is_some_and(|r| !r.is_null()) {
        return Err(ValidationError::new(
            join(path, "request"),
            Invalid::NotAllowed("for this resource"),
        ));
    }
    opt_quantity(o, "limit", path)
}

fn caps(v: &Value, path: &str) -> Result<Vec<String>, ValidationError> {
    let o = obj(v, path)?;
    let set = string_list(o, "set", path)?;
    for (i, c) in set.iter().enumerate() {
        if !KNOWN_CAPABILITIES.contains(&c.as_str()) {
            return Err(ValidationError::new(
                index(&join(path, "set"), i),
                Invalid::Capability(c.clone()),
            ));
        }
    }
    Ok(set)
}

fn seccomp(v: &Value, path: &str) -> Result<SeccompSet, ValidationError> {
    let o = obj(v, path)?;
    let set = string_list(o, "set", path)?;
    for (i, s) in set.iter().enumerate() {
        let ok = !s.is_empty()
            && s.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'_' | b'@' | b'.' | b'/' | b'-')
            });
        if !ok {
            return Err(ValidationError::new(
                index(&join(path, "set"), i),
                Invalid::Value(s.clone()),
            ));
        }
    }
    let errno = match o.get("errno") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => {
            if !s
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            {
                return Err(ValidationError::new(
                    join(path, "errno"),
                    Invalid::Value(s.clone()),
                ));
            }
            Some(s.clone())
        }
        Some(_) => {
            return Err(ValidationError::new(
                join(path, "errno"),
                Invalid::Type("a string"),
            ))
        }
    };
    Ok(SeccompSet { set, errno })
}

fn int_in(
    v: &Value,
    path: &str,
    range: (i64, i64),
    what: &'static str,
) -> Result<i64, ValidationError> {
    let n = v
        .as_i64()
        .ok_or_else(|| ValidationError::new(path, Invalid::Type("an integer")))?;
    if n < range.0 || n > range.1 {
        return Err(ValidationError::new(path, Invalid::Range(n, what)));
    }
    Ok(n)
}

impl Isolator {
    /// A new isolator (the name is not validated here; see `validate_isolators`).
    pub fn new(name: AcIdentifier, value: Value) -> Self {
        Self { name, value }
    }

    /// Parse the value according to the name. Error paths are relative to the isolator
    /// (`value.limit`); manifests prefix them with the isolator's own path.
    pub fn parsed(&self) -> Result<IsolatorValue, ValidationError> {
        let p = "value";
        let v = &self.value;
        Ok(match self.name.as_str() {
            names::CPU => {
                let r = resource(v, p)?;
                IsolatorValue::ResourceCpu {
                    request: r.request,
                    limit: r.limit,
                }
            }
            names::MEMORY => {
                let r = resource(v, p)?;
                IsolatorValue::ResourceMemory {
                    request: r.request,
                    limit: r.limit,
                }
            }
            names::BLOCK_BANDWIDTH => {
                IsolatorValue::ResourceBlockBandwidth(default_resource(v, p)?)
            }
            names::BLOCK_IOPS => IsolatorValue::ResourceBlockIops(default_resource(v, p)?),
            names::NETWORK_BANDWIDTH => {
                IsolatorValue::ResourceNetworkBandwidth(default_resource(v, p)?)
            }
            names::CAPS_RETAIN => IsolatorValue::CapsRetain(caps(v, p)?),
            names::CAPS_REMOVE => IsolatorValue::CapsRemove(caps(v, p)?),
            names::NO_NEW_PRIVILEGES => IsolatorValue::NoNewPrivileges(
                v.as_bool()
                    .ok_or_else(|| ValidationError::new(p, Invalid::Type("a boolean")))?,
            ),
            names::SECCOMP_RETAIN => IsolatorValue::SeccompRetain(seccomp(v, p)?),
            names::SECCOMP_REMOVE => IsolatorValue::SeccompRemove(seccomp(v, p)?),
            names::SELINUX_CONTEXT => {
                let o = obj(v, p)?;
                let field = |k: &str| -> Result<String, ValidationError> {
                    match o.get(k).and_then(Value::as_str) {
                        Some(s) if !s.is_empty() && !s.contains(':') => Ok(s.to_string()),
                        Some(s) if !s.is_empty() => Err(ValidationError::new(
                            join(p, k),
                            Invalid::Value(s.to_string()),
                        )),
                        _ => Err(ValidationError::new(join(p, k), Invalid::Missing)),
                    }
                };
                IsolatorValue::SelinuxContext(SelinuxContext {
                    user: field("user")?,
                    role: field("role")?,
                    typ: field("type")?,
                    level: field("level")?,
                })
            }
            names::OOM_SCORE_ADJ => {
                let n = int_in(v, p, OOM_RANGE, "-1000..=1000")?;
                IsolatorValue::OomScoreAdj(i32::try_from(n).unwrap_or_default())
            }
            names::CPU_SHARES => {
                let n = int_in(v, p, SHARES_RANGE, "2..=262144")?;
                IsolatorValue::CpuShares(u32::try_from(n).unwrap_or_default())
            }
            names::SYSCTL => {
                let o = obj(v, p)?;
                let mut m = BTreeMap::new();
                for (k, val) in o {
                    let kp = join(p, k);
                    if k.is_empty() || k.contains('/') || k.starts_with('.') || k.contains("..") {
                        return Err(ValidationError::new(kp, Invalid::Value(k.clone())));
                    }
                    let s = val
                        .as_str()
                        .ok_or_else(|| ValidationError::new(kp, Invalid::Type("a string")))?;
                    m.insert(k.clone(), s.to_string());
                }
                IsolatorValue::Sysctl(m)
            }
            _ => IsolatorValue::Unknown,
        })
    }
}

/// Pairs of isolator kinds that must not appear together.
const CONFLICTS: [(&str, &str); 2] = [
    (names::CAPS_RETAIN, names::CAPS_REMOVE),
    (names::SECCOMP_RETAIN, names::SECCOMP_REMOVE),
];

/// Isolator kinds valid only in an app.
const APP_ONLY: [&str; 7] = [
    names::CAPS_RETAIN,
    names::CAPS_REMOVE,
    names::NO_NEW_PRIVILEGES,
    names::SECCOMP_RETAIN,
    names::SECCOMP_REMOVE,
    names::OOM_SCORE_ADJ,
    names::CPU_SHARES,
];

/// Isolator kinds valid only in a pod.
const POD_ONLY: [&str; 1] = [names::SYSCTL];

/// Validate an isolator list found at `path` (`app.isolators`, `isolators`).
pub fn validate_isolators(
    list: &[Isolator],
    path: &str,
    scope: Scope,
) -> Result<(), ValidationError> {
    let mut seen = BTreeSet::new();
    for (i, iso) in list.iter().enumerate() {
        let ip = index(path, i);
        iso.name.check().map_err(|e| e.under(&join(&ip, "name")))?;
        iso.parsed().map_err(|e| e.under(&ip))?;
        let name = iso.name.as_str();
        match scope {
            Scope::App if POD_ONLY.contains(&name) => {
                return Err(ValidationError::new(
                    join(&ip, "name"),
                    Invalid::IsolatorScope(name.into(), "in an app"),
                ));
            }
            Scope::Pod if APP_ONLY.contains(&name) => {
                return Err(ValidationError::new(
                    join(&ip, "name"),
                    Invalid::IsolatorScope(name.into(), "in a pod"),
                ));
            }
            _ => {}
        }
        if !seen.insert(name) {
            return Err(ValidationError::new(
                join(&ip, "name"),
                Invalid::IsolatorTwice(name.into()),
            ));
        }
        for (a, b) in CONFLICTS {
            let other = if name == a {
                b
            } else if name == b {
                a
            } else {
                continue;
            };
            if seen.contains(other) {
                return Err(ValidationError::new(
                    join(&ip, "name"),
                    Invalid::IsolatorConflict(name.into(), other.into()),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    fn iso(name: &str, value: Value) -> Isolator {
        Isolator::new(AcIdentifier::new(name).unwrap(), value)
    }

    #[test]
    fn parses_every_known_isolator() {
        let q = |s: &str| Some(parse_quantity(s).unwrap());
        let cases = vec![
            (
                iso(names::CPU, json!({"request": "250m", "limit": "1.5"})),
                IsolatorValue::ResourceCpu {
                    request: q("250m"),
                    limit: q("1.5"),
                },
            ),
            (
                iso(names::MEMORY, json!({"limit": "512Mi"})),
                IsolatorValue::ResourceMemory {
                    request: None,
                    limit: q("512Mi"),
                },
            ),
            (
                iso(
                    names::BLOCK_BANDWIDTH,
                    json!({"default": true, "limit": "10M"}),
                ),
                IsolatorValue::ResourceBlockBandwidth(q("10M")),
            ),
            (
                iso(names::BLOCK_IOPS, json!({"default": true, "limit": "1k"})),
                IsolatorValue::ResourceBlockIops(q("1k")),
            ),
            (
                iso(
                    names::NETWORK_BANDWIDTH,
                    json!({"default": true, "limit": "1G"}),
                ),
                IsolatorValue::ResourceNetworkBandwidth(q("1G")),
            ),
            (
                iso(names::CAPS_RETAIN, json!({"set": ["CAP_CHOWN"]})),
                IsolatorValue::CapsRetain(vec!["CAP_CHOWN".into()]),
            ),
            (
                iso(
                    names::CAPS_REMOVE,
                    json!({"set": ["CAP_NET_RAW", "CAP_SYS_CHROOT"]}),
                ),
                IsolatorValue::CapsRemove(vec!["CAP_NET_RAW".into(), "CAP_SYS_CHROOT".into()]),
            ),
            (
                iso(names::NO_NEW_PRIVILEGES, json!(false)),
                IsolatorValue::NoNewPrivileges(false),
            ),
            (
                iso(
                    names::SECCOMP_RETAIN,
                    json!({"set": ["@appc.io/all"], "errno": "EPERM"}),
                ),
                IsolatorValue::SeccompRetain(SeccompSet {
                    set: vec!["@appc.io/all".into()],
                    errno: Some("EPERM".into()),
                }),
            ),
            (
                iso(
                    names::SECCOMP_REMOVE,
                    json!({"set": ["reboot"], "errno": ""}),
                ),
                IsolatorValue::SeccompRemove(SeccompSet {
                    set: vec!["reboot".into()],
                    errno: None,
                }),
            ),
            (
                iso(
                    names::SELINUX_CONTEXT,
                    json!({"user": "u", "role": "r", "type": "t", "level": "s0"}),
                ),
                IsolatorValue::SelinuxContext(SelinuxContext {
                    user: "u".into(),
                    role: "r".into(),
                    typ: "t".into(),
                    level: "s0".into(),
                }),
            ),
            (
                iso(names::OOM_SCORE_ADJ, json!(-500)),
                IsolatorValue::OomScoreAdj(-500),
            ),
            (
                iso(names::CPU_SHARES, json!(512)),
                IsolatorValue::CpuShares(512),
            ),
            (
                iso(names::SYSCTL, json!({"net.ipv4.ip_forward": "1"})),
                IsolatorValue::Sysctl(
                    [("net.ipv4.ip_forward".to_string(), "1".to_string())].into(),
                ),
            ),
            (
                iso("example.com/custom", json!({"anything": 1})),
                IsolatorValue::Unknown,
            ),
        ];
        for (i, want) in cases {
            assert_eq!(i.parsed().unwrap(), want, "{}", i.name);
        }
        assert_eq!(
            DEFAULT_CAPABILITIES
                .iter()
                .filter(|c| KNOWN_CAPABILITIES.contains(c))
                .count(),
            14
        );
    }

    #[test]
    fn rejects_bad_values_with_relative_paths() {
        let cases = vec![
            (
                iso(names::CPU, json!({"default": true})),
                "value.default: must not be set to true for this resource",
            ),
            (
                iso(names::BLOCK_IOPS, json!({"default": true, "request": "1"})),
                "value.request: must not be set for this resource",
            ),
            (
                iso(
                    names::SELINUX_CONTEXT,
                    json!({"user": "u:x", "role": "r", "type": "t", "level": "s0"}),
                ),
                r#"value.user: invalid value "u:x""#,
            ),
            (
                iso(names::SELINUX_CONTEXT, json!({"user": "u"})),
                "value.role: must be set",
            ),
            (
                iso(names::CPU_SHARES, json!(1)),
                "value: value 1 out of range 2..=262144",
            ),
            (
                iso(names::OOM_SCORE_ADJ, json!("5")),
                "value: expected an integer",
            ),
            (
                iso(names::SYSCTL, json!({"../x": "1"})),
                r#"value.../x: invalid value "../x""#,
            ),
            (
                iso(names::SECCOMP_REMOVE, json!({"set": ["a b"]})),
                r#"value.set[0]: invalid value "a b""#,
            ),
            (
                iso(names::MEMORY, json!({"limit": true})),
                "value.limit: expected a quantity string",
            ),
        ];
        for (i, want) in cases {
            assert_eq!(i.parsed().unwrap_err().to_string(), want, "{}", i.name);
        }
    }

    #[test]
    fn list_rules() {
        let app = vec![
            iso(names::SECCOMP_RETAIN, json!({"set": ["read"]})),
            iso(names::SECCOMP_REMOVE, json!({"set": ["reboot"]})),
        ];
        assert_eq!(
            validate_isolators(&app, "app.isolators", Scope::App)
                .unwrap_err()
                .to_string(),
            r#"app.isolators[1].name: isolator "os/linux/seccomp-remove-set" conflicts with "os/linux/seccomp-retain-set""#
        );
        let bad_name = vec![
            iso("resource/memory", json!({})),
            Isolator::new(serde_json::from_value(json!("Bad")).unwrap(), json!(1)),
        ];
        assert_eq!(
            validate_isolators(&bad_name, "isolators", Scope::Pod)
                .unwrap_err()
                .to_string(),
            r#"isolators[1].name: invalid ACIdentifier "Bad""#
        );
        let pod = vec![
            iso(names::SYSCTL, json!({})),
            iso(names::MEMORY, json!({"limit": "1G"})),
        ];
        validate_isolators(&pod, "isolators", Scope::Pod).unwrap();
    }
}
