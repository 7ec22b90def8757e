//! rkt's `ListPods` and `ListImages` filters (`rkt/api_service.go`): within one filter every
//! condition given must hold ("AND"), and an item is listed when any filter holds ("OR"), or
//! when there is no filter.

use crate::v1alpha::{Image, ImageFilter, KeyValue, Pod, PodFilter};

/// Whether `pod` satisfies one of `filters` (or there are none).
pub fn pod_matches_any(pod: &Pod, filters: &[PodFilter]) -> bool {
    filters.is_empty() || filters.iter().any(|f| pod_matches(pod, f))
}

/// Whether `image` satisfies one of `filters` (or there are none).
pub fn image_matches_any(image: &Image, filters: &[ImageFilter]) -> bool {
    filters.is_empty() || filters.iter().any(|f| image_matches(image, f))
}

/// One pod filter: any of the IDs, any of the states, all of the app names, image IDs,
/// network names and annotations, any of the cgroups, and a cgroup that is a prefix of one of
/// `pod_sub_cgroups`.
pub fn pod_matches(pod: &Pod, f: &PodFilter) -> bool {
    let apps = || pod.apps.iter();
    any_or_empty(&f.ids, |id| *id == pod.id)
        && (f.states.is_empty() || f.states.contains(&pod.state))
        && f.app_names.iter().all(|n| apps().any(|a| a.name == *n))
        && f.image_ids
            .iter()
            .all(|id| apps().any(|a| a.image.as_ref().is_some_and(|i| i.id == *id)))
        && f.network_names
            .iter()
            .all(|n| pod.networks.iter().any(|net| net.name == *n))
        && contains_all(&pod.annotations, &f.annotations)
        && any_or_empty(&f.cgroups, |c| *c == pod.cgroup)
        && (f.pod_sub_cgroups.is_empty()
            || (!pod.cgroup.is_empty()
                && f.pod_sub_cgroups.iter().any(|c| c.starts_with(&pod.cgroup))))
}

/// One image filter: any of the IDs, full names, name prefixes, base names and keywords;
/// imported strictly after `imported_after` and before `imported_before` (seconds, when not
/// 0); all of the labels and annotations.
pub fn image_matches(image: &Image, f: &ImageFilter) -> bool {
    let name = image.name.as_str();
    any_or_empty(&f.ids, |id| *id == image.id)
        && any_or_empty(&f.full_names, |n| n == name)
        && any_or_empty(&f.prefixes, |p| name.starts_with(p.as_str()))
        && any_or_empty(&f.base_names, |b| b == base_name(name))
        && any_or_empty(&f.keywords, |k| name.contains(k.as_str()))
        && (f.imported_after <= 0 || image.import_timestamp > f.imported_after)
        && (f.imported_before <= 0 || image.import_timestamp < f.imported_before)
        && contains_all(&image.labels, &f.labels)
        && contains_all(&image.annotations, &f.annotations)
}

/// True when `wanted` is empty or one of its items satisfies `ok`.
fn any_or_empty(wanted: &[String], ok: impl Fn(&String) -> bool) -> bool {
    wanted.is_empty() || wanted.iter().any(ok)
}

/// Whether every key of `required` is in `actual` with the same value (the first entry of a
/// key counts, as rkt's `findInKeyValues`).
fn contains_all(actual: &[KeyValue], required: &[KeyValue]) -> bool {
    required.iter().all(|r| {
        actual
            .iter()
            .find(|a| a.key == r.key)
            .is_some_and(|a| a.value == r.value)
    })
}

/// Go's `path.Base` for a name: the last `/`-separated element, trailing slashes ignored.
fn base_name(name: &str) -> &str {
    let t = name.trim_end_matches('/');
    match t.rsplit_once('/') {
        Some((_, b)) => b,
        None if t.is_empty() && !name.is_empty() => "/",
        None if t.is_empty() => ".",
        None => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1alpha::{App, Network, PodState};

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: v.into(),
        }
    }

    fn pod() -> Pod {
        Pod {
            id: "u1".into(),
            state: PodState::Running as i32,
            apps: vec![
                App {
                    name: "web".into(),
                    image: Some(Image {
                        id: "sha512-a".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                App {
                    name: "log".into(),
                    image: Some(Image {
                        id: "sha512-b".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ],
            networks: vec![Network {
                name: "default".into(),
                ipv4: "172.16.28.2".into(),
                ..Default::default()
            }],
            annotations: vec![kv("tier", "front"), kv("team", "a")],
            cgroup: "/rkt-u1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn pod_filter_conditions_are_anded_and_filters_ored() {
        let p = pod();
        let all = PodFilter {
            ids: vec!["u0".into(), "u1".into()],
            states: vec![PodState::Exited as i32, PodState::Running as i32],
            app_names: vec!["web".into(), "log".into()],
            image_ids: vec!["sha512-b".into()],
            network_names: vec!["default".into()],
            annotations: vec![kv("team", "a")],
            cgroups: vec!["/rkt-u1".into()],
            pod_sub_cgroups: vec!["/rkt-u1/web".into()],
        };
        assert!(pod_matches(&p, &all));
        let mut wrong_state = all.clone();
        wrong_state.states = vec![PodState::Exited as i32];
        assert!(!pod_matches(&p, &wrong_state));
        let mut missing_app = all.clone();
        missing_app.app_names.push("db".into());
        assert!(!pod_matches(&p, &missing_app), "app names are all required");
        let mut wrong_value = all.clone();
        wrong_value.annotations = vec![kv("team", "b")];
        assert!(!pod_matches(&p, &wrong_value));
        let mut other_cgroup = all.clone();
        other_cgroup.pod_sub_cgroups = vec!["/rkt-u2/web".into()];
        assert!(!pod_matches(&p, &other_cgroup));
        assert!(pod_matches_any(&p, &[]));
        assert!(pod_matches_any(&p, &[wrong_state.clone(), all]));
        assert!(!pod_matches_any(&p, &[wrong_state, missing_app]));
    }

    #[test]
    fn a_pod_without_cgroup_matches_no_sub_cgroup_filter() {
        let mut p = pod();
        p.cgroup.clear();
        let f = PodFilter {
            pod_sub_cgroups: vec!["/anything".into()],
            ..Default::default()
        };
        assert!(!pod_matches(&p, &f));
    }

    #[test]
    fn image_filters_follow_rkt() {
        let i = Image {
            id: "sha512-c".into(),
            name: "coreos.com/etcd".into(),
            import_timestamp: 100,
            labels: vec![kv("version", "2.0.10"), kv("arch", "amd64")],
            annotations: vec![kv("authors", "x")],
            ..Default::default()
        };
        let f = |g: fn(&mut ImageFilter)| {
            let mut f = ImageFilter::default();
            g(&mut f);
            image_matches(&i, &f)
        };
        assert!(f(|_| {}));
        assert!(f(|f| f.base_names = vec!["etcd".into()]));
        assert!(!f(|f| f.base_names = vec!["etc".into()]));
        assert!(f(|f| f.keywords = vec!["tcd".into(), "zzz".into()]));
        assert!(f(|f| f.prefixes = vec!["coreos.com/".into()]));
        assert!(!f(|f| f.prefixes = vec!["k8s.io/".into()]));
        assert!(f(|f| f.full_names = vec!["coreos.com/etcd".into()]));
        assert!(!f(|f| f.full_names = vec!["coreos.com/et".into()]));
        assert!(f(|f| f.imported_after = 99));
        assert!(!f(|f| f.imported_after = 100), "strictly after");
        assert!(f(|f| f.imported_before = 101));
        assert!(!f(|f| f.imported_before = 100), "strictly before");
        assert!(f(|f| f.labels = vec![kv("version", "2.0.10")]));
        assert!(!f(
            |f| f.labels = vec![kv("version", "2.0.10"), kv("os", "linux")]
        ));
        assert!(f(|f| f.annotations = vec![kv("authors", "x")]));
        assert!(!f(|f| f.ids = vec!["sha512-d".into()]));
    }

    #[test]
    fn base_name_is_gos_path_base() {
        assert_eq!(base_name("k8s.io/etcd"), "etcd");
        assert_eq!(base_name("etcd"), "etcd");
        assert_eq!(base_name("a/b/"), "b");
        assert_eq!(base_name(""), ".");
        assert_eq!(base_name("/"), "/");
    }
}
