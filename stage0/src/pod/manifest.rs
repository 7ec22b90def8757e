//! Building the pod manifest (`pod`) from the command line and the resolved images: app names,
//! image IDs (sha512), per-app `app` overrides (exec, user, group, working dir, args,
//! environment in rkt's precedence), mounts, isolators and volumes.

use std::path::Path;

use appc::schema::{App, EnvVar, Mount, PodManifest, RuntimeApp, RuntimeImage, Volume};
use appc::types::{isolator_names, Isolator};
use appc::{AcIdentifier, AcName, ImageManifest};

use super::args::{AppOptions, PodOptions};
use super::PodError;

/// One app's image, resolved in the store.
#[derive(Debug, Clone)]
pub struct ResolvedApp {
    /// The command-line options of this app.
    pub opts: AppOptions,
    /// Image ID (`sha512-...`).
    pub image_id: String,
    /// The image manifest.
    pub manifest: ImageManifest,
}

/// Pod-wide environment sources, lowest precedence first (image env and `--environment` sit
/// between/after them): parent env (`--inherit-env`) < image env < `--set-env-file` <
/// `--set-env` < `--environment`.
#[derive(Debug, Clone, Default)]
pub struct EnvSources {
    /// The parent's environment when `--inherit-env` is given.
    pub inherited: Vec<(String, String)>,
    /// `--set-env-file` contents, in order.
    pub from_files: Vec<(String, String)>,
    /// `--set-env`, in order.
    pub set_env: Vec<(String, String)>,
}

/// Largest `--set-env-file` accepted, in bytes.
pub const MAX_ENV_FILE_BYTES: u64 = 1 << 20;

/// Reads a `--set-env-file` (at most [`MAX_ENV_FILE_BYTES`], UTF-8): `VAR=VALUE` lines;
/// empty lines and lines starting with `#` or `;` are ignored.
pub fn read_env_file(path: &Path) -> Result<Vec<(String, String)>, PodError> {
    let data = crate::util::read_bounded(path, MAX_ENV_FILE_BYTES)
        .map_err(|e| PodError::io("read --set-env-file", path, e))?;
    let text = String::from_utf8(data)
        .map_err(|_| PodError::Config(format!("--set-env-file {} is not UTF-8", path.display())))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        match l.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => out.push((k.trim().to_string(), v.to_string())),
            _ => {
                return Err(PodError::Config(format!(
                    "{}:{}: expected VAR=VALUE",
                    path.display(),
                    n + 1
                )))
            }
        }
    }
    Ok(out)
}

/// Sets `name=value` in `env`, replacing an existing entry in place (keeping its position).
pub fn set_env(env: &mut Vec<EnvVar>, name: &str, value: &str) {
    match env.iter_mut().find(|e| e.name == name) {
        Some(e) => e.value = value.to_string(),
        None => env.push(EnvVar {
            name: name.to_string(),
            value: value.to_string(),
        }),
    }
}

/// Whether `name` is a valid appc environment variable name.
fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The app's effective environment in rkt's precedence.
pub fn effective_env(
    image_env: &[EnvVar],
    sources: &EnvSources,
    app_env: &[(String, String)],
) -> Vec<EnvVar> {
    let mut env = Vec::new();
    for (k, v) in &sources.inherited {
        if valid_env_name(k) {
            set_env(&mut env, k, v);
        }
    }
    for e in image_env {
        set_env(&mut env, &e.name, &e.value);
    }
    for (k, v) in sources
        .from_files
        .iter()
        .chain(&sources.set_env)
        .chain(app_env)
    {
        set_env(&mut env, k, v);
    }
    env
}

/// The default app name for an image: the last path component of its name, as an ACName.
pub fn default_app_name(image_name: &str) -> AcName {
    AcName::sanitize(image_name.rsplit('/').next().unwrap_or(image_name))
}

fn replace_isolator(list: &mut Vec<Isolator>, name: &str, value: serde_json::Value) {
    list.retain(|i| i.name.as_str() != name);
    if let Ok(n) = AcIdentifier::new(name) {
        list.push(Isolator::new(n, value));
    }
}

/// Builds the `app` of one pod app: the image's app with the command-line overrides.
fn effective_app(r: &ResolvedApp, sources: &EnvSources) -> Result<App, PodError> {
    let o = &r.opts;
    let mut app = match (&r.manifest.app, &o.exec) {
        (Some(a), _) => a.clone(),
        (None, Some(_)) => App {
            user: "0".into(),
            group: "0".into(),
            ..Default::default()
        },
        (None, None) => {
            return Err(PodError::Config(format!(
                "image {} has no app; give --exec",
                r.manifest.name
            )))
        }
    };
    if let Some(e) = &o.exec {
        app.exec = vec![e.clone()];
    }
    if let Some(args) = &o.args {
        app.exec.extend(args.iter().cloned());
    }
    if app.exec.is_empty() {
        return Err(PodError::Config(format!(
            "image {} has no exec; give --exec",
            r.manifest.name
        )));
    }
    if let Some(u) = &o.user {
        app.user = u.clone();
    }
    if let Some(g) = &o.group {
        app.group = g.clone();
    }
    if let Some(gids) = &o.supplementary_gids {
        app.supplementary_gids = gids.clone();
    }
    if let Some(w) = &o.working_dir {
        app.working_directory = Some(w.clone());
    }
    app.environment = effective_env(&app.environment, sources, &o.environment);
    if let Some(m) = &o.memory {
        replace_isolator(
            &mut app.isolators,
            isolator_names::MEMORY,
            serde_json::json!({"request": m, "limit": m}),
        );
    }
    if let Some(c) = &o.cpu {
        replace_isolator(
            &mut app.isolators,
            isolator_names::CPU,
            serde_json::json!({"request": c, "limit": c}),
        );
    }
    if let Some(set) = &o.caps_retain {
        replace_isolator(
            &mut app.isolators,
            isolator_names::CAPS_RETAIN,
            serde_json::json!({ "set": set }),
        );
    }
    if let Some(n) = o.cpu_shares {
        replace_isolator(
            &mut app.isolators,
            isolator_names::CPU_SHARES,
            serde_json::json!(n),
        );
    }
    if let Some(n) = o.oom_score_adj {
        replace_isolator(
            &mut app.isolators,
            isolator_names::OOM_SCORE_ADJ,
            serde_json::json!(n),
        );
    }
    if let Some((retain, errno, calls)) = &o.seccomp {
        let (name, other) = if *retain {
            (
                isolator_names::SECCOMP_RETAIN,
                isolator_names::SECCOMP_REMOVE,
            )
        } else {
            (
                isolator_names::SECCOMP_REMOVE,
                isolator_names::SECCOMP_RETAIN,
            )
        };
        app.isolators.retain(|i| i.name.as_str() != other);
        let mut v = serde_json::json!({ "set": calls });
        if let (Some(e), Some(m)) = (errno, v.as_object_mut()) {
            m.insert("errno".into(), e.clone().into());
        }
        replace_isolator(&mut app.isolators, name, v);
    }
    for (k, v) in &o.user_annotations {
        app.user_meta.annotations.insert(k.clone(), v.clone());
    }
    for (k, v) in &o.user_labels {
        app.user_meta.labels.insert(k.clone(), v.clone());
    }
    if let Some(set) = &o.caps_remove {
        replace_isolator(
            &mut app.isolators,
            isolator_names::CAPS_REMOVE,
            serde_json::json!({ "set": set }),
        );
    }
    Ok(app)
}

/// `--annotation K=V` flags as manifest annotations (each K an AC identifier).
fn annotations_of(flags: &[(String, String)]) -> Result<Vec<appc::schema::Annotation>, PodError> {
    flags
        .iter()
        .map(|(k, v)| {
            let name = AcIdentifier::new(k.as_str())
                .map_err(|_| PodError::Config(format!("--annotation: invalid name {k:?}")))?;
            Ok(appc::schema::Annotation {
                name,
                value: v.clone(),
            })
        })
        .collect()
}

/// Gives each of `app`'s mount points that neither `mounts` nor a volume of the same name
/// covers an implicit `kind=empty` volume, reported through `warn` (as rkt does).
pub(crate) fn add_implicit_volumes(
    volumes: &mut Vec<Volume>,
    name: &AcName,
    app: &App,
    mounts: &[Mount],
    warn: &mut dyn FnMut(String),
) {
    for mp in &app.mount_points {
        let covered = mounts
            .iter()
            .any(|m| m.path == mp.path || m.volume == mp.name);
        if !covered && !volumes.iter().any(|v| v.name == mp.name) {
            warn(format!(
                "no volume specified for mount point {:?} of app {name}, implicitly creating an \"empty\" volume; it is removed when the pod is garbage-collected",
                mp.name.as_str()
            ));
            volumes.push(Volume {
                name: mp.name.clone(),
                kind: "empty".into(),
                source: None,
                read_only: Some(mp.read_only),
                recursive: None,
                mode: None,
                uid: None,
                gid: None,
            });
        }
    }
}

/// Reads and parses the appc pod manifest `--pod-manifest` names (at most
/// [`pod_abi::podfile::MANIFEST_MAX`] bytes).
pub fn read_user_pod_manifest(path: &Path) -> Result<PodManifest, PodError> {
    let data = crate::util::read_bounded(path, pod_abi::podfile::MANIFEST_MAX as u64)
        .map_err(|e| PodError::io("read --pod-manifest", path, e))?;
    PodManifest::from_json(&data)
        .map_err(|e| PodError::Config(format!("--pod-manifest {}: {e}", path.display())))
}

/// Checks a `--pod-manifest` whose images were resolved in the store (`images`, in app
/// order; each app's `image.id` already the store's full ID): every app has an app section
/// (its own or its image's), every exposed port is declared by an app, mount points without a
/// volume get implicit empty ones (reported through `warn`), and the volumes pass the checks a
/// command line's do.
pub fn check_user_pod_manifest(
    pm: &mut PodManifest,
    images: &[ImageManifest],
    warn: &mut dyn FnMut(String),
) -> Result<(), PodError> {
    pm.validate_reified()
        .map_err(|e| PodError::Config(format!("pod manifest: {e}")))?;
    // Each app's effective app section: its own, else its image's.
    let effective = pm
        .apps
        .iter()
        .zip(images)
        .map(|(ra, image)| {
            ra.app.clone().or_else(|| image.app.clone()).ok_or_else(|| {
                PodError::Config(format!(
                    "app {}: neither the pod manifest nor image {} has an app section",
                    ra.name, image.name
                ))
            })
        })
        .collect::<Result<Vec<App>, PodError>>()?;
    let mut volumes = pm.volumes.clone();
    for (ra, app) in pm.apps.iter().zip(&effective) {
        add_implicit_volumes(&mut volumes, &ra.name, app, &ra.mounts, warn);
    }
    pm.volumes = volumes;
    for p in &pm.ports {
        if !effective
            .iter()
            .any(|a| a.ports.iter().any(|ap| ap.name == p.name))
        {
            return Err(PodError::Config(format!(
                "pod manifest: no app declares the exposed port {:?}",
                p.name.as_str()
            )));
        }
    }
    super::layout::check_volumes(pm, &effective.iter().map(Some).collect::<Vec<_>>())
}

/// Builds and validates the pod manifest. Mount points without a matching volume get an
/// implicit `kind=empty` volume (reported through `warn`, like rkt).
pub fn build_pod_manifest(
    pod: &PodOptions,
    sources: &EnvSources,
    apps: &[ResolvedApp],
    warn: &mut dyn FnMut(String),
) -> Result<PodManifest, PodError> {
    let mut pm = PodManifest::new();
    pm.volumes = pod.volumes.clone();
    {
        let mut seen = std::collections::BTreeSet::new();
        for v in &pm.volumes {
            if !seen.insert(v.name.as_str().to_string()) {
                return Err(PodError::Config(format!("volume {} given twice", v.name)));
            }
        }
    }
    for r in apps {
        let name = match &r.opts.name {
            Some(n) => AcName::new(n.as_str())
                .map_err(|_| PodError::Config(format!("invalid app name {n:?}")))?,
            None => default_app_name(r.manifest.name.as_str()),
        };
        if pm.apps.iter().any(|a| a.name == name) {
            return Err(PodError::Config(format!(
                "app name {name} is used twice; give one of the images --name"
            )));
        }
        let app = effective_app(r, sources)?;
        let mut mounts = Vec::new();
        for m in pod.mounts.iter().chain(&r.opts.mounts) {
            let vol = AcName::new(m.volume.as_str()).map_err(|_| {
                PodError::Config(format!("--mount: invalid volume name {:?}", m.volume))
            })?;
            if !pm.volumes.iter().any(|v| v.name == vol) {
                return Err(PodError::Config(format!(
                    "--mount refers to volume {:?}, which no --volume defines",
                    m.volume
                )));
            }
            mounts.push(Mount {
                volume: vol,
                path: m.target.clone(),
                app_volume: None,
            });
        }
        add_implicit_volumes(&mut pm.volumes, &name, &app, &mounts, warn);
        let image_name = Some(r.manifest.name.clone());
        let annotations = annotations_of(&r.opts.annotations)?;
        pm.apps.push(RuntimeApp {
            name,
            image: RuntimeImage {
                id: r.image_id.clone(),
                name: image_name,
                labels: r.manifest.labels.clone(),
            },
            app: Some(app),
            read_only_root_fs: r.opts.readonly_rootfs,
            mounts,
            annotations,
        });
    }
    for (name, ip, port) in &pod.ports {
        let declared = pm
            .apps
            .iter()
            .filter_map(|a| a.app.as_ref())
            .any(|a| a.ports.iter().any(|p| p.name.as_str() == name));
        if !declared {
            return Err(PodError::Config(format!(
                "--port: no app declares a port named {name:?}"
            )));
        }
        let name = AcName::new(name.as_str())
            .map_err(|_| PodError::Config(format!("--port: invalid name {name:?}")))?;
        pm.ports.push(appc::schema::ExposedPort {
            name,
            host_port: *port,
            host_ip: ip.clone(),
            pod_port: None,
        });
    }
    pm.ports.extend(pod.pod_ports.iter().cloned());
    let pod_annotations = annotations_of(&pod.annotations)?;
    if let Some(a) = pod_annotations
        .iter()
        .find(|a| a.name.as_str() == pod_abi::plan::MUTABLE_ANNOTATION)
    {
        return Err(PodError::Config(format!(
            "--annotation: {} is rkt's own annotation",
            a.name
        )));
    }
    pm.annotations.extend(pod_annotations);
    pm.user_meta
        .annotations
        .extend(pod.user_annotations.iter().cloned());
    pm.user_meta.labels.extend(pod.user_labels.iter().cloned());
    if pod.mutable {
        pm.annotations.push(appc::schema::Annotation {
            name: AcIdentifier::new(pod_abi::plan::MUTABLE_ANNOTATION)
                .map_err(|_| PodError::Config("mutable annotation".into()))?,
            value: "true".into(),
        });
    }
    pm.validate()
        .map_err(|e| PodError::Config(format!("pod manifest: {e}")))?;
    // Volume errors (symlinked or missing sources, nested targets) before the pod exists.
    let apps: Vec<Option<&App>> = pm.apps.iter().map(|a| a.app.as_ref()).collect();
    super::layout::check_volumes(&pm, &apps)?;
    Ok(pm)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::pod::args::{Mode, RunCommand};

    fn image(name: &str, json_app: serde_json::Value) -> ImageManifest {
        let v = serde_json::json!({
            "acKind": "ImageManifest", "acVersion": "0.8.11", "name": name, "app": json_app
        });
        ImageManifest::from_json(v.to_string().as_bytes()).unwrap()
    }

    fn resolved(cmd: &RunCommand, manifests: Vec<ImageManifest>) -> Vec<ResolvedApp> {
        cmd.apps
            .iter()
            .zip(manifests)
            .map(|(o, m)| ResolvedApp {
                opts: o.clone(),
                image_id: format!("sha512-{}", "ab".repeat(64)),
                manifest: m,
            })
            .collect()
    }

    #[test]
    fn user_pod_manifest_checks() {
        let id = format!("sha512-{}", "ab".repeat(64));
        let pm = |app: serde_json::Value, extra: serde_json::Value| {
            let mut v = serde_json::json!({
                "acKind": "PodManifest", "acVersion": "0.8.11",
                "apps": [{ "name": "a", "image": { "id": id }, "app": app }]
            });
            if let (Some(o), Some(x)) = (v.as_object_mut(), extra.as_object()) {
                o.extend(x.clone());
            }
            PodManifest::from_json(v.to_string().as_bytes()).unwrap()
        };
        let with_mp = serde_json::json!({
            "exec": ["/x"], "user": "0", "group": "0",
            "mountPoints": [{ "name": "scratch", "path": "/s" }]
        });
        // Neither the pod nor the image has an app section.
        let no_app = image("example.com/n", serde_json::Value::Null);
        let mut m = pm(serde_json::Value::Null, serde_json::json!({}));
        let e = check_user_pod_manifest(&mut m, &[no_app], &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("app section"), "{e}");
        // The image's app is used when the pod gives none; its mount point gets an implicit
        // empty volume, with a warning.
        let img = image("example.com/i", with_mp.clone());
        let mut m = pm(serde_json::Value::Null, serde_json::json!({}));
        let mut warned = Vec::new();
        check_user_pod_manifest(&mut m, std::slice::from_ref(&img), &mut |w| warned.push(w))
            .unwrap();
        assert_eq!(m.volumes.len(), 1);
        assert_eq!(m.volumes[0].kind, "empty");
        assert_eq!(warned.len(), 1, "{warned:?}");
        // An exposed port no app declares.
        let mut m = pm(
            with_mp,
            serde_json::json!({ "ports": [{ "name": "http", "hostPort": 80 }] }),
        );
        let e = check_user_pod_manifest(&mut m, &[img], &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("exposed port"), "{e}");
    }

    #[test]
    fn env_precedence_matches_rkt() {
        let img = vec![
            EnvVar {
                name: "A".into(),
                value: "image".into(),
            },
            EnvVar {
                name: "B".into(),
                value: "image".into(),
            },
        ];
        let src = EnvSources {
            inherited: vec![("A".into(), "parent".into()), ("P".into(), "parent".into())],
            from_files: vec![("B".into(), "file".into()), ("C".into(), "file".into())],
            set_env: vec![("C".into(), "set".into()), ("D".into(), "set".into())],
        };
        let env = effective_env(&img, &src, &[("D".into(), "app".into())]);
        let get = |k: &str| env.iter().find(|e| e.name == k).map(|e| e.value.clone());
        assert_eq!(get("A").as_deref(), Some("image"));
        assert_eq!(get("P").as_deref(), Some("parent"));
        assert_eq!(get("B").as_deref(), Some("file"));
        assert_eq!(get("C").as_deref(), Some("set"));
        assert_eq!(get("D").as_deref(), Some("app"));
    }

    #[test]
    fn nomad_isolators_validate() {
        let argv: Vec<String> = [
            "example.com/x",
            "--memory=268435456",
            "--cpu-shares=512",
            "--oom-score-adj=-5",
            "--seccomp=mode=retain,errno=EPERM,read,write",
            "--annotation=a=b",
            "--user-label=k=v",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let cmd = RunCommand::parse(Mode::Run, &argv).unwrap();
        let app = serde_json::json!({"exec": ["/x"], "user": "0", "group": "0"});
        let apps = resolved(&cmd, vec![image("example.com/x", app)]);
        let pm = build_pod_manifest(&cmd.pod, &EnvSources::default(), &apps, &mut |_| {}).unwrap();
        let a = pm.apps[0].app.as_ref().unwrap();
        let names: Vec<&str> = a.isolators.iter().map(|i| i.name.as_str()).collect();
        for n in [
            "resource/memory",
            "os/linux/cpu-shares",
            "os/linux/oom-score-adj",
            "os/linux/seccomp-retain-set",
        ] {
            assert!(names.contains(&n), "{names:?}");
        }
        assert_eq!(a.user_meta.labels.get("k").map(String::as_str), Some("v"));
        assert_eq!(pm.apps[0].annotations[0].value, "b");
        // A --port must name a port some app declares.
        let cmd = RunCommand::parse(
            Mode::Run,
            &["--port=www:8080".to_string(), "example.com/x".to_string()],
        )
        .unwrap();
        let app = serde_json::json!({"exec": ["/x"], "user": "0", "group": "0"});
        let apps = resolved(&cmd, vec![image("example.com/x", app)]);
        assert!(build_pod_manifest(&cmd.pod, &EnvSources::default(), &apps, &mut |_| {}).is_err());
        let app = serde_json::json!({"exec": ["/x"], "user": "0", "group": "0",
            "ports": [{"name": "www", "protocol": "tcp", "port": 80}]});
        let apps = resolved(&cmd, vec![image("example.com/x", app)]);
        let pm = build_pod_manifest(&cmd.pod, &EnvSources::default(), &apps, &mut |_| {}).unwrap();
        assert_eq!(pm.ports[0].host_port, 8080);
    }

    #[test]
    fn env_file_skips_comments() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("env");
        std::fs::write(&f, "# c\n; c\n\nX=1\nY=a=b\n").unwrap();
        assert_eq!(
            read_env_file(&f).unwrap(),
            vec![
                ("X".to_string(), "1".to_string()),
                ("Y".to_string(), "a=b".to_string())
            ]
        );
        std::fs::write(&f, "garbage\n").unwrap();
        assert!(read_env_file(&f).is_err());
    }

    #[test]
    fn manifest_has_overrides_names_and_isolators() {
        let argv: Vec<String> = [
            "--volume=data,kind=empty",
            "--mount=volume=data,target=/data",
            "example.com/tools/hello",
            "--exec=/bin/hello",
            "--user=1000",
            "--memory=64Mi",
            "--caps-remove=CAP_MKNOD",
            "--",
            "--exit",
            "3",
            "---",
            "example.com/other/hello",
            "--name=second",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let cmd = RunCommand::parse(Mode::Run, &argv).unwrap();
        let app = serde_json::json!({"exec": ["/bin/x", "img-arg"], "user": "0", "group": "0",
            "mountPoints": [{"name": "cache", "path": "/cache"}]});
        let apps = resolved(
            &cmd,
            vec![
                image("example.com/tools/hello", app.clone()),
                image("example.com/other/hello", app),
            ],
        );
        let mut warnings = Vec::new();
        let pm = build_pod_manifest(&cmd.pod, &EnvSources::default(), &apps, &mut |w| {
            warnings.push(w)
        })
        .unwrap();
        assert_eq!(pm.ac_version, "0.8.11");
        assert_eq!(pm.apps[0].name.as_str(), "hello");
        assert_eq!(pm.apps[1].name.as_str(), "second");
        let a0 = pm.apps[0].app.as_ref().unwrap();
        assert_eq!(a0.exec, vec!["/bin/hello", "--exit", "3"]);
        assert_eq!(a0.user, "1000");
        assert!(a0
            .isolators
            .iter()
            .any(|i| i.name.as_str() == "resource/memory"));
        assert_eq!(
            pm.apps[1].app.as_ref().unwrap().exec,
            vec!["/bin/x", "img-arg"]
        );
        assert_eq!(pm.apps[0].mounts[0].path, "/data");
        // The uncovered mount point got an implicit empty volume, once.
        assert_eq!(
            pm.volumes
                .iter()
                .filter(|v| v.name.as_str() == "cache")
                .count(),
            1
        );
        assert!(!warnings.is_empty());
        // Same derived name twice is an error.
        let cmd2 =
            RunCommand::parse(Mode::Run, &["a/hello".to_string(), "b/hello".to_string()]).unwrap();
        let app2 = serde_json::json!({"exec": ["/x"], "user": "0", "group": "0"});
        let apps2 = resolved(
            &cmd2,
            vec![image("a/hello", app2.clone()), image("b/hello", app2)],
        );
        assert!(
            build_pod_manifest(&cmd2.pod, &EnvSources::default(), &apps2, &mut |_| {}).is_err()
        );
    }
}
