//! The validation error shared by every appc type: a field path plus what is wrong there.

use thiserror::Error;

/// A manifest (or one value of it) violates the appc spec.
///
/// `path` names the offending field with JSON keys, e.g. `app.isolators[1].value.limit`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{path}: {kind}")]
pub struct ValidationError {
    /// Dotted JSON path of the bad field (`apps[0].name`); empty for the document itself.
    pub path: String,
    /// What is wrong with it.
    pub kind: Invalid,
}

impl ValidationError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, kind: Invalid) -> Self {
        Self {
            path: path.into(),
            kind,
        }
    }

    /// Prefix the path with `parent` (`value.limit` under `app.isolators[1]`).
    #[must_use]
    pub fn under(mut self, parent: &str) -> Self {
        self.path = join(parent, &self.path);
        self
    }
}

/// Join a parent path and a child path/key with a dot, or `[i]` for indices.
pub(crate) fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else if child.is_empty() {
        parent.to_string()
    } else if child.starts_with('[') {
        format!("{parent}{child}")
    } else {
        format!("{parent}.{child}")
    }
}

/// `parent[i]`.
pub(crate) fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Invalid {
    /// A required field is absent or empty.
    #[error("must be set")]
    Missing,
    /// A field that must be absent for this kind of object is present.
    #[error("must not be set {0}")]
    NotAllowed(&'static str),
    /// `acKind` has the wrong value.
    #[error("must be {expected:?}, got {found:?}")]
    WrongKind {
        /// The kind this document must have.
        expected: &'static str,
        /// The kind found.
        found: String,
    },
    /// Not a semantic version.
    #[error("invalid semver {0:?}")]
    SemVer(String),
    /// Not an ACName.
    #[error("invalid ACName {0:?}")]
    AcName(String),
    /// Not an ACIdentifier.
    #[error("invalid ACIdentifier {0:?}")]
    AcIdentifier(String),
    /// An ACName or ACIdentifier longer than [`crate::types::MAX_NAME_BYTES`] (its length in
    /// bytes).
    #[error("name is {0} bytes long, more than the limit of 255")]
    NameTooLong(usize),
    /// `name` used as a label name.
    #[error("label name \"name\" is forbidden")]
    ForbiddenLabel,
    /// A name that must be unique within its list appears twice.
    #[error("duplicate name {0:?}")]
    Duplicate(String),
    /// The `os` label is not one of ValidOSArch.
    #[error("unsupported os {0:?}")]
    BadOs(String),
    /// The `arch` label is not valid for the `os` label.
    #[error("unsupported arch {arch:?} for os {os:?}")]
    BadArch {
        /// The arch label.
        arch: String,
        /// The os label.
        os: String,
    },
    /// A path that must be absolute is not.
    #[error("path {0:?} is not absolute")]
    NotAbsolute(String),
    /// An event handler name other than `pre-start` / `post-stop`.
    #[error("unknown event handler {0:?} (must be pre-start or post-stop)")]
    EventHandlerName(String),
    /// An environment variable name with characters outside `[A-Za-z0-9_.-]`.
    #[error("invalid environment variable name {0:?}")]
    EnvName(String),
    /// A list that must not be empty is empty (or its first element is empty).
    #[error("must not be empty")]
    Empty,
    /// A resource quantity that does not parse.
    #[error("invalid quantity {0:?}")]
    Quantity(String),
    /// An unknown Linux capability name.
    #[error("unknown capability {0:?}")]
    Capability(String),
    /// A port number outside 1..=65535 (or a range leaving it).
    #[error("port {0} out of range 1-65535")]
    Port(u64),
    /// A volume kind other than `empty` / `host`.
    #[error("unknown volume kind {0:?} (must be empty or host)")]
    VolumeKind(String),
    /// A volume mode that is not an octal string.
    #[error("invalid mode {0:?} (must be octal like \"0755\")")]
    Mode(String),
    /// A mount refers to a volume the pod does not define.
    #[error("unknown volume {0:?}")]
    UnknownVolume(String),
    /// An image ID / hash that is not `sha512-<hex>` (or `sha256-<hex>`).
    #[error("invalid image hash {0:?}")]
    Hash(String),
    /// The `created` annotation is not an RFC 3339 date.
    #[error("invalid RFC 3339 date {0:?}")]
    Date(String),
    /// `homepage` / `documentation` annotation is not an http(s) URL.
    #[error("invalid http(s) URL {0:?}")]
    Url(String),
    /// An isolator value of the wrong JSON type / shape.
    #[error("expected {0}")]
    Type(&'static str),
    /// An isolator that may appear only once appears again.
    #[error("isolator {0:?} may appear only once")]
    IsolatorTwice(String),
    /// Two isolators that exclude each other.
    #[error("isolator {0:?} conflicts with {1:?}")]
    IsolatorConflict(String, String),
    /// An isolator used in the wrong scope (pod-only in an app or app-only in a pod).
    #[error("isolator {0:?} not allowed {1}")]
    IsolatorScope(String, &'static str),
    /// A value outside its allowed range.
    #[error("value {0} out of range {1}")]
    Range(i64, &'static str),
    /// A string with characters the field forbids.
    #[error("invalid value {0:?}")]
    Value(String),
}
