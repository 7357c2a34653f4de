//! Counts that stay exact when a writer dies.
//!
//! A counter incremented after the record it counts is off by one whenever
//! the writer dies between the two, and the store has no transaction to join
//! them. So each counted event (a redemption, a cancelled redemption, an
//! expiry) takes the next position of a ledger with an increment, and writes
//! its entry there in the same `set_many` as its record: both or neither.
//! The count is the positions taken less those left empty by writers that
//! died. The sweep settles which are: an empty position is dead a lease after
//! it was first seen empty (`crate::lease`), and stays empty. Until then a
//! count may include a writer in flight or just dead; after, it is exact.
//!
//! The entries ([`Entry`]: `{code} {generation} {amount} {ms} {by}`, then
//! ` {order}` where an order took part; the amount is the money the event
//! moved: the discount a redemption gave, or a cancel gave back) are also
//! the record of who was counted when, read by the campaign's event stream
//! (`events`) and its reconciliation; the settled prefix keeps the sum of
//! its amounts, so a ledger's total is read, never recomputed.
//!
//! A [brake](super::brake) may hold a ledger's position counter (the
//! redemptions' freeze): a writer whose increment meets it engaged writes
//! no record, only [`EMPTY`] at its position, which the next settle counts
//! as empty at once (were that write lost, the position would be settled
//! as a dead writer's).

use super::brake;
use crate::auth::Acting;
use crate::error::Result;
use crate::lease::{self, Ownership};
use crate::store::{Store, StoreResult, read_counter};
use jiff::Timestamp;
use serde::Serialize;

/// The entry of a position its writer left empty on purpose.
pub(crate) const EMPTY: &[u8] = b"-";

/// Positions read per round trip while settling.
const CHUNK: u32 = 256;

/// Who made a change: the user with their own token, the shop's checkout,
/// an operator with the admin token, or the sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    User,
    Checkout,
    Operator,
    Sweep,
}

impl Actor {
    fn name(self) -> &'static str {
        match self {
            Actor::User => "user",
            Actor::Checkout => "checkout",
            Actor::Operator => "operator",
            Actor::Sweep => "sweep",
        }
    }

    fn parse(name: &str) -> Option<Actor> {
        [Actor::User, Actor::Checkout, Actor::Operator, Actor::Sweep]
            .into_iter()
            .find(|a| a.name() == name)
    }
}

/// What an entry says besides its coupon generation: the money moved, when,
/// by whom, for which order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub amount: i64,
    pub at: Timestamp,
    pub by: Actor,
    pub order: Option<String>,
}

impl Stamp {
    /// For a change an order asked for, by the user or the checkout acting
    /// for them.
    pub fn for_order(acting: &Acting, amount: i64, order: &str, at: Timestamp) -> Stamp {
        Stamp {
            amount,
            at,
            by: match acting.by_checkout {
                true => Actor::Checkout,
                false => Actor::User,
            },
            order: Some(order.to_owned()),
        }
    }
}

/// A ledger entry as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub code: String,
    pub generation: i64,
    pub stamp: Stamp,
}

impl Entry {
    fn render(&self) -> String {
        let Stamp {
            amount,
            at,
            by,
            order,
        } = &self.stamp;
        let mut line = format!(
            "{} {} {amount} {} {}",
            self.code,
            self.generation,
            at.as_millisecond(),
            by.name()
        );
        if let Some(order) = order {
            line.push(' ');
            line.push_str(order);
        }
        line
    }

    /// The entry written, or `None` for [`EMPTY`] or what no writer wrote.
    /// The order is the rest of the line, spaces and all.
    pub fn parse(bytes: &[u8]) -> Option<Entry> {
        let mut fields = std::str::from_utf8(bytes).ok()?.splitn(6, ' ');
        let code = fields.next()?.to_owned();
        let generation = fields.next()?.parse().ok()?;
        let amount = fields.next()?.parse().ok()?;
        let at = Timestamp::from_millisecond(fields.next()?.parse().ok()?).ok()?;
        let by = Actor::parse(fields.next()?)?;
        let order = fields.next().map(str::to_owned);
        Some(Entry {
            code,
            generation,
            stamp: Stamp {
                amount,
                at,
                by,
                order,
            },
        })
    }
}

/// One ledger: `{key}` counts positions taken, `{key}:{p}` is an entry,
/// `{key}:settled` the settled prefix.
pub struct Ledger(String);

impl Ledger {
    pub fn new(key: String) -> Self {
        Ledger(key)
    }

    /// The key of the position counter (a brake may hold it).
    pub fn counter(&self) -> &str {
        &self.0
    }

    /// Writes `record`, counted: takes the next position, then writes the
    /// record and its entry there in one `set_many`.
    pub async fn record(
        &self,
        store: &impl Store,
        record: (String, Vec<u8>),
        code: &impl std::fmt::Display,
        generation: i64,
        stamp: &Stamp,
    ) -> StoreResult<()> {
        self.record_many(store, vec![(record, code.to_string(), generation)], stamp)
            .await
    }

    /// Like [`record`](Self::record), unless the increment meets the brake
    /// engaged: then nothing is written, its position is left empty, and the
    /// answer is `false`.
    pub async fn record_unless_braked(
        &self,
        store: &impl Store,
        mut records: Vec<(String, Vec<u8>)>,
        code: &impl std::fmt::Display,
        generation: i64,
        stamp: &Stamp,
    ) -> StoreResult<bool> {
        let taken = store.increment(&self.0, 1).await?;
        if brake::is_engaged(taken) {
            // Best effort: a lost marker costs a lease's wait in the settle.
            let _ = store.set(&self.entry_key(brake::count(taken)), EMPTY).await;
            return Ok(false);
        }
        records.push(self.entry(brake::count(taken), code.to_string(), generation, stamp));
        store.set_many(&records).await?;
        Ok(true)
    }

    /// Writes `records`, each counted as [`record`](Self::record) counts one
    /// with `stamp`: takes as many positions with one increment, then writes
    /// every record and entry in one `set_many`.
    pub async fn record_many(
        &self,
        store: &impl Store,
        records: Vec<((String, Vec<u8>), String, i64)>,
        stamp: &Stamp,
    ) -> StoreResult<()> {
        let Ok(n) = i64::try_from(records.len()) else {
            return Err(crate::store::StoreError("too many records at once".into()));
        };
        if n == 0 {
            return Ok(());
        }
        let last = brake::count(store.increment(&self.0, n).await?);
        let mut entries = Vec::with_capacity(records.len() * 2);
        for (position, (record, code, generation)) in (last - n + 1..).zip(records) {
            entries.push(record);
            entries.push(self.entry(position, code, generation, stamp));
        }
        store.set_many(&entries).await
    }

    fn entry(
        &self,
        position: i64,
        code: String,
        generation: i64,
        stamp: &Stamp,
    ) -> (String, Vec<u8>) {
        let entry = Entry {
            code,
            generation,
            stamp: stamp.clone(),
        };
        (self.entry_key(position), entry.render().into_bytes())
    }

    /// The key of the entry at `position`.
    pub fn entry_key(&self, position: i64) -> String {
        format!("{}:{position}", self.0)
    }

    fn settled_key(&self) -> String {
        format!("{}:settled", self.0)
    }
}

/// What a settled prefix says: of positions `1..=upto`, `empty` were never
/// written, and the written ones' amounts sum to `amount`. A true fact
/// whoever wrote it, so settlers that race only repeat work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Settled {
    upto: i64,
    empty: i64,
    amount: i64,
}

impl Settled {
    fn parse(bytes: Option<&[u8]>) -> Settled {
        let parsed = bytes.and_then(|b| {
            let mut fields = std::str::from_utf8(b).ok()?.split(' ');
            Some(Settled {
                upto: fields.next()?.parse().ok()?,
                empty: fields.next()?.parse().ok()?,
                amount: fields.next().map_or(Some(0), |a| a.parse().ok())?,
            })
        });
        parsed.unwrap_or_default()
    }

    fn render(self) -> String {
        format!("{} {} {}", self.upto, self.empty, self.amount)
    }
}

/// The amount an entry records (0 if none), also from an entry written
/// before entries had a time and actor (`{code} {generation}[ {amount}]`).
pub(crate) fn amount_of(entry: &[u8]) -> i64 {
    match Entry::parse(entry) {
        Some(entry) => entry.stamp.amount,
        None => std::str::from_utf8(entry)
            .ok()
            .and_then(|e| e.split(' ').nth(2)?.parse().ok())
            .unwrap_or(0),
    }
}

/// What `ledgers` hold together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Entries: positions taken less those settled empty.
    pub count: i64,
    /// The sum of the settled entries' amounts.
    pub amount: i64,
    /// Positions not settled yet, whose amounts `amount` leaves out.
    pub unsettled: i64,
}

/// The entries of all `ledgers`: positions taken less those settled empty.
pub async fn count(store: &impl Store, ledgers: &[Ledger]) -> StoreResult<i64> {
    Ok(tally(store, ledgers).await?.count)
}

/// What `ledgers` hold: one batch of reads for the settled prefixes, one
/// read per position counter.
pub async fn tally(store: &impl Store, ledgers: &[Ledger]) -> StoreResult<Tally> {
    let settled: Vec<String> = ledgers.iter().map(Ledger::settled_key).collect();
    let settled = store.get_many(&settled).await?;
    let mut total = Tally::default();
    for (ledger, settled) in ledgers.iter().zip(settled) {
        let taken = brake::count(read_counter(store, &ledger.0).await?);
        let settled = Settled::parse(settled.as_deref());
        total.count = total.count.saturating_add(taken - settled.empty);
        total.amount = total.amount.saturating_add(settled.amount);
        total.unsettled = total
            .unsettled
            .saturating_add((taken - settled.upto).max(0));
    }
    Ok(total)
}

/// How far a settle got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Every position taken is settled.
    Done,
    /// A position is not final yet (its writer may run, or `confirm` said
    /// wait): a later call goes on from it.
    Waiting,
    /// `spend` stopped it.
    Stopped,
}

/// Settles `ledger` as far as its positions are final. `confirm` is asked of
/// each entry; `false` leaves it (and what follows) for a later call.
/// `spend(n)` grants how many of `n` positions may be read now (0 stops it;
/// `spend(0)`, before the ledger is looked at, grants 1 to go on).
pub async fn settle<S: Store>(
    store: &S,
    ledger: &Ledger,
    now: Timestamp,
    spend: &mut impl FnMut(u32) -> u32,
    confirm: &mut impl AsyncFnMut(&[u8]) -> Result<bool>,
) -> Result<Settle> {
    if spend(0) == 0 {
        return Ok(Settle::Stopped);
    }
    let taken = brake::count(read_counter(store, &ledger.0).await?);
    let key = ledger.settled_key();
    let mut settled = Settled::parse(store.get(&key).await?.as_deref());
    let start = settled;
    let outcome = loop {
        if settled.upto >= taken {
            break Settle::Done;
        }
        let n = spend(CHUNK.min(u32::try_from(taken - settled.upto).unwrap_or(CHUNK)));
        if n == 0 {
            break Settle::Stopped;
        }
        let positions: Vec<String> = (settled.upto + 1..=settled.upto + i64::from(n))
            .map(|p| ledger.entry_key(p))
            .collect();
        let mut waiting = false;
        for (position, entry) in positions.iter().zip(store.get_many(&positions).await?) {
            let done = match entry {
                Some(entry) if entry == EMPTY => {
                    settled.empty += 1;
                    true
                }
                Some(entry) => {
                    let confirmed = confirm(&entry).await?;
                    if confirmed {
                        settled.amount = settled.amount.saturating_add(amount_of(&entry));
                    }
                    confirmed
                }
                None => match lease::lapsed(store, position, 1, now).await? {
                    Ownership::Lapsed => {
                        settled.empty += 1;
                        true
                    }
                    _ => false,
                },
            };
            if !done {
                waiting = true;
                break;
            }
            settled.upto += 1;
        }
        if waiting {
            break Settle::Waiting;
        }
    };
    if settled != start {
        store.set(&key, settled.render().as_bytes()).await?;
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reads_back_as_written_and_older_entries_keep_their_amount() {
        let entry = Entry {
            code: "CODE".into(),
            generation: 2,
            stamp: Stamp {
                amount: 500,
                at: Timestamp::from_millisecond(1_800_000_000_123).expect("a time"),
                by: Actor::Checkout,
                order: Some("order with spaces".into()),
            },
        };
        let written = entry.render();
        assert_eq!(Entry::parse(written.as_bytes()), Some(entry));
        assert_eq!(amount_of(written.as_bytes()), 500);
        assert_eq!(amount_of(b"CODE 2 700"), 700);
        assert_eq!(amount_of(b"CODE 2"), 0);
        assert_eq!(Entry::parse(EMPTY), None);
    }
}
