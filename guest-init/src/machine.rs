//! The per-app lifecycle as data: phases, events and the transition table
//! `Pending -> [PreStart] -> Running -> [PostStop] -> Done`. The supervisor feeds events in and
//! performs the returned action; anything not in the table is rejected.

/// Where an app is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not started yet.
    Pending,
    /// The pre-start handler runs.
    PreStart,
    /// The app runs.
    Running,
    /// The post-stop handler runs.
    PostStop,
    /// Finished; its status is written.
    Done,
}

/// What happened to an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Start the app (its environment is ready).
    Start,
    /// Its environment could not be built, or the current process could not be forked.
    SetupFailed,
    /// The current process exited with status 0.
    ExitOk,
    /// The current process exited non-zero or was killed.
    ExitFail,
}

/// What the supervisor must do after a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Launch the pre-start handler.
    RunPreStart,
    /// Launch the app.
    RunApp,
    /// Launch the post-stop handler.
    RunPostStop,
    /// Write the status; the app is done.
    Finish,
}

/// Facts that pick between table rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Facts {
    /// The app has a pre-start handler.
    pub pre_start: bool,
    /// The app has a post-stop handler (and post-stop handlers may still run).
    pub post_stop: bool,
    /// The pod is stopping: do not start apps whose pre-start just finished.
    pub stopping: bool,
}

/// The transition table. `None` = event not valid in this phase.
pub fn step(phase: Phase, ev: Event, f: Facts) -> Option<(Phase, Action)> {
    use Action::*;
    use Event::*;
    use Phase::*;
    let after_app = if f.post_stop {
        (PostStop, RunPostStop)
    } else {
        (Done, Finish)
    };
    Some(match (phase, ev) {
        (Pending, Start) if f.pre_start => (PreStart, RunPreStart),
        (Pending, Start) => (Running, RunApp),
        (Pending, SetupFailed) => (Done, Finish),
        (PreStart, ExitOk) if !f.stopping => (Running, RunApp),
        (PreStart, ExitOk | ExitFail | SetupFailed) => after_app,
        (Running, ExitOk | ExitFail | SetupFailed) => after_app,
        (PostStop, ExitOk | ExitFail | SetupFailed) => (Done, Finish),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let none = Facts::default();
        let both = Facts {
            pre_start: true,
            post_stop: true,
            stopping: false,
        };
        assert_eq!(
            step(Phase::Pending, Event::Start, none),
            Some((Phase::Running, Action::RunApp))
        );
        assert_eq!(
            step(Phase::Pending, Event::Start, both),
            Some((Phase::PreStart, Action::RunPreStart))
        );
        assert_eq!(
            step(Phase::PreStart, Event::ExitOk, both),
            Some((Phase::Running, Action::RunApp))
        );
        assert_eq!(
            step(Phase::PreStart, Event::ExitFail, both),
            Some((Phase::PostStop, Action::RunPostStop))
        );
        let stopping = Facts {
            stopping: true,
            ..both
        };
        assert_eq!(
            step(Phase::PreStart, Event::ExitOk, stopping),
            Some((Phase::PostStop, Action::RunPostStop))
        );
        assert_eq!(
            step(Phase::Running, Event::ExitFail, none),
            Some((Phase::Done, Action::Finish))
        );
        assert_eq!(
            step(Phase::PostStop, Event::ExitOk, both),
            Some((Phase::Done, Action::Finish))
        );
        assert_eq!(step(Phase::Done, Event::ExitOk, both), None);
        assert_eq!(step(Phase::Running, Event::Start, both), None);
    }
}
