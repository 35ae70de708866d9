//! Given/when/then for aggregates: past events, one command, the events or the error
//! it produces. No store, no I/O: the aggregate's decisions alone.
//!
//! ```
//! # use annals::aggregate::{Aggregate, DomainEvent};
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Default)] struct Light { on: bool }
//! # #[derive(Debug, PartialEq, Serialize, Deserialize, DomainEvent)]
//! # #[serde(tag = "type", content = "data")]
//! # enum Switched { On, Off }
//! # #[derive(Debug, thiserror::Error)] #[error("already on")] struct AlreadyOn;
//! # impl Aggregate for Light {
//! #     const CATEGORY: &'static str = "light";
//! #     type Command = (); type Event = Switched; type Error = AlreadyOn;
//! #     fn handle(&self, _: ()) -> Result<Vec<Switched>, AlreadyOn> {
//! #         if self.on { Err(AlreadyOn) } else { Ok(vec![Switched::On]) }
//! #     }
//! #     fn apply(&mut self, e: &Switched) { self.on = *e == Switched::On; }
//! # }
//! use annals_testkit::given::AggregateTest;
//!
//! AggregateTest::<Light>::given([Switched::Off]).when(()).then_events([Switched::On]);
//! AggregateTest::<Light>::given([Switched::On]).when(()).then_error(|e| matches!(e, AlreadyOn));
//! ```

use std::fmt::Debug;

use annals::aggregate::Aggregate;

/// An aggregate rebuilt from given events, about to receive one command.
pub struct AggregateTest<A> {
    state: A,
}

/// What the command produced.
pub struct Then<A: Aggregate> {
    result: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> AggregateTest<A> {
    /// An aggregate with these events in its past.
    pub fn given(events: impl IntoIterator<Item = A::Event>) -> Self {
        let mut state = A::default();
        for event in events {
            state.apply(&event);
        }
        AggregateTest { state }
    }

    /// A new aggregate, with no events.
    pub fn given_nothing() -> Self {
        AggregateTest { state: A::default() }
    }

    /// Runs the command.
    pub fn when(self, command: A::Command) -> Then<A> {
        Then {
            result: self.state.handle(command),
        }
    }
}

impl<A: Aggregate> Then<A>
where
    A::Event: Debug + PartialEq,
{
    /// Asserts the command produced exactly these events, in this order.
    #[track_caller]
    pub fn then_events(self, expected: impl IntoIterator<Item = A::Event>) {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        match self.result {
            Ok(events) => assert_eq!(events, expected, "the command produced other events"),
            Err(error) => panic!("expected events {expected:?}, the command was refused: {error}"),
        }
    }

    /// Asserts the command was refused with an error `check` accepts.
    #[track_caller]
    pub fn then_error(self, check: impl FnOnce(&A::Error) -> bool) {
        match self.result {
            Err(error) => assert!(check(&error), "the command was refused, but with {error:?}"),
            Ok(events) => panic!("expected a refusal, the command produced {events:?}"),
        }
    }

    /// The events produced (panics on a refusal), e.g. to snapshot them with insta.
    #[track_caller]
    pub fn events(self) -> Vec<A::Event> {
        match self.result {
            Ok(events) => events,
            Err(error) => panic!("the command was refused: {error}"),
        }
    }
}
