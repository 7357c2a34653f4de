//! A seeded, single-threaded executor and the store it schedules.
//!
//! Every task runs until it waits on a store call; then the scheduler picks
//! one waiting call at random (from the seed), decides its fault, applies it
//! to the map and resumes that task alone. So the seed fixes the whole
//! interleaving, every fault and every clock: one seed, one trace.

use crate::store::{Store, StoreError, StoreResult};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// splitmix64: small, fast and good enough to pick schedules.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
    pub fn range(&mut self, from: i64, to: i64) -> i64 {
        from + self.below((to - from + 1) as u64) as i64
    }
}

/// A call a task waits on.
#[derive(Debug, Clone)]
pub enum Call {
    Get(Vec<String>),
    Set(Vec<(String, Vec<u8>)>),
    Increment(String, i64),
    Delete(Vec<String>),
    /// Not a store call: the task waits until this virtual instant (ms).
    Sleep(i64),
}

#[derive(Debug)]
enum Answer {
    Values(Vec<Option<Vec<u8>>>),
    Done,
    Count(i64),
    Failed(String),
}

/// The faults a store call can meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Refused before it applied.
    ErrorBefore,
    /// Applied, then reported failed: the ambiguous timeout.
    ErrorAfter,
    /// The calling instance dies: the call applies or not, and the task's
    /// operation never runs another step.
    Crash { applied: bool },
}

/// How often each fault strikes, per mille of store calls.
#[derive(Debug, Clone, Copy)]
pub struct FaultRates {
    pub error_before: u64,
    pub error_after: u64,
    pub crash: u64,
}

/// One applied store call, for the checker.
#[derive(Debug, Clone)]
pub struct Applied {
    pub step: u64,
    pub task: usize,
    pub call: Call,
    /// What an increment returned.
    pub _count: Option<i64>,
}

#[derive(Default)]
pub struct World {
    pub map: BTreeMap<String, Vec<u8>>,
    pub now_ms: i64,
    pub step: u64,
    waiting: BTreeMap<usize, Call>,
    answers: BTreeMap<usize, Answer>,
    crashed: BTreeSet<usize>,
    current: usize,
    pub applied: Vec<Applied>,
    /// A running digest of every decision: equal seeds give equal digests.
    pub digest: u64,
}

impl World {
    fn apply(&mut self, task: usize, call: &Call) -> Answer {
        let answer = match call {
            Call::Get(keys) => {
                Answer::Values(keys.iter().map(|k| self.map.get(k).cloned()).collect())
            }
            Call::Set(entries) => {
                for (k, v) in entries {
                    self.map.insert(k.clone(), v.clone());
                }
                Answer::Done
            }
            Call::Increment(key, delta) => {
                let old = match self.map.get(key) {
                    None => Some(0),
                    Some(text) => std::str::from_utf8(text)
                        .ok()
                        .and_then(|t| t.parse::<i64>().ok()),
                };
                match old.and_then(|old| old.checked_add(*delta)) {
                    Some(value) => {
                        self.map.insert(key.clone(), value.to_string().into_bytes());
                        Answer::Count(value)
                    }
                    None => Answer::Failed(format!("{key} is not a counter or overflowed")),
                }
            }
            Call::Delete(keys) => {
                for k in keys {
                    self.map.remove(k);
                }
                Answer::Done
            }
            Call::Sleep(until) => {
                self.now_ms = self.now_ms.max(*until);
                Answer::Done
            }
        };
        if !matches!(call, Call::Sleep(_) | Call::Get(_)) {
            self.applied.push(Applied {
                step: self.step,
                task,
                call: call.clone(),
                _count: match answer {
                    Answer::Count(c) => Some(c),
                    _ => None,
                },
            });
        }
        answer
    }
}

/// The store every simulated task uses: calls wait for the scheduler.
#[derive(Clone)]
pub struct SimStore(pub Rc<RefCell<World>>);

impl SimStore {
    async fn call(&self, call: Call) -> Answer {
        let task = {
            let mut world = self.0.borrow_mut();
            let task = world.current;
            world.waiting.insert(task, call);
            task
        };
        std::future::poll_fn(|_| match self.0.borrow_mut().answers.remove(&task) {
            Some(answer) => Poll::Ready(answer),
            None => Poll::Pending,
        })
        .await
    }

    /// Waits until the virtual clock reads `until_ms`.
    pub async fn sleep_until(&self, until_ms: i64) {
        self.call(Call::Sleep(until_ms)).await;
    }

    pub fn now_ms(&self) -> i64 {
        self.0.borrow().now_ms
    }
}

fn unexpected(answer: Answer) -> StoreError {
    match answer {
        Answer::Failed(message) => StoreError(message),
        other => StoreError(format!("simulator answered {other:?}")),
    }
}

impl Store for SimStore {
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        match self.call(Call::Get(vec![key.to_owned()])).await {
            Answer::Values(mut v) => Ok(v.pop().flatten()),
            other => Err(unexpected(other)),
        }
    }
    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        match self.call(Call::Get(keys.to_vec())).await {
            Answer::Values(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }
    async fn set(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        self.set_many(&[(key.to_owned(), value.to_vec())]).await
    }
    async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> StoreResult<()> {
        match self.call(Call::Set(entries.to_vec())).await {
            Answer::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }
    async fn increment(&self, key: &str, delta: i64) -> StoreResult<i64> {
        match self.call(Call::Increment(key.to_owned(), delta)).await {
            Answer::Count(c) => Ok(c),
            other => Err(unexpected(other)),
        }
    }
    async fn delete_many(&self, keys: &[String]) -> StoreResult<()> {
        match self.call(Call::Delete(keys.to_vec())).await {
            Answer::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

/// An operation that ends early, without running another step, when its
/// instance crashes (the scheduler decides which).
pub struct Crashable<F> {
    task: usize,
    world: Rc<RefCell<World>>,
    inner: Option<Pin<Box<F>>>,
}

/// What a crashed operation's client sees: the connection dropped.
#[derive(Debug)]
pub struct Crashed;

impl<F: Future> Future for Crashable<F> {
    type Output = Result<F::Output, Crashed>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.world.borrow_mut().crashed.remove(&self.task) {
            self.inner = None;
            // The crash's answer to the call it waited on is not for anyone.
            self.world.borrow_mut().answers.remove(&self.task);
            return Poll::Ready(Err(Crashed));
        }
        match self.inner.as_mut() {
            Some(inner) => inner.as_mut().poll(cx).map(Ok),
            None => Poll::Ready(Err(Crashed)),
        }
    }
}

type Task = Pin<Box<dyn Future<Output = ()>>>;

pub struct Executor {
    pub store: SimStore,
    pub rng: Rng,
    tasks: Vec<Option<Task>>,
    /// Faults strike only while this is set.
    pub faults: Option<FaultRates>,
}

impl Executor {
    pub fn new(seed: u64, start_ms: i64) -> Executor {
        let world = World {
            now_ms: start_ms,
            ..World::default()
        };
        Executor {
            store: SimStore(Rc::new(RefCell::new(world))),
            rng: Rng::new(seed),
            tasks: Vec::new(),
            faults: None,
        }
    }

    /// The id the next spawned task gets.
    pub fn next_task(&self) -> usize {
        self.tasks.len()
    }

    pub fn spawn(&mut self, task: impl Future<Output = ()> + 'static) {
        self.tasks.push(Some(Box::pin(task)));
    }

    /// Wraps an operation of task `task` so a crash ends it.
    pub fn crashable<F: Future>(world: &Rc<RefCell<World>>, task: usize, op: F) -> Crashable<F> {
        Crashable {
            task,
            world: world.clone(),
            inner: Some(Box::pin(op)),
        }
    }

    fn poll_task(&mut self, id: usize) {
        self.store.0.borrow_mut().current = id;
        let mut cx = Context::from_waker(Waker::noop());
        if let Some(task) = self.tasks[id].as_mut()
            && task.as_mut().poll(&mut cx).is_ready()
        {
            self.tasks[id] = None;
        }
    }

    /// Runs until every task has finished, or `max_steps` calls were made.
    /// Returns false if it stopped at the step limit.
    pub fn run(&mut self, max_steps: u64) -> bool {
        let mut ready: BTreeSet<usize> = (0..self.tasks.len()).collect();
        loop {
            while let Some(id) = ready.pop_first() {
                self.poll_task(id);
            }
            let (pick, call) = {
                let world = self.store.0.borrow();
                if world.waiting.is_empty() {
                    return true;
                }
                if world.step >= max_steps {
                    return false;
                }
                // Store calls first; a sleeper runs (and moves the clock)
                // only when nothing else is waiting, the earliest first.
                let calls: Vec<usize> = world
                    .waiting
                    .iter()
                    .filter(|(_, c)| !matches!(c, Call::Sleep(_)))
                    .map(|(id, _)| *id)
                    .collect();
                let pick = if calls.is_empty() {
                    *world
                        .waiting
                        .iter()
                        .min_by_key(|(id, c)| match c {
                            Call::Sleep(until) => (*until, **id),
                            _ => (i64::MAX, **id),
                        })
                        .map(|(id, _)| id)
                        .unwrap_or(&0)
                } else {
                    calls[self.rng.below(calls.len() as u64) as usize]
                };
                (pick, world.waiting.get(&pick).cloned())
            };
            let Some(call) = call else { return true };
            let fault = self.fault_for(&call);
            let mut world = self.store.0.borrow_mut();
            world.waiting.remove(&pick);
            world.step += 1;
            world.now_ms += self.rng.range(0, 3);
            world.current = pick;
            let answer = match fault {
                None => world.apply(pick, &call),
                Some(Fault::ErrorBefore) => Answer::Failed("simulated: refused".into()),
                Some(Fault::ErrorAfter) => {
                    world.apply(pick, &call);
                    // The caller waited for its timeout.
                    world.now_ms += 5_000;
                    Answer::Failed("simulated: timed out after applying".into())
                }
                Some(Fault::Crash { applied }) => {
                    if applied {
                        world.apply(pick, &call);
                    }
                    world.crashed.insert(pick);
                    Answer::Failed("simulated: crashed".into())
                }
            };
            world.digest = world
                .digest
                .rotate_left(7)
                .wrapping_add(pick as u64 * 31 + world.step)
                ^ match &fault {
                    None => 0,
                    Some(Fault::ErrorBefore) => 1,
                    Some(Fault::ErrorAfter) => 2,
                    Some(Fault::Crash { applied }) => 3 + u64::from(*applied),
                };
            world.answers.insert(pick, answer);
            drop(world);
            ready.insert(pick);
        }
    }

    fn fault_for(&mut self, call: &Call) -> Option<Fault> {
        let rates = self.faults?;
        if matches!(call, Call::Sleep(_)) {
            return None;
        }
        let roll = self.rng.below(1000);
        if roll < rates.error_before {
            Some(Fault::ErrorBefore)
        } else if roll < rates.error_before + rates.error_after {
            Some(Fault::ErrorAfter)
        } else if roll < rates.error_before + rates.error_after + rates.crash {
            Some(Fault::Crash {
                applied: self.rng.chance(500),
            })
        } else {
            None
        }
    }
}
