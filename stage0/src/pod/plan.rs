//! Building the launch plan (`stage1/rootfs/rkt/plan.json`, [`pod_abi::plan::Plan`]) from the
//! pod manifest and the apps' image manifests: effective app, argv, environment, user, mounts,
//! capabilities and resource limits.

use appc::schema::{PodManifest, RuntimeApp};
use appc::types::IsolatorValue;
use appc::ImageManifest;
use pod_abi::plan::{
    AppPlan, MountPlan, NetPlan, Plan, PortPlan, DEFAULT_PATH, DEFAULT_STOP_GRACE_SECS,
    PLAN_VERSION,
};

use super::launch::RunOptions;
use super::PodError;

/// Value of the `container` environment variable (the executor's name).
pub const CONTAINER_ENV: &str = "rkt";

/// The volume behind one of `app`'s planned mounts: the mount's own `appVolume` (`rkt app add
/// --mnt-volume`, rkt's per-app volume), else the pod's volume of that name.
pub fn mount_volume<'a>(
    pm: &'a PodManifest,
    app: &str,
    m: &MountPlan,
) -> Option<&'a appc::schema::Volume> {
    pm.apps
        .iter()
        .filter(|a| a.name.as_str() == app)
        .flat_map(|a| &a.mounts)
        .find(|x| x.path == m.target)
        .and_then(|x| x.app_volume.as_ref())
        .or_else(|| pm.volume(&m.volume))
}

/// The volume mounts of one app: explicit `mounts` (of a pod volume, or of the mount's own
/// `appVolume`), then each image mount point that a pod volume of the same name satisfies
/// (rkt's matching), with the effective read-only flag.
pub fn app_mounts(
    pm: &PodManifest,
    ra: &RuntimeApp,
    app: &appc::schema::App,
) -> Result<Vec<MountPlan>, PodError> {
    let mut out: Vec<MountPlan> = Vec::new();
    let vol_ro = |name: &str| pm.volume(name).map(|v| v.is_read_only());
    for m in &ra.mounts {
        let own = m.app_volume.as_ref().map(|v| v.is_read_only());
        let ro = own.or_else(|| vol_ro(m.volume.as_str())).ok_or_else(|| {
            PodError::Config(format!(
                "app {}: mount of unknown volume {}",
                ra.name, m.volume
            ))
        })?;
        let mp_ro = app
            .mount_points
            .iter()
            .any(|mp| mp.path == m.path && mp.read_only);
        out.push(MountPlan {
            volume: m.volume.to_string(),
            target: m.path.clone(),
            read_only: ro || mp_ro,
        });
    }
    for mp in &app.mount_points {
        if out.iter().any(|m| m.target == mp.path) || ra.mounts.iter().any(|m| m.volume == mp.name)
        {
            continue;
        }
        if let Some(ro) = vol_ro(mp.name.as_str()) {
            out.push(MountPlan {
                volume: mp.name.to_string(),
                target: mp.path.clone(),
                read_only: ro || mp.read_only,
            });
        }
    }
    Ok(out)
}

/// The environment guest-init gives the app: PATH, AC_APP_NAME, container, then the app's
/// environment (which may override PATH but never AC_APP_NAME).
pub fn app_env(app_name: &str, env: &[appc::schema::EnvVar]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("AC_APP_NAME".into(), app_name.into()),
        ("container".into(), CONTAINER_ENV.into()),
    ];
    for e in env {
        if e.name == "AC_APP_NAME" {
            continue;
        }
        match out.iter_mut().find(|(k, _)| *k == e.name) {
            Some(slot) => slot.1 = e.value.clone(),
            None => out.push((e.name.clone(), e.value.clone())),
        }
    }
    out
}

/// What the image's own app section sets with the last of its isolators `pick` recognizes (the
/// one that wins, as in the pod's merge), if any.
fn image_last<T>(
    image_app: Option<&appc::schema::App>,
    pick: impl Fn(IsolatorValue) -> Option<T>,
) -> Option<T> {
    image_app?
        .isolators
        .iter()
        .rev()
        .find_map(|i| i.parsed().ok().and_then(&pick))
}

/// Builds the plan. `images` are the apps' image manifests in pod-manifest order.
pub fn build_plan(
    uuid: &str,
    pm: &PodManifest,
    images: &[ImageManifest],
    rt: &RunOptions,
) -> Result<Plan, PodError> {
    let mut apps = Vec::new();
    for (i, ra) in pm.apps.iter().enumerate() {
        let image_app = images.get(i).and_then(|m| m.app.as_ref());
        let app = ra
            .app
            .as_ref()
            .or(image_app)
            .ok_or_else(|| PodError::Config(format!("app {} has no app section", ra.name)))?;
        if app.exec.is_empty() {
            return Err(PodError::Config(format!("app {} has no exec", ra.name)));
        }
        let mut caps: Vec<String> = appc::types::DEFAULT_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .collect();
        let (mut nnp, mut mem, mut cpu, mut ignored) = (false, None, None, Vec::new());
        let (mut shares, mut oom) = (None, None);
        let mut retained = false;
        let mut retain_set: Option<Vec<String>> = None;
        let mut seccomp = None;
        for iso in app.isolators.iter().chain(&pm.isolators) {
            let parsed = iso.parsed().map_err(|e| {
                PodError::Config(format!("app {}: isolator {}: {e}", ra.name, iso.name))
            })?;
            match parsed {
                IsolatorValue::CapsRetain(set) => {
                    caps = set.clone();
                    retain_set = Some(set);
                    retained = true;
                }
                IsolatorValue::CapsRemove(set) => caps.retain(|c| !set.contains(c)),
                IsolatorValue::NoNewPrivileges(b) => nnp = b,
                IsolatorValue::ResourceMemory { limit, .. } => mem = limit.map(|q| q.as_units()),
                IsolatorValue::ResourceCpu { limit, .. } => cpu = limit.map(|q| q.as_millis()),
                IsolatorValue::SeccompRetain(set) => seccomp = Some((true, set)),
                IsolatorValue::SeccompRemove(set) => seccomp = Some((false, set)),
                IsolatorValue::CpuShares(n) => shares = Some(u64::from(n)),
                IsolatorValue::OomScoreAdj(n) => oom = Some(n),
                _ => ignored.push(iso.name.to_string()),
            }
        }
        // An image may not make its app the last the host's OOM killer picks: a negative
        // score only from the command line or pod manifest (a value the image's own isolator
        // also gives counts as the image's).
        if let Some(n) = oom.filter(|n| *n < 0) {
            let from_image = image_app.is_some_and(|a| {
                a.isolators.iter().any(|i| {
                    i.name.as_str() == appc::types::isolator_names::OOM_SCORE_ADJ
                        && matches!(i.parsed(), Ok(IsolatorValue::OomScoreAdj(m)) if m == n)
                })
            });
            if from_image {
                oom = Some(0);
                ignored.push(format!(
                    "os/linux/oom-score-adj {n} of the image (0 instead; --oom-score-adj sets a negative one)"
                ));
            }
        }
        // An image may not widen its app's capabilities beyond rkt's default set (on an ns host
        // `CAP_SYS_ADMIN` or `CAP_SYS_MODULE` is the host): only the command line
        // (`--caps-retain`) or a pod manifest grants more (a retain set equal to the image's
        // own counts as the image's), as for a negative OOM score.
        let image_retain = image_last(image_app, |v| match v {
            IsolatorValue::CapsRetain(set) => Some(set),
            _ => None,
        });
        if retain_set.is_some() && retain_set == image_retain {
            let beyond: Vec<String> = caps
                .iter()
                .filter(|c| !appc::types::DEFAULT_CAPABILITIES.contains(&c.as_str()))
                .cloned()
                .collect();
            if !beyond.is_empty() {
                caps.retain(|c| !beyond.contains(c));
                ignored.push(format!(
                    "os/linux/capabilities-retain-set of the image: {} not granted (beyond rkt's default set; --caps-retain grants them)",
                    beyond.join(", ")
                ));
            }
        }
        if rt.insecure.capabilities {
            // rkt's `--disable-capabilities-restriction`: the isolators no longer bound the set.
            caps = appc::types::KNOWN_CAPABILITIES
                .iter()
                .map(|c| c.to_string())
                .collect();
            retained = false;
        }
        // Nor may an image loosen its app's system call filter beyond rkt's default one: only
        // `--seccomp` or a pod manifest does (a set equal to the image's own counts as the
        // image's).
        let image_seccomp = image_last(image_app, |v| match v {
            IsolatorValue::SeccompRetain(set) => Some((true, set)),
            IsolatorValue::SeccompRemove(set) => Some((false, set)),
            _ => None,
        });
        let from_image = seccomp.is_some() && seccomp == image_seccomp;
        let seccomp = match (rt.insecure.seccomp, seccomp) {
            (true, _) => None,
            (false, None) => Some(super::seccomp::default_plan()),
            (false, Some((retain, set))) => {
                let mut plan = super::seccomp::resolve(retain, &set)
                    .map_err(|e| PodError::Config(format!("app {}: seccomp: {e}", ra.name)))?;
                if from_image {
                    let widened = super::seccomp::within_default(&mut plan);
                    if !widened.is_empty() {
                        let shown: Vec<&str> = widened.iter().take(6).copied().collect();
                        let more = widened.len().saturating_sub(shown.len());
                        ignored.push(format!(
                            "the image's seccomp set allows what rkt's default filter denies ({}{}): denied too (--seccomp or --insecure-options=seccomp allow them)",
                            shown.join(", "),
                            if more > 0 { format!(" and {more} more") } else { String::new() }
                        ));
                    }
                }
                Some(plan)
            }
        };
        let stdio = super::args::stdio_of(
            ra.annotations
                .iter()
                .map(|a| (a.name.as_str(), a.value.as_str())),
        )
        .map_err(|e| PodError::Config(format!("app {}: {e}", ra.name)))?;
        let handler = |n: &str| app.event_handler(n).map(|h| h.exec.clone());
        apps.push(AppPlan {
            name: ra.name.to_string(),
            image_id: ra.image.id.clone(),
            exec: app.exec.clone(),
            env: app_env(ra.name.as_str(), &app.environment),
            user: app.user.clone(),
            group: app.group.clone(),
            supplementary_gids: app.supplementary_gids.clone(),
            working_directory: app.working_dir().to_string(),
            pre_start: handler("pre-start"),
            post_stop: handler("post-stop"),
            read_only_rootfs: ra.read_only_root_fs,
            mounts: app_mounts(pm, ra, app)?,
            capabilities: caps,
            capabilities_retained: retained,
            no_new_privileges: nnp,
            insecure_paths: rt.insecure.paths,
            memory_limit: mem,
            cpu_limit_millis: cpu,
            cpu_shares: shares,
            oom_score_adj: oom,
            ignored_isolators: ignored,
            seccomp,
            stdio,
        });
    }
    Ok(Plan {
        version: PLAN_VERSION,
        uuid: uuid.to_string(),
        hostname: if rt.hostname.is_empty() {
            format!("rkt-{uuid}")
        } else {
            rt.hostname.clone()
        },
        interactive: rt.interactive,
        debug: rt.debug,
        stop_grace_secs: DEFAULT_STOP_GRACE_SECS,
        apps,
        net: NetPlan {
            ports: port_plans(pm, images)?,
            ..rt.net_plan.clone()
        },
        mutable: crate::pod::mutable::is_mutable(pm),
        kvm_snapshot: rt.kvm_snapshot,
        host_ipc: rt.host_ipc,
        // Read from the pod directory by the launch (`layout::private_users`).
        private_users: None,
        pids_limit: rt.pids_limit,
    })
}

/// The pod's `ports` (`--port`) resolved against the port each app declares under that name:
/// protocol and port inside the pod (`podPort` when the pod manifest gives one).
pub fn port_plans(pm: &PodManifest, images: &[ImageManifest]) -> Result<Vec<PortPlan>, PodError> {
    let mut out = Vec::new();
    for ep in &pm.ports {
        let declared = pm.apps.iter().enumerate().find_map(|(i, ra)| {
            let app = ra
                .app
                .as_ref()
                .or_else(|| images.get(i).and_then(|m| m.app.as_ref()))?;
            app.ports.iter().find(|p| p.name == ep.name).cloned()
        });
        let Some(p) = ep.pod_port.clone().or(declared) else {
            return Err(PodError::Config(format!(
                "--port: no app declares a port named {:?}",
                ep.name.as_str()
            )));
        };
        let bad = |what: &str, v: u32| {
            PodError::Config(format!(
                "port {}: {what} {v} out of range",
                ep.name.as_str()
            ))
        };
        let container_port = u16::try_from(p.port)
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| bad("port", p.port))?;
        let host_port = u16::try_from(ep.host_port)
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| bad("host port", ep.host_port))?;
        out.push(PortPlan {
            name: ep.name.to_string(),
            protocol: if p.protocol.is_empty() {
                "tcp".into()
            } else {
                p.protocol.to_ascii_lowercase()
            },
            container_port,
            host_port,
            host_ip: ep.host_ip.clone().unwrap_or_default(),
        });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn plan_resolves_env_caps_limits_and_mounts() {
        let pm = serde_json::json!({
            "acVersion": "0.8.11", "acKind": "PodManifest",
            "volumes": [{"name": "db", "kind": "empty"}, {"name": "ro", "kind": "host", "source": "/tmp", "readOnly": true}],
            "apps": [{
                "name": "main",
                "image": {"id": format!("sha512-{}", "a".repeat(128))},
                "app": {
                    "exec": ["/bin/main", "x"], "user": "1000", "group": "100",
                    "workingDirectory": "/work",
                    "environment": [{"name": "PATH", "value": "/bin"}, {"name": "AC_APP_NAME", "value": "evil"}, {"name": "K", "value": "v"}],
                    "eventHandlers": [{"name": "pre-start", "exec": ["/bin/pre"]}],
                    "mountPoints": [{"name": "db", "path": "/db"}],
                    "isolators": [
                        {"name": "resource/memory", "value": {"limit": "64Mi"}},
                        {"name": "resource/cpu", "value": {"limit": "500m"}},
                        {"name": "os/linux/capabilities-remove-set", "value": {"set": ["CAP_MKNOD"]}},
                        {"name": "os/linux/no-new-privileges", "value": true},
                        {"name": "os/linux/oom-score-adj", "value": 5},
                        {"name": "example.com/frobnicate", "value": {"level": 3}}
                    ]
                },
                "mounts": [{"volume": "ro", "path": "/ro"}]
            }]
        });
        let pm = PodManifest::from_json(pm.to_string().as_bytes()).unwrap();
        let plan = build_plan("u-1", &pm, &[], &RunOptions::default()).unwrap();
        assert_eq!(plan.hostname, "rkt-u-1");
        let a = &plan.apps[0];
        assert_eq!(a.env[0], ("PATH".to_string(), "/bin".to_string()));
        assert_eq!(a.env[1], ("AC_APP_NAME".to_string(), "main".to_string()));
        assert_eq!(a.env[2], ("container".to_string(), "rkt".to_string()));
        assert_eq!(a.env[3], ("K".to_string(), "v".to_string()));
        assert_eq!(a.capabilities.len(), 13);
        assert!(!a.capabilities.contains(&"CAP_MKNOD".to_string()));
        assert!(
            !a.capabilities_retained,
            "a remove-set gives a non-root app nothing"
        );
        assert!(a.no_new_privileges);
        assert_eq!(a.memory_limit, Some(64 << 20));
        assert_eq!(a.cpu_limit_millis, Some(500));
        assert_eq!(
            a.ignored_isolators,
            vec!["example.com/frobnicate".to_string()],
            "unregistered names are reported"
        );
        assert_eq!(a.oom_score_adj, Some(5));
        assert_eq!(a.pre_start, Some(vec!["/bin/pre".to_string()]));
        assert_eq!(a.working_directory, "/work");
        assert_eq!(
            a.mounts,
            vec![
                MountPlan {
                    volume: "ro".into(),
                    target: "/ro".into(),
                    read_only: true
                },
                MountPlan {
                    volume: "db".into(),
                    target: "/db".into(),
                    read_only: false
                },
            ]
        );
    }

    #[test]
    fn retain_set_marks_the_capabilities_retained() {
        let pm = serde_json::json!({
            "acVersion": "0.8.11", "acKind": "PodManifest",
            "apps": [{
                "name": "main",
                "image": {"id": format!("sha512-{}", "a".repeat(128))},
                "app": {
                    "exec": ["/bin/main"], "user": "65534", "group": "65534",
                    "isolators": [{"name": "os/linux/capabilities-retain-set",
                                   "value": {"set": ["CAP_DAC_OVERRIDE"]}}]
                }
            }]
        });
        let pm = PodManifest::from_json(pm.to_string().as_bytes()).unwrap();
        let plan = build_plan("u-1", &pm, &[], &RunOptions::default()).unwrap();
        let a = &plan.apps[0];
        assert_eq!(a.capabilities, vec!["CAP_DAC_OVERRIDE".to_string()]);
        assert!(a.capabilities_retained);
    }

    /// A pod manifest of one app with `isolators`.
    fn one_app(isolators: serde_json::Value) -> PodManifest {
        let pm = serde_json::json!({
            "acVersion": "0.8.11", "acKind": "PodManifest",
            "apps": [{
                "name": "main",
                "image": {"id": format!("sha512-{}", "a".repeat(128))},
                "app": {"exec": ["/bin/main"], "user": "0", "group": "0", "isolators": isolators}
            }]
        });
        PodManifest::from_json(pm.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn an_image_cannot_widen_its_capabilities_beyond_the_default_set() {
        let image: ImageManifest = serde_json::from_value(serde_json::json!({
            "acKind": "ImageManifest", "acVersion": "0.8.11", "name": "example.com/wide",
            "app": {"exec": ["/bin/x"], "user": "0", "group": "0",
                "isolators": [{"name": "os/linux/capabilities-retain-set",
                    "value": {"set": ["CAP_SYS_ADMIN", "CAP_CHOWN", "CAP_SYS_MODULE"]}}]}
        }))
        .unwrap();
        let pm_with = |app: serde_json::Value| -> PodManifest {
            serde_json::from_value(serde_json::json!({
                "acKind": "PodManifest", "acVersion": "0.8.11",
                "apps": [{"name": "a", "image": {"id": format!("sha512-{}", "0".repeat(64))},
                    "app": app}]
            }))
            .unwrap()
        };
        let image_app = serde_json::to_value(image.app.clone().unwrap()).unwrap();
        // The image's own set (the pod manifest's app is the image's, as `rkt run` builds it).
        let plan = build_plan(
            "u",
            &pm_with(image_app.clone()),
            std::slice::from_ref(&image),
            &RunOptions::default(),
        )
        .unwrap();
        let a = &plan.apps[0];
        assert_eq!(a.capabilities, vec!["CAP_CHOWN".to_string()]);
        assert!(
            a.ignored_isolators
                .iter()
                .any(|i| i.contains("CAP_SYS_ADMIN, CAP_SYS_MODULE not granted")),
            "{:?}",
            a.ignored_isolators
        );
        // `--caps-retain` (a different set) grants them.
        let mut cli = image_app.clone();
        cli["isolators"] = serde_json::json!([{"name": "os/linux/capabilities-retain-set",
            "value": {"set": ["CAP_SYS_ADMIN", "CAP_CHOWN"]}}]);
        let plan = build_plan(
            "u",
            &pm_with(cli),
            std::slice::from_ref(&image),
            &RunOptions::default(),
        )
        .unwrap();
        assert_eq!(
            plan.apps[0].capabilities,
            vec!["CAP_SYS_ADMIN".to_string(), "CAP_CHOWN".to_string()]
        );
        assert!(plan.apps[0].ignored_isolators.is_empty());
        // `--insecure-options=capabilities`: every capability, as before.
        let mut rt = RunOptions::default();
        rt.insecure.capabilities = true;
        let plan = build_plan("u", &pm_with(image_app), &[image], &rt).unwrap();
        assert_eq!(
            plan.apps[0].capabilities.len(),
            appc::types::KNOWN_CAPABILITIES.len()
        );
    }

    #[test]
    fn insecure_capabilities_bound_the_set_by_nothing() {
        let retain = one_app(
            serde_json::json!([{"name": "os/linux/capabilities-retain-set",
            "value": {"set": ["CAP_CHOWN"]}}]),
        );
        let mut rt = RunOptions::default();
        rt.insecure.capabilities = true;
        let a = &build_plan("u-1", &retain, &[], &rt).unwrap().apps[0];
        assert_eq!(a.capabilities.len(), appc::types::KNOWN_CAPABILITIES.len());
        assert!(!a.capabilities_retained, "a non-root app still holds none");
    }

    #[test]
    fn seccomp_default_isolator_and_insecure_option() {
        let none = one_app(serde_json::json!([]));
        let plan = build_plan("u-1", &none, &[], &RunOptions::default()).unwrap();
        assert_eq!(
            plan.apps[0].seccomp,
            Some(super::super::seccomp::default_plan()),
            "an app without a seccomp isolator gets the default"
        );
        let mut insecure = RunOptions::default();
        insecure.insecure.seccomp = true;
        let plan = build_plan("u-1", &none, &[], &insecure).unwrap();
        assert_eq!(plan.apps[0].seccomp, None);

        let retain = one_app(serde_json::json!([{"name": "os/linux/seccomp-retain-set",
            "value": {"set": ["read", "write"], "errno": "ENOSYS"}}]));
        let plan = build_plan("u-1", &retain, &[], &RunOptions::default()).unwrap();
        let s = plan.apps[0].seccomp.as_ref().unwrap();
        assert!(s.retain);
        assert_eq!((s.errno, s.syscalls.as_slice()), (Some(38), &[0, 1][..]));
        assert!(plan.apps[0].ignored_isolators.is_empty());

        let bad = one_app(serde_json::json!([{"name": "os/linux/seccomp-remove-set",
            "value": {"set": ["frobnicate"]}}]));
        let e = build_plan("u-1", &bad, &[], &RunOptions::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains("app main: seccomp: unknown system call \"frobnicate\""),
            "{e}"
        );
    }
}
