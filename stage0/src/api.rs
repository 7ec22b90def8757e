//! The pods and images of a data directory as rkt's API service reports them
//! (`api_service::Source`): the same readings as `rkt list`, `rkt status` and `rkt image
//! list` ([`PodInfo::read`], the store's index), mapped to the v1alpha messages as rkt's
//! `rkt/api_service.go` did. Every call reads afresh; nothing is written, so the service runs
//! as a member of the `rkt` group as well as root (docs/api-service.md).

use std::path::{Path, PathBuf};

use api_service::v1alpha::{
    self, App, AppState, Image, ImageFormat, ImageType, KeyValue, Network, Pod, PodState as V1State,
};
use api_service::SourceError;

use crate::pod::lifecycle::MIN_UUID_PREFIX;
use crate::pod::status::{unix_nanos, PodInfo};
use crate::pod::{PodError, PodState, PodsDir};
use crate::store::{ImageRecord, Store, StoreError};
use pod_abi::paths::PodDirState;

/// Length of a hyphenated UUID, in characters.
const UUID_LEN: usize = 36;
/// Longest `/proc/<pid>/cgroup` read, in bytes.
const PROC_CGROUP_MAX: u64 = 64 * 1024;

/// A data directory as an API [`api_service::Source`].
#[derive(Debug, Clone)]
pub struct DataDirSource {
    data_dir: PathBuf,
    info: v1alpha::Info,
}

impl DataDirSource {
    /// Reports on `data_dir`; `GetInfo` answers `info`.
    pub fn new(data_dir: &Path, info: v1alpha::Info) -> Self {
        DataDirSource {
            data_dir: data_dir.to_path_buf(),
            info,
        }
    }

    fn pods_dir(&self) -> Result<PodsDir, SourceError> {
        PodsDir::open(&self.data_dir).map_err(internal)
    }

    fn store(&self) -> Result<Store, SourceError> {
        Store::open(&self.data_dir).map_err(internal)
    }
}

impl api_service::Source for DataDirSource {
    fn info(&self) -> v1alpha::Info {
        self.info.clone()
    }

    fn pods(&self) -> Result<Vec<Pod>, SourceError> {
        let pods = self.pods_dir()?;
        let all = pods.pods().map_err(internal)?;
        Ok(all.map(|p| pod_message(&p)).collect())
    }

    /// A whole UUID or an unambiguous prefix of at least two characters, as rkt resolved it.
    fn pod(&self, id: &str) -> Result<Pod, SourceError> {
        let uuidish = id.len() >= MIN_UUID_PREFIX
            && id.len() <= UUID_LEN
            && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
        if !uuidish {
            return Err(SourceError::InvalidArgument(format!(
                "{id:?} is not a pod UUID or UUID prefix"
            )));
        }
        let pods = self.pods_dir()?;
        match pods.open_pod(id) {
            Ok(p) => Ok(pod_message(&p)),
            Err(e @ PodError::NotFound(_)) => Err(SourceError::NotFound(e.to_string())),
            Err(e @ PodError::Ambiguous(_)) => Err(SourceError::InvalidArgument(e.to_string())),
            Err(e) => Err(internal(e)),
        }
    }

    fn images(&self) -> Result<Vec<Image>, SourceError> {
        let store = self.store()?;
        let recs = store.list().map_err(internal)?;
        // An image whose manifest cannot be read is left out, as rkt did.
        Ok(recs
            .iter()
            .filter_map(|r| image_message(&store, r).ok())
            .collect())
    }

    fn image(&self, id: &str) -> Result<Image, SourceError> {
        let store = self.store()?;
        match store.get(id.trim()).map_err(internal)? {
            Some(r) => image_message(&store, &r).map_err(internal),
            None => Err(SourceError::NotFound(format!("no image with ID {id:?}"))),
        }
    }
}

fn internal(e: impl std::error::Error + 'static) -> SourceError {
    SourceError::Internal(crate::error::error_chain(&e))
}

/// The appc format every stored image has (an OCI or Docker image is converted on import).
fn appc_format() -> Option<ImageFormat> {
    Some(ImageFormat {
        r#type: ImageType::Appc as i32,
        version: appc::schema::AC_VERSION.to_string(),
    })
}

fn kvs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<KeyValue> {
    pairs
        .into_iter()
        .map(|(k, v)| KeyValue {
            key: k.to_string(),
            value: v.to_string(),
        })
        .collect()
}

/// rkt's state for the API: the `deleting` states are one, both garbage states are one.
fn state_of(s: PodState) -> V1State {
    match s {
        PodState::Embryo => V1State::Embryo,
        PodState::Preparing => V1State::Preparing,
        PodState::AbortedPrepare => V1State::AbortedPrepare,
        PodState::Prepared => V1State::Prepared,
        PodState::Running => V1State::Running,
        PodState::Exited => V1State::Exited,
        PodState::ExitedGarbage | PodState::Garbage => V1State::Garbage,
        PodState::ExitedDeleting | PodState::Deleting => V1State::Deleting,
    }
}

/// One pod as `InspectPod` reports it (with its manifest; `ListPods` drops that unless asked).
fn pod_message(p: &crate::pod::Pod) -> Pod {
    let info = PodInfo::read(p);
    let state = state_of(info.state);
    let mut pod = Pod {
        id: info.uuid.clone(),
        pid: -1,
        state: state as i32,
        ..Default::default()
    };
    // An embryo has nothing more to tell (rkt's `fillPodDetails`).
    if info.state == PodState::Embryo {
        return pod;
    }
    let ran = info.state == PodState::Running || info.state.is_after_run();
    if let Some(m) = &info.manifest {
        pod.annotations = kvs(m
            .annotations
            .iter()
            .map(|a| (a.name.as_str(), a.value.as_str())));
        pod.apps = m
            .apps
            .iter()
            .zip(&info.apps)
            .map(|(ra, ai)| App {
                name: ai.name.clone(),
                image: Some(Image {
                    base_format: appc_format(),
                    id: ai.image_id.clone(),
                    name: ai.image_name.clone(),
                    version: ra
                        .image
                        .labels
                        .iter()
                        .find(|l| l.name.as_str() == "version")
                        .map_or_else(|| "latest".to_string(), |l| l.value.clone()),
                    ..Default::default()
                }),
                state: if info.state == PodState::Running {
                    AppState::Running
                } else if info.state.is_after_run() {
                    AppState::Exited
                } else {
                    AppState::Undefined
                } as i32,
                exit_code: match (ran, ai.exit_code) {
                    (true, Some(c)) => c,
                    _ => -1,
                },
                annotations: kvs(ra
                    .annotations
                    .iter()
                    .map(|a| (a.name.as_str(), a.value.as_str()))),
            })
            .collect();
        pod.manifest.clone_from(&info.manifest_json);
    }
    if ran {
        pod.networks = info
            .networks
            .iter()
            .map(|n| Network {
                name: n.net_name.clone(),
                ipv4: n.ip.clone(),
                ..Default::default()
            })
            .collect();
        pod.pid = info.pid.unwrap_or(-1);
    }
    if info.state == PodState::Running {
        if let Some(pid) = info.pid {
            pod.cgroup = pod_cgroup(pid).unwrap_or_default();
        }
    }
    pod.created_at = info.created.map(unix_nanos).unwrap_or(0);
    pod.started_at = info.started.map(unix_nanos).unwrap_or(0);
    if matches!(
        p.dir_state(),
        PodDirState::ExitedGarbage | PodDirState::Garbage
    ) {
        pod.gc_marked_at = p.gc_marked().map(unix_nanos).unwrap_or(0);
    }
    pod
}

/// The pod's cgroup, from its stage1 process (`pid`): the unified hierarchy's path on cgroup
/// v2 (guest-init's leaf `_stage1` dropped), else the `cpu` hierarchy's: `/…/rkt-<uuid>`, the
/// prefix of every app's cgroup (`PodFilter.pod_sub_cgroups`).
fn pod_cgroup(pid: i32) -> Option<String> {
    use std::io::Read;
    let f = std::fs::File::open(format!("/proc/{pid}/cgroup")).ok()?;
    let mut s = String::new();
    f.take(PROC_CGROUP_MAX).read_to_string(&mut s).ok()?;
    let entries = || pod_abi::proccgroup::entries(&s);
    let e = entries()
        .find(|e| e.has("cpu"))
        .or_else(|| entries().find(|e| e.controllers.is_empty()))?;
    let init_leaf = format!("/{}", pod_abi::proccgroup::V2_INIT_CGROUP);
    Some(
        e.path
            .strip_suffix(init_leaf.as_str())
            .unwrap_or(e.path)
            .to_string(),
    )
}

/// One image as `InspectImage` reports it (with its manifest).
fn image_message(store: &Store, r: &ImageRecord) -> Result<Image, StoreError> {
    let manifest = store.manifest_json(r)?;
    let annotations = appc::ImageManifest::from_json(&manifest)
        .map(|m| {
            kvs(m
                .annotations
                .iter()
                .map(|a| (a.name.as_str(), a.value.as_str())))
        })
        .unwrap_or_default();
    Ok(Image {
        base_format: appc_format(),
        id: r.id.clone(),
        name: r.name.clone(),
        version: r.label("version").unwrap_or("latest").to_string(),
        import_timestamp: r.import_time.div_euclid(1_000_000_000),
        manifest,
        size: i64::try_from(r.size).unwrap_or(i64::MAX),
        annotations,
        labels: kvs(r.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
    })
}
