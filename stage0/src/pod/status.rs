//! What `rkt status` and `rkt list` report about a pod: state, times, pid, apps and their exit
//! codes, in rkt's key=value and JSON formats.

use std::time::SystemTime;

use appc::schema::PodManifest;
use serde::Serialize;

use super::{Pod, PodState};
use crate::format::format_time;

/// One app as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppInfo {
    /// App name.
    pub name: String,
    /// Image name.
    pub image_name: String,
    /// Image ID.
    pub image_id: String,
    /// Exit code, once the app exited.
    pub exit_code: Option<i32>,
}

/// A snapshot of a pod.
#[derive(Debug, Clone)]
pub struct PodInfo {
    /// UUID.
    pub uuid: String,
    /// Derived state.
    pub state: PodState,
    /// Creation time.
    pub created: Option<SystemTime>,
    /// Start time.
    pub started: Option<SystemTime>,
    /// stage1 PID.
    pub pid: Option<i32>,
    /// Apps in manifest order.
    pub apps: Vec<AppInfo>,
    /// The pod manifest, if readable.
    pub manifest: Option<PodManifest>,
    /// The pod manifest's bytes as written (empty if unreadable).
    pub manifest_json: Vec<u8>,
    /// The pod's networks (`net-info.json`), once it ran.
    pub networks: Vec<pod_abi::netinfo::NetInfo>,
}

impl PodInfo {
    /// Reads everything from the pod directory.
    pub fn read(pod: &Pod) -> PodInfo {
        let state = pod.state();
        let paths = pod.paths();
        let manifest_json = pod_abi::podfile::read_beneath(
            &pod.path(),
            std::path::Path::new(pod_abi::paths::POD_MANIFEST),
            pod_abi::podfile::MANIFEST_MAX,
        )
        .unwrap_or_default();
        let manifest = PodManifest::from_json(&manifest_json).ok();
        let status_dir = paths.status_dir();
        // The stage1 root is root's; a `rkt` group member reads the copy stage1 made when the
        // pod ended (read once, and only for a pod that ended).
        let copy = std::cell::OnceCell::new();
        let copied = |app: &str| {
            if !state.is_after_run() {
                return None;
            }
            copy.get_or_init(|| pod_abi::status::published(&pod.path()))
                .iter()
                .find(|(n, _)| n == app)
                .map(|(_, c)| *c)
        };
        let apps = manifest
            .as_ref()
            .map(|m| {
                m.apps
                    .iter()
                    .map(|a| AppInfo {
                        name: a.name.to_string(),
                        image_name: a
                            .image
                            .name
                            .as_ref()
                            .map(|n| n.to_string())
                            .unwrap_or_default(),
                        image_id: a.image.id.clone(),
                        exit_code: pod_abi::status::read_app_status(&status_dir, a.name.as_str())
                            .or_else(|| copied(a.name.as_str())),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let ran = matches!(state, PodState::Running) || state.is_after_run();
        PodInfo {
            uuid: pod.uuid().to_string(),
            state,
            created: pod.created(),
            started: if ran { pod.started() } else { None },
            pid: if ran { pod.pid() } else { None },
            apps,
            manifest,
            manifest_json,
            networks: if ran {
                pod_abi::netinfo::read(&pod.path())
                    .ok()
                    .flatten()
                    .unwrap_or_default()
            } else {
                Vec::new()
            },
        }
    }

    /// rkt's network summary: `name:ip4=IP` joined with `,` (`networks=` in `rkt status`, the
    /// NETWORKS column of `rkt list`).
    pub fn networks_summary(&self) -> String {
        self.networks
            .iter()
            .filter(|n| !n.ip.is_empty())
            .map(|n| format!("{}:ip4={}", n.net_name, n.ip))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The pod's exit code by [`pod_abi::status::pod_exit_code`] (once exited).
    pub fn exit_code(&self) -> i32 {
        let codes: Vec<Option<i32>> = self.apps.iter().map(|a| a.exit_code).collect();
        pod_abi::status::pod_exit_code(&codes)
    }

    /// rkt's `status` lines.
    pub fn status_lines(&self) -> Vec<String> {
        let mut v = vec![format!("state={}", self.state)];
        if let Some(c) = self.created {
            v.push(format!("created={}", format_time(c)));
        }
        if let Some(s) = self.started {
            v.push(format!("started={}", format_time(s)));
        }
        let s = self.state;
        if matches!(s, PodState::Running) || s.is_after_run() {
            v.push(format!("networks={}", self.networks_summary()));
            v.push(format!("pid={}", self.pid.unwrap_or(-1)));
            v.push(format!("exited={}", s.is_after_run()));
        }
        if s != PodState::Running {
            for a in &self.apps {
                if let Some(c) = a.exit_code {
                    v.push(format!("app-{}={c}", a.name));
                }
            }
        }
        v
    }

    /// rkt's JSON form (`lib.Pod`): name, state, networks, app_names, apps, pid, created_at,
    /// started_at (Unix nanoseconds).
    pub fn to_json(&self) -> serde_json::Value {
        let mut o = serde_json::json!({
            "name": self.uuid,
            "state": self.state.as_str(),
            "networks": self.networks.iter().map(|n| n.public()).collect::<Vec<_>>(),
            "app_names": self.apps.iter().map(|a| a.name.clone()).collect::<Vec<_>>(),
            "apps": self.apps.iter().map(|a| serde_json::json!({
                "name": a.name,
                "image_id": a.image_id,
                "image_name": a.image_name,
                "state": app_state(self.state, a.exit_code),
                "exit_code": a.exit_code,
            })).collect::<Vec<_>>(),
        });
        if let (Some(pid), Some(map)) = (self.pid, o.as_object_mut()) {
            map.insert("pid".into(), pid.into());
        }
        for (k, t) in [("created_at", self.created), ("started_at", self.started)] {
            if let (Some(t), Some(map)) = (t, o.as_object_mut()) {
                map.insert(k.into(), unix_nanos(t).into());
            }
        }
        o
    }
}

fn app_state(pod: PodState, code: Option<i32>) -> &'static str {
    match (pod, code) {
        (_, Some(_)) => "exited",
        (PodState::Running, None) => "running",
        (s, None) if s.is_after_run() => "exited",
        _ => "created",
    }
}

pub use pod_abi::time::unix_nanos;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use pod_abi::netinfo::NetInfo;

    #[test]
    fn networks_in_rkt_formats() {
        let net = |name: &str, ip: &str| NetInfo {
            net_name: name.into(),
            if_name: "eth0".into(),
            ip: ip.into(),
            conf: Some(serde_json::json!({"private": true})),
            ..Default::default()
        };
        let info = PodInfo {
            uuid: "u".into(),
            state: PodState::Running,
            created: None,
            started: None,
            pid: Some(7),
            apps: vec![],
            manifest: None,
            manifest_json: Vec::new(),
            networks: vec![
                net("default", "172.16.28.2"),
                net("pending", ""),
                net("br", "10.1.0.2"),
            ],
        };
        assert_eq!(
            info.networks_summary(),
            "default:ip4=172.16.28.2,br:ip4=10.1.0.2"
        );
        assert!(info
            .status_lines()
            .contains(&"networks=default:ip4=172.16.28.2,br:ip4=10.1.0.2".to_string()));
        let j = info.to_json();
        assert_eq!(j["networks"][0]["netName"], "default");
        assert_eq!(j["networks"][2]["ip"], "10.1.0.2");
        assert!(j["networks"][0].get("rktRsConf").is_none());
    }
}
