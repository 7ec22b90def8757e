//! What `rkt status` and `rkt list` report about a pod: state, times, pid, apps and their exit
//! codes, in rkt's key=value and JSON formats.

use std::time::{SystemTime, UNIX_EPOCH};

use appc::schema::PodManifest;
use serde::Serialize;

use super::{Pod, PodState};

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
}

impl PodInfo {
    /// Reads everything from the pod directory.
    pub fn read(pod: &Pod) -> PodInfo {
        let state = pod.state();
        let paths = pod.paths();
        let manifest = std::fs::read(paths.manifest())
            .ok()
            .and_then(|b| PodManifest::from_json(&b).ok());
        let status_dir = paths.status_dir();
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
                        exit_code: pod_abi::status::read_app_status(&status_dir, a.name.as_str()),
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
        }
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
            v.push("networks=".to_string());
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
            "networks": [],
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

/// Unix time in nanoseconds.
pub fn unix_nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// rkt's time layout `2006-01-02 15:04:05.999 -0700 MST`, in UTC.
pub fn format_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(d.as_secs()).unwrap_or(0);
    let (y, mo, day) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    let ms = d.subsec_millis();
    let frac = if ms == 0 {
        String::new()
    } else {
        format!(".{ms:03}").trim_end_matches('0').to_string()
    };
    format!(
        "{y:04}-{mo:02}-{day:02} {:02}:{:02}:{:02}{frac} +0000 UTC",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// "3 seconds ago"-style relative time, as rkt's list shows.
pub fn format_ago(t: SystemTime, now: SystemTime) -> String {
    let s = now.duration_since(t).map(|d| d.as_secs()).unwrap_or(0);
    let (n, unit) = match s {
        0..=1 => return "just now".into(),
        2..=59 => (s, "seconds"),
        60..=3599 => (s / 60, "minutes"),
        3600..=86_399 => (s / 3600, "hours"),
        _ => (s / 86_400, "days"),
    };
    if n == 1 {
        format!("1 {} ago", unit.trim_end_matches('s'))
    } else {
        format!("{n} {unit} ago")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn time_formats() {
        let t = UNIX_EPOCH + Duration::from_millis(1_456_790_400_120);
        assert_eq!(format_time(t), "2016-03-01 00:00:00.12 +0000 UTC");
        assert_eq!(format_time(UNIX_EPOCH), "1970-01-01 00:00:00 +0000 UTC");
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(
            format_ago(UNIX_EPOCH + Duration::from_secs(990), now),
            "10 seconds ago"
        );
        assert_eq!(
            format_ago(UNIX_EPOCH + Duration::from_secs(880), now),
            "2 minutes ago"
        );
        assert_eq!(
            format_ago(UNIX_EPOCH + Duration::from_secs(940), now),
            "1 minute ago"
        );
    }
}
