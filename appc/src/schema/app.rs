//! The `app` section shared by image manifests and pod apps.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::common::{is_abs, nullable, validate_env, EnvVar, UserMeta};
use crate::types::{
    index, join, validate_isolators, AcName, Invalid, Isolator, IsolatorScope, ValidationError,
};

/// What to run and how (`app` in an image manifest or a pod app).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct App {
    /// Command and arguments; a relative `exec[0]` is looked up in PATH.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub exec: Vec<String>,
    /// User name, numeric uid, or `/path` (owner of that file). Required.
    #[serde(default)]
    pub user: String,
    /// Group name, numeric gid, or `/path`. Required.
    #[serde(default)]
    pub group: String,
    /// Extra group IDs.
    #[serde(
        rename = "supplementaryGIDs",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub supplementary_gids: Vec<u32>,
    /// `pre-start` / `post-stop` hooks, at most one of each.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub event_handlers: Vec<EventHandler>,
    /// Absolute working directory (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    /// Environment variables.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub environment: Vec<EnvVar>,
    /// Isolators.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub isolators: Vec<Isolator>,
    /// Places where volumes are expected.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub mount_points: Vec<MountPoint>,
    /// Ports the app listens on.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ports: Vec<Port>,
    /// Free-form user annotations and labels.
    #[serde(flatten)]
    pub user_meta: UserMeta,
}

/// A lifecycle hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventHandler {
    /// `pre-start` or `post-stop`.
    pub name: String,
    /// Command and arguments.
    #[serde(default, deserialize_with = "nullable")]
    pub exec: Vec<String>,
}

/// Where the app expects a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountPoint {
    /// Mount point name (ACName).
    pub name: AcName,
    /// Absolute path in the app's rootfs.
    #[serde(default)]
    pub path: String,
    /// Whether the app needs it read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// A port the app listens on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    /// Port name (ACName).
    pub name: AcName,
    /// `tcp`, `udp`, ...
    #[serde(default)]
    pub protocol: String,
    /// First port number, 1..=65535.
    #[serde(default)]
    pub port: u32,
    /// Number of consecutive ports (default 1).
    #[serde(default = "one")]
    pub count: u32,
    /// Whether the runtime passes the listening socket (systemd socket activation).
    #[serde(default)]
    pub socket_activated: bool,
}

fn one() -> u32 {
    1
}

/// Highest TCP/UDP port number.
const MAX_PORT: u64 = 65_535;

/// Event handler names allowed by the spec.
pub const EVENT_HANDLERS: [&str; 2] = ["pre-start", "post-stop"];

impl App {
    /// Validate this app found at `path` (`app`, `apps[2].app`).
    pub fn validate_at(&self, path: &str) -> Result<(), ValidationError> {
        if self.exec.first().is_some_and(String::is_empty) {
            return Err(ValidationError::new(
                index(&join(path, "exec"), 0),
                Invalid::Empty,
            ));
        }
        if self.user.is_empty() {
            return Err(ValidationError::new(join(path, "user"), Invalid::Missing));
        }
        if self.group.is_empty() {
            return Err(ValidationError::new(join(path, "group"), Invalid::Missing));
        }
        let mut handlers = BTreeSet::new();
        for (i, h) in self.event_handlers.iter().enumerate() {
            let hp = index(&join(path, "eventHandlers"), i);
            if !EVENT_HANDLERS.contains(&h.name.as_str()) {
                return Err(ValidationError::new(
                    join(&hp, "name"),
                    Invalid::EventHandlerName(h.name.clone()),
                ));
            }
            if !handlers.insert(h.name.as_str()) {
                return Err(ValidationError::new(
                    join(&hp, "name"),
                    Invalid::Duplicate(h.name.clone()),
                ));
            }
            if h.exec.first().is_none_or(String::is_empty) {
                return Err(ValidationError::new(join(&hp, "exec"), Invalid::Empty));
            }
        }
        if let Some(wd) = &self.working_directory {
            if !wd.is_empty() && !is_abs(wd) {
                return Err(ValidationError::new(
                    join(path, "workingDirectory"),
                    Invalid::NotAbsolute(wd.clone()),
                ));
            }
        }
        validate_env(&self.environment, &join(path, "environment"))?;
        validate_isolators(
            &self.isolators,
            &join(path, "isolators"),
            IsolatorScope::App,
        )?;
        let mut mps = BTreeSet::new();
        for (i, m) in self.mount_points.iter().enumerate() {
            let mp = index(&join(path, "mountPoints"), i);
            m.name.check().map_err(|e| e.under(&join(&mp, "name")))?;
            if !mps.insert(m.name.as_str()) {
                return Err(ValidationError::new(
                    join(&mp, "name"),
                    Invalid::Duplicate(m.name.to_string()),
                ));
            }
            if m.path.is_empty() {
                return Err(ValidationError::new(join(&mp, "path"), Invalid::Missing));
            }
            if !is_abs(&m.path) {
                return Err(ValidationError::new(
                    join(&mp, "path"),
                    Invalid::NotAbsolute(m.path.clone()),
                ));
            }
        }
        let mut ports = BTreeSet::new();
        for (i, p) in self.ports.iter().enumerate() {
            let pp = index(&join(path, "ports"), i);
            p.validate_at(&pp)?;
            if !ports.insert(p.name.as_str()) {
                return Err(ValidationError::new(
                    join(&pp, "name"),
                    Invalid::Duplicate(p.name.to_string()),
                ));
            }
        }
        Ok(())
    }

    /// The working directory, `/` when unset.
    pub fn working_dir(&self) -> &str {
        match self.working_directory.as_deref() {
            Some(w) if !w.is_empty() => w,
            _ => "/",
        }
    }

    /// The handler named `name` (`pre-start` / `post-stop`), if any.
    pub fn event_handler(&self, name: &str) -> Option<&EventHandler> {
        self.event_handlers.iter().find(|h| h.name == name)
    }
}

impl Port {
    /// Validate this port found at `path`.
    pub fn validate_at(&self, path: &str) -> Result<(), ValidationError> {
        self.name
            .check()
            .map_err(|e| e.under(&join(path, "name")))?;
        if self.protocol.is_empty() {
            return Err(ValidationError::new(
                join(path, "protocol"),
                Invalid::Missing,
            ));
        }
        let port = u64::from(self.port);
        if port == 0 || port > MAX_PORT {
            return Err(ValidationError::new(
                join(path, "port"),
                Invalid::Port(port),
            ));
        }
        let last = port + u64::from(self.count.max(1)) - 1;
        if last > MAX_PORT {
            return Err(ValidationError::new(
                join(path, "count"),
                Invalid::Port(last),
            ));
        }
        Ok(())
    }
}
