//! `ListenEvents`, which rkt's proto declared and rkt never implemented: events derived from
//! what the data directory shows. One poller, running only while someone listens, reads the
//! pods and images every [`POLL_MS`] and turns the difference from the last reading into
//! events ([`diff`]); each listener gets them through a broadcast channel, filtered by its
//! `EventFilter` ([`Window`]). A listener sees what changed after its call was answered (the
//! service takes a reading then if none is current); a pod that went through several states
//! between two readings gets every event of the way, in lifecycle order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, mpsc, Mutex, Semaphore};
use tonic::Status;

use crate::v1alpha::{Event, EventFilter, EventType, KeyValue, ListenEventsResponse, PodState};
use crate::{Source, SourceError};

/// Time between two readings of the data directory, in milliseconds.
pub const POLL_MS: u64 = 500;
/// Listeners served at once.
pub const MAX_LISTENERS: usize = 64;
/// Batches a slow listener may fall behind before its stream ends with `DATA_LOSS`.
const BACKLOG: usize = 256;

/// Where a pod is in its lifecycle, as events see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Not there yet, or embryo or preparing.
    Before,
    /// Prepared.
    Prepared,
    /// Its preparation failed.
    Aborted,
    /// Running.
    Running,
    /// Exited (also once marked for or being garbage collected).
    Exited,
    /// Removed.
    Gone,
}

impl Stage {
    fn of(state: i32) -> Stage {
        match PodState::try_from(state) {
            Ok(PodState::Prepared) => Stage::Prepared,
            Ok(PodState::AbortedPrepare) => Stage::Aborted,
            Ok(PodState::Running) => Stage::Running,
            Ok(PodState::Exited | PodState::Garbage | PodState::Deleting) => Stage::Exited,
            _ => Stage::Before,
        }
    }

    /// Position on the way prepared -> running -> exited -> removed (an aborted preparation
    /// leaves that way; see [`lifecycle`]).
    fn rank(self) -> u8 {
        match self {
            Stage::Before => 0,
            Stage::Prepared | Stage::Aborted => 1,
            Stage::Running => 2,
            Stage::Exited => 3,
            Stage::Gone => 4,
        }
    }
}

/// The events a pod's move from `from` to `to` passes, in order (none for a move back).
fn lifecycle(from: Stage, to: Stage) -> Vec<EventType> {
    if from == to || to.rank() < from.rank() {
        return Vec::new();
    }
    if from == Stage::Aborted || to == Stage::Aborted {
        return match to {
            Stage::Aborted => vec![EventType::PodPrepareAborted],
            Stage::Gone => vec![EventType::PodGarbageCollected],
            _ => Vec::new(),
        };
    }
    [
        (Stage::Prepared, EventType::PodPrepared),
        (Stage::Running, EventType::PodStarted),
        (Stage::Exited, EventType::PodExited),
        (Stage::Gone, EventType::PodGarbageCollected),
    ]
    .into_iter()
    .filter(|(s, _)| s.rank() > from.rank() && s.rank() <= to.rank())
    .map(|(_, e)| e)
    .collect()
}

/// One pod as the events need it.
#[derive(Debug, Clone, PartialEq)]
struct PodView {
    stage: Stage,
    /// App names with their exit codes once known.
    apps: Vec<(String, Option<i32>)>,
}

/// What the data directory showed at one reading: pods by UUID, image names by ID.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pods: BTreeMap<String, PodView>,
    images: BTreeMap<String, String>,
}

impl Snapshot {
    /// Reads `source`.
    pub fn read<S: Source>(source: &S) -> Result<Snapshot, SourceError> {
        let pods = source
            .pods()?
            .into_iter()
            .map(|p| {
                let apps = p
                    .apps
                    .iter()
                    .map(|a| (a.name.clone(), (a.exit_code >= 0).then_some(a.exit_code)))
                    .collect();
                (
                    p.id,
                    PodView {
                        stage: Stage::of(p.state),
                        apps,
                    },
                )
            })
            .collect();
        let images = source
            .images()?
            .into_iter()
            .map(|i| (i.id, i.name))
            .collect();
        Ok(Snapshot { pods, images })
    }
}

fn event(kind: EventType, id: &str, from: &str, time: i64, data: Vec<KeyValue>) -> Event {
    Event {
        r#type: kind as i32,
        id: id.to_string(),
        from: from.to_string(),
        time,
        data,
    }
}

/// The events between two readings, stamped `time` (seconds): per pod its lifecycle events,
/// with `APP_STARTED` for each app after `POD_STARTED` and `APP_EXITED` (data `exit_code`)
/// for each app whose code became known, before `POD_EXITED`; then image imports and
/// removals. A pod event's `from` is the pod's UUID (pods have no names), an app event's the
/// app's name.
pub fn diff(old: &Snapshot, new: &Snapshot, time: i64) -> Vec<Event> {
    let mut out = Vec::new();
    let ids = old
        .pods
        .keys()
        .chain(new.pods.keys().filter(|k| !old.pods.contains_key(*k)));
    for id in ids {
        let before = old.pods.get(id);
        let after = new.pods.get(id);
        let from = before.map_or(Stage::Before, |p| p.stage);
        let to = after.map_or(Stage::Gone, |p| p.stage);
        let apps = after
            .or(before)
            .map(|p| p.apps.as_slice())
            .unwrap_or_default();
        for kind in lifecycle(from, to) {
            if let (EventType::PodExited, Some(after)) = (kind, after) {
                app_exits(&mut out, id, before, after, time);
            }
            out.push(event(kind, id, id, time, Vec::new()));
            if kind == EventType::PodStarted {
                for (name, _) in apps {
                    out.push(event(EventType::AppStarted, id, name, time, Vec::new()));
                }
            }
        }
        if let (Stage::Running, Stage::Running, Some(after)) = (from, to, after) {
            // Apps of a running (mutable) pod that exited since the last reading.
            app_exits(&mut out, id, before, after, time);
        }
    }
    for (id, name) in &new.images {
        if !old.images.contains_key(id) {
            out.push(event(EventType::ImageImported, id, name, time, Vec::new()));
        }
    }
    for (id, name) in &old.images {
        if !new.images.contains_key(id) {
            out.push(event(EventType::ImageRemoved, id, name, time, Vec::new()));
        }
    }
    out
}

/// `APP_EXITED` for each app whose exit code `after` knows and `before` did not (a pod gets
/// here at most once a reading: before its `POD_EXITED`, or while it runs).
fn app_exits(out: &mut Vec<Event>, id: &str, before: Option<&PodView>, after: &PodView, time: i64) {
    for (name, code) in &after.apps {
        let Some(code) = code else { continue };
        let known = before
            .and_then(|b| b.apps.iter().find(|(n, _)| n == name))
            .is_some_and(|(_, c)| c.is_some());
        if !known {
            out.push(event(
                EventType::AppExited,
                id,
                name,
                time,
                vec![KeyValue {
                    key: "exit_code".into(),
                    value: code.to_string(),
                }],
            ));
        }
    }
}

/// A listener's `EventFilter`: the types, IDs and names it wants (any of each list, when
/// given), from `since_time` and until `until_time` (seconds, when not 0).
#[derive(Debug, Clone, Default)]
pub struct Window(EventFilter);

impl Window {
    /// The listener's filter (none: every event, no end).
    pub fn new(filter: Option<EventFilter>) -> Self {
        Window(filter.unwrap_or_default())
    }

    /// Whether `e` is for this listener.
    pub fn wants(&self, e: &Event) -> bool {
        let f = &self.0;
        (f.types.is_empty() || f.types.contains(&e.r#type))
            && (f.ids.is_empty() || f.ids.contains(&e.id))
            && (f.names.is_empty() || f.names.contains(&e.from))
            && (f.since_time <= 0 || e.time >= f.since_time)
            && (f.until_time <= 0 || e.time < f.until_time)
    }

    /// How long until the stream ends, if it has an end.
    fn remaining(&self, now: i64) -> Option<Duration> {
        (self.0.until_time > 0)
            .then(|| Duration::from_secs(u64::try_from(self.0.until_time - now).unwrap_or(0)))
    }
}

/// Unix time in seconds.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The shared poller and the listeners' channel.
pub struct Hub {
    tx: broadcast::Sender<Arc<Vec<Event>>>,
    /// The last reading; `None` while nobody listens.
    last: Mutex<Option<Snapshot>>,
    listeners: Arc<Semaphore>,
    poller: std::sync::Once,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            tx: broadcast::channel(BACKLOG).0,
            last: Mutex::new(None),
            listeners: Arc::new(Semaphore::new(MAX_LISTENERS)),
            poller: std::sync::Once::new(),
        }
    }
}

/// Reads `source` on a blocking thread.
async fn read<S: Source>(source: &Arc<S>) -> Result<Snapshot, Status> {
    crate::read_blocking(source, Snapshot::read).await
}

impl Hub {
    /// A new listener with `window`: the stream of its events. Takes a reading first if none
    /// is current, so that what changes after this returns is reported.
    pub async fn listen<S: Source>(
        self: &Arc<Self>,
        source: &Arc<S>,
        window: Window,
    ) -> Result<mpsc::Receiver<Result<ListenEventsResponse, Status>>, Status> {
        let permit = self.listeners.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!("{MAX_LISTENERS} event listeners already"))
        })?;
        let mut rx = self.tx.subscribe();
        {
            let mut last = self.last.lock().await;
            if last.is_none() {
                *last = Some(read(source).await?);
            }
        }
        let hub = self.clone();
        let src = source.clone();
        self.poller.call_once(|| {
            tokio::spawn(async move { hub.poll(src).await });
        });
        let (out, stream) = mpsc::channel(16);
        tokio::spawn(async move {
            let _permit = permit;
            let end = async {
                match window.remaining(now_secs()) {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(end);
            loop {
                tokio::select! {
                    r = rx.recv() => match r {
                        Ok(batch) => {
                            let events: Vec<Event> =
                                batch.iter().filter(|e| window.wants(e)).cloned().collect();
                            if !events.is_empty()
                                && out.send(Ok(ListenEventsResponse { events })).await.is_err()
                            {
                                break;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            let _ = out
                                .send(Err(Status::data_loss(format!(
                                    "this listener fell {n} readings behind; listen again"
                                ))))
                                .await;
                            break;
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    () = &mut end => break,
                    () = out.closed() => break,
                }
            }
        });
        Ok(stream)
    }

    /// Reads the source every [`POLL_MS`] while anyone listens and broadcasts the differences.
    async fn poll<S: Source>(self: Arc<Self>, source: Arc<S>) {
        let mut tick = tokio::time::interval(Duration::from_millis(POLL_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.tx.receiver_count() == 0 {
                *self.last.lock().await = None;
                continue;
            }
            let snap = match read(&source).await {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("events: cannot read the data directory: {}", e.message());
                    continue;
                }
            };
            let mut last = self.last.lock().await;
            if let Some(prev) = last.as_ref() {
                let events = diff(prev, &snap, now_secs());
                if !events.is_empty() {
                    let _ = self.tx.send(Arc::new(events));
                }
            }
            *last = Some(snap);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pod in a test snapshot: UUID, stage, apps with their exit codes.
    type TestPod<'a> = (&'a str, Stage, &'a [(&'a str, Option<i32>)]);

    fn snap(pods: &[TestPod<'_>], images: &[(&str, &str)]) -> Snapshot {
        Snapshot {
            pods: pods
                .iter()
                .map(|(id, stage, apps)| {
                    (
                        id.to_string(),
                        PodView {
                            stage: *stage,
                            apps: apps.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
                        },
                    )
                })
                .collect(),
            images: images
                .iter()
                .map(|(i, n)| (i.to_string(), n.to_string()))
                .collect(),
        }
    }

    fn kinds(events: &[Event]) -> Vec<(EventType, String)> {
        events
            .iter()
            .map(|e| {
                (
                    EventType::try_from(e.r#type).unwrap_or_default(),
                    e.from.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn a_pod_that_came_and_exited_between_readings_gets_every_event_in_order() {
        let old = snap(&[], &[]);
        let new = snap(
            &[("p", Stage::Exited, &[("a", Some(3)), ("b", Some(0))])],
            &[],
        );
        let ev = diff(&old, &new, 7);
        assert_eq!(
            kinds(&ev),
            vec![
                (EventType::PodPrepared, "p".into()),
                (EventType::PodStarted, "p".into()),
                (EventType::AppStarted, "a".into()),
                (EventType::AppStarted, "b".into()),
                (EventType::AppExited, "a".into()),
                (EventType::AppExited, "b".into()),
                (EventType::PodExited, "p".into()),
            ]
        );
        assert!(ev.iter().all(|e| e.id == "p" && e.time == 7));
        assert_eq!(ev[4].data[0].value, "3");
        // Nothing changed: nothing to report.
        assert!(diff(&new, &new, 8).is_empty());
    }

    #[test]
    fn removal_abort_and_images() {
        let old = snap(
            &[
                ("x", Stage::Exited, &[("a", Some(1))]),
                ("r", Stage::Running, &[("a", None), ("b", None)]),
            ],
            &[("sha512-1", "example.com/one")],
        );
        let new = snap(
            &[
                ("r", Stage::Running, &[("a", Some(0)), ("b", None)]),
                ("q", Stage::Aborted, &[]),
            ],
            &[("sha512-2", "example.com/two")],
        );
        assert_eq!(
            kinds(&diff(&old, &new, 1)),
            vec![
                (EventType::AppExited, "a".into()),
                (EventType::PodGarbageCollected, "x".into()),
                (EventType::PodPrepareAborted, "q".into()),
                (EventType::ImageImported, "example.com/two".into()),
                (EventType::ImageRemoved, "example.com/one".into()),
            ]
        );
        assert!(lifecycle(Stage::Exited, Stage::Running).is_empty());
        assert_eq!(
            lifecycle(Stage::Prepared, Stage::Gone),
            vec![
                EventType::PodStarted,
                EventType::PodExited,
                EventType::PodGarbageCollected
            ]
        );
    }

    #[test]
    fn the_window_filters_types_ids_names_and_time() {
        let e = event(EventType::PodExited, "p", "p", 100, Vec::new());
        let w = |f: EventFilter| Window::new(Some(f)).wants(&e);
        assert!(Window::new(None).wants(&e));
        assert!(w(EventFilter {
            types: vec![EventType::PodStarted as i32, EventType::PodExited as i32],
            ..Default::default()
        }));
        assert!(!w(EventFilter {
            types: vec![EventType::PodStarted as i32],
            ..Default::default()
        }));
        assert!(!w(EventFilter {
            ids: vec!["q".into()],
            ..Default::default()
        }));
        assert!(w(EventFilter {
            names: vec!["p".into()],
            since_time: 100,
            until_time: 101,
            ..Default::default()
        }));
        assert!(!w(EventFilter {
            since_time: 101,
            ..Default::default()
        }));
        assert!(!w(EventFilter {
            until_time: 100,
            ..Default::default()
        }));
    }
}
