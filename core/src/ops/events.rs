//! A campaign's events, for finance: every change of its coupons and of the
//! campaign itself, read from the numbered logs the operations already write
//! (claims, validations and redemptions pay nothing for it; holds and
//! releases, which had no campaign-wide log, an increment each).
//!
//! Each log is a source read by position from 1: the claims are the expiry
//! index (`c:{id}:m:{month}:coupon:{shard}:{n}`, joined with the coupon for
//! its user and time), holds, releases, redemptions, cancels and expiries
//! their ledgers (`ledger`), the operator's changes their records (pauses,
//! freezes, closes, re-datings, limits) and the campaign's creation. A page
//! merges the sources by time; the cursor says how far each was read, so
//! every event is in exactly one page. A position taken but not written yet
//! holds its source until it is written or its writer has been dead a lease
//! (`crate::lease`), as the sweep settles ledgers: a reader never skips an
//! event that appears later. An event whose write was in flight therefore
//! comes in a later page than events after it in time; `at` orders them.
//!
//! A revival is the re-dating that did it (`revive_expired`): its coupons
//! are usable again without an event each. A hold that ends on its own has
//! no event either: it ends `hold_seconds` after `at`, or at the expiry.
//!
//! `reconcile` counts the same sources and compares with the stats.

use super::brake::{self, Action, Transition};
use super::dating::{Change, Dating};
use super::ledger::{self, Actor, Entry, Ledger};
use super::limits::LimitsChange;
use super::{decode, load_campaign};
use crate::campaign::{Campaign, CampaignId};
use crate::coupon::CouponRecord;
use crate::error::{Error, Result};
use crate::expiry::YearMonth;
use crate::keys::{CampaignKeys, CouponKeys};
use crate::lease::{self, Ownership};
use crate::store::{Store, decode_small_counter, read_counter};
use crate::time::render;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Events per page unless asked otherwise, and the most one page holds.
pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1_000;

/// Unwritten positions a page looks at (each may cost a round trip or two).
const GAP_LOOKS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Created,
    Claimed,
    Held,
    Released,
    Redeemed,
    Cancelled,
    Expired,
    Paused,
    Resumed,
    Frozen,
    Unfrozen,
    ClaimsClosed,
    LimitsChanged,
    Redated,
}

/// One event, as finance reads it. Amounts are in minor units of the
/// campaign's currency.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Unique and stable: its log and position.
    pub id: String,
    pub kind: EventKind,
    /// In the campaign's zone.
    pub at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The coupon's generation: one more after each cancelled redemption.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// A claim's face value, the discount a hold or redemption gives, or
    /// the one a cancel gives back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    pub by: Actor,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A re-dating's or change of limits' old and new values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<serde_json::Value>,
    #[serde(skip)]
    instant: Timestamp,
}

/// A page of events, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// Where the next page starts: also after the last event, to poll.
    pub next_cursor: String,
    /// Whether more events can be read now.
    pub has_more: bool,
    /// Logs held back at a position taken whose writer may still write it:
    /// their next events come later (or, if the writer died, the log goes on
    /// a lease after the position was first seen empty).
    pub waiting: u32,
}

/// What a source's positions hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Log {
    Created,
    Claims,
    Ledger(EventKind),
    Brake,
    Redatings,
    Limits,
}

/// How a source's positions are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Count {
    One,
    Counter,
    /// A ledger's position counter, brake levels aside.
    Ledger,
    /// The claims brake's counter, closes aside.
    Pauses,
    /// The register of the latest finished change of limits.
    Done,
}

pub(super) struct Source {
    /// Its name in event ids: `[a-z0-9-]`.
    pub(super) name: String,
    /// The sources a cursor lists together (a log per shard), and this one's
    /// place among them.
    group: String,
    slot: usize,
    /// Positions are `{prefix}:{p}` (the record itself when `Count::One`).
    prefix: String,
    counter: String,
    count: Count,
    pub(super) log: Log,
}

impl Source {
    pub(super) fn key(&self, position: i64) -> String {
        match self.count {
            Count::One => self.prefix.clone(),
            _ => format!("{}:{position}", self.prefix),
        }
    }

    fn ledger(group: &str, shard: u32, ledger: &Ledger, kind: EventKind) -> Source {
        Source {
            name: format!("{group}{shard}"),
            group: group.to_owned(),
            slot: shard as usize,
            prefix: ledger.counter().to_owned(),
            counter: ledger.counter().to_owned(),
            count: Count::Ledger,
            log: Log::Ledger(kind),
        }
    }
}

/// Every source of `campaign`'s events as of `now`, in a fixed order that
/// only grows (new months and revivals add sources).
pub(super) fn sources(
    campaign: &Campaign,
    dating: &Dating,
    zone: &TimeZone,
    now: Timestamp,
) -> Vec<Source> {
    let keys = CampaignKeys::new(&campaign.id);
    let one = |name: &str, prefix: String, counter: String, count, log| Source {
        name: name.to_owned(),
        group: name.to_owned(),
        slot: 0,
        prefix,
        counter,
        count,
        log,
    };
    let created = keys.created();
    let shards = campaign.shard_count();
    // Events at the same instant come in this order: a coupon's claim
    // before its redemption. Cursors name sources, so the order may change
    // as sources are added.
    let mut all = vec![one(
        "created",
        created.clone(),
        created,
        Count::One,
        Log::Created,
    )];
    for month in claim_months(campaign, zone, now) {
        for shard in 0..shards {
            all.push(Source {
                name: format!("m{month}s{shard}"),
                group: format!("m{month}"),
                slot: shard as usize,
                prefix: strip(keys.month_slot(month, shard, 0)),
                counter: keys.month_seq(month, shard),
                count: Count::Counter,
                log: Log::Claims,
            });
        }
    }
    let ledgers = [
        (
            "h",
            CampaignKeys::holds as fn(&CampaignKeys, u32) -> Ledger,
            EventKind::Held,
        ),
        ("l", CampaignKeys::releases, EventKind::Released),
        ("r", CampaignKeys::redemptions, EventKind::Redeemed),
        ("x", CampaignKeys::cancels, EventKind::Cancelled),
    ];
    for (name, ledger, kind) in ledgers {
        for shard in 0..shards {
            all.push(Source::ledger(name, shard, &ledger(&keys, shard), kind));
        }
    }
    for epoch in 0..=dating.epoch {
        let mut source = Source::ledger("e", epoch, &keys.expirations(epoch), EventKind::Expired);
        (source.group, source.slot) = (source.name.clone(), 0);
        all.push(source);
    }
    all.extend([
        one(
            "pauses",
            strip(keys.brake_record(0)),
            keys.brake(),
            Count::Pauses,
            Log::Brake,
        ),
        one(
            "closes",
            strip(keys.close_record(0)),
            keys.closes(),
            Count::Counter,
            Log::Brake,
        ),
        one(
            "freezes",
            strip(keys.freeze_record(0)),
            keys.freeze(),
            Count::Counter,
            Log::Brake,
        ),
        one(
            "redatings",
            strip(keys.dating_change(0)),
            keys.dating_seq(),
            Count::Counter,
            Log::Redatings,
        ),
        one(
            "limits",
            strip(keys.limits_change(0)),
            keys.limits_done(),
            Count::Done,
            Log::Limits,
        ),
    ]);
    all
}

/// The claim months (campaign zone) in which coupons may have been issued.
fn claim_months(campaign: &Campaign, zone: &TimeZone, now: Timestamp) -> Vec<YearMonth> {
    let (first, last) = campaign.claim_months(zone, now);
    std::iter::successors(Some(first), |m| Some(m.next()))
        .take_while(|m| *m <= last)
        .collect()
}

/// `{prefix}:0` less its `:0`.
fn strip(mut key: String) -> String {
    key.truncate(key.len() - 2);
    key
}

/// How many positions each source has: one batch of reads, then one read
/// per counter too large (or braked) to read in a batch.
pub(super) async fn counts(store: &impl Store, sources: &[Source]) -> Result<Vec<i64>> {
    let keys: Vec<String> = sources.iter().map(|s| s.counter.clone()).collect();
    let mut counts = Vec::with_capacity(sources.len());
    for (source, bytes) in sources.iter().zip(store.get_many(&keys).await?) {
        let count = match (source.count, bytes) {
            (Count::One, Some(_)) => 1,
            (_, None) => 0,
            (Count::Done, Some(b)) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            (count, Some(b)) => {
                let raw = match decode_small_counter(&b) {
                    Some(raw) => raw,
                    None => read_counter(store, &source.counter).await?,
                };
                match count {
                    Count::Ledger => brake::count(raw),
                    Count::Pauses => raw % brake::CLOSED,
                    _ => raw,
                }
            }
        };
        counts.push(count);
    }
    Ok(counts)
}

/// Positions read per source: by group, then slot (`{group}.{p0}.{p1}...`,
/// groups joined by `_`), so a cursor takes a few characters per log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Cursor(BTreeMap<String, Vec<i64>>);

impl Cursor {
    fn parse(raw: Option<&str>) -> Result<Cursor> {
        let bad = || Error::invalid("cursor", "is not a cursor this service gave");
        let mut read = BTreeMap::new();
        for part in raw.unwrap_or("").split('_').filter(|p| !p.is_empty()) {
            let mut fields = part.split('.');
            let group = fields.next().filter(|g| !g.is_empty()).ok_or_else(bad)?;
            let positions = fields
                .map(|p| p.parse::<i64>().ok().filter(|p| *p >= 0))
                .collect::<Option<Vec<i64>>>()
                .filter(|p| !p.is_empty())
                .ok_or_else(bad)?;
            if read.insert(group.to_owned(), positions).is_some() {
                return Err(bad());
            }
        }
        Ok(Cursor(read))
    }

    fn of(sources: &[Source], positions: &[i64]) -> Cursor {
        let mut read: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for (source, position) in sources.iter().zip(positions) {
            let group = read.entry(source.group.clone()).or_default();
            if group.len() <= source.slot {
                group.resize(source.slot + 1, 0);
            }
            group[source.slot] = *position;
        }
        for positions in read.values_mut() {
            while positions.last() == Some(&0) {
                positions.pop();
            }
        }
        read.retain(|_, positions| !positions.is_empty());
        Cursor(read)
    }

    fn render(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(group, positions)| {
                let positions: Vec<String> = positions.iter().map(i64::to_string).collect();
                format!("{group}.{}", positions.join("."))
            })
            .collect();
        parts.join("_")
    }

    /// Where each source stands; `invalid_request` for a log the campaign
    /// has not, or a position past its count.
    fn positions(&self, sources: &[Source], counts: &[i64]) -> Result<Vec<i64>> {
        let at = |source: &Source| self.0.get(&source.group)?.get(source.slot).copied();
        // Every position the cursor lists is a source's.
        let listed: usize = self.0.values().map(Vec::len).sum();
        if sources.iter().filter(|s| at(s).is_some()).count() != listed {
            return Err(Error::invalid(
                "cursor",
                "names a log this campaign has not",
            ));
        }
        sources
            .iter()
            .zip(counts)
            .map(|(source, count)| match at(source).unwrap_or(0) {
                at if at <= *count => Ok(at),
                _ => Err(Error::invalid("cursor", "is ahead of the campaign's logs")),
            })
            .collect()
    }
}

/// Positions read from one source, with what each held.
type Positions = Vec<(i64, Option<Vec<u8>>)>;

/// What one position holds.
enum Item {
    Event(Box<Event>),
    /// Nothing to show: a position left empty on purpose, or by a writer
    /// that died.
    Skip,
    /// Not written yet; its writer may still write it.
    Waiting,
}

/// Up to `limit` events of campaign `id` after `cursor`, oldest first.
pub async fn page(
    store: &impl Store,
    id: &CampaignId,
    cursor: Option<&str>,
    limit: u32,
    now: Timestamp,
) -> Result<EventPage> {
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Error::invalid("limit", format!("must be 1 to {MAX_LIMIT}")));
    }
    let cursor = Cursor::parse(cursor)?;
    let (campaign, dating) = load_campaign(store, id)
        .await?
        .ok_or(Error::CampaignNotFound)?;
    let zone = campaign.zone()?;
    let sources = sources(&campaign, &dating, &zone, now);
    let counts = counts(store, &sources).await?;
    let mut positions = cursor.positions(&sources, &counts)?;
    // Each source with positions left reads ahead its share of the page.
    let open = positions.iter().zip(&counts).filter(|(p, c)| p < c).count();
    let share = i64::from(limit)
        .saturating_mul(2)
        .checked_div(i64::try_from(open).unwrap_or(1))
        .unwrap_or(1)
        .clamp(4, i64::from(limit).max(4));
    let mut wanted = Vec::new();
    let mut ranges = Vec::with_capacity(sources.len());
    for (i, source) in sources.iter().enumerate() {
        let (from, to) = (positions[i] + 1, (positions[i] + share).min(counts[i]));
        ranges.push((from, to));
        wanted.extend((from..=to).map(|p| source.key(p)));
    }
    let found = store.get_many(&wanted).await?;
    let mut found = found.into_iter();
    let mut raw: Vec<Positions> = Vec::with_capacity(sources.len());
    for &(from, to) in &ranges {
        raw.push((from..=to).zip(found.by_ref()).collect());
    }
    let holders = holders(store, &sources, &raw).await?;
    let mut queues = Vec::with_capacity(sources.len());
    let mut looks = 0;
    for (source, entries) in sources.iter().zip(raw) {
        let mut queue = Vec::with_capacity(entries.len());
        for (position, bytes) in entries {
            let item = match bytes {
                Some(bytes) => read(source, position, &bytes, &campaign, &zone, &holders)?,
                None if looks < GAP_LOOKS => {
                    looks += 1;
                    match lease::lapsed(store, &source.key(position), 1, now).await? {
                        Ownership::Lapsed => Item::Skip,
                        _ => Item::Waiting,
                    }
                }
                None => Item::Waiting,
            };
            // Past a waiting position too: a first look starts its lease.
            queue.push(item);
        }
        queue.reverse();
        queues.push(queue);
    }
    let mut events = Vec::new();
    while events.len() < limit as usize {
        // Skipped positions are read.
        for (i, queue) in queues.iter_mut().enumerate() {
            while matches!(queue.last(), Some(Item::Skip)) {
                queue.pop();
                positions[i] += 1;
            }
        }
        // A source read to the end of its share may hold an earlier event
        // past it: the page stops rather than put a later one first.
        if queues
            .iter()
            .zip(positions.iter().zip(&counts))
            .any(|(q, (p, c))| q.is_empty() && p < c)
        {
            break;
        }
        let next = queues
            .iter()
            .enumerate()
            .filter_map(|(i, q)| match q.last() {
                Some(Item::Event(e)) => Some((e.instant, i)),
                _ => None,
            })
            .min();
        let Some((_, i)) = next else { break };
        if let Some(Item::Event(event)) = queues[i].pop() {
            events.push(*event);
        }
        positions[i] += 1;
    }
    let waiting = queues
        .iter()
        .filter(|q| matches!(q.last(), Some(Item::Waiting)))
        .count();
    let has_more = queues
        .iter()
        .zip(positions.iter().zip(&counts))
        .any(|(q, (p, c))| !matches!(q.last(), Some(Item::Waiting)) && p < c);
    Ok(EventPage {
        events,
        next_cursor: Cursor::of(&sources, &positions).render(),
        has_more,
        waiting: u32::try_from(waiting).unwrap_or(u32::MAX),
    })
}

/// The coupons the read positions name, by code: one batch of reads.
async fn holders(
    store: &impl Store,
    sources: &[Source],
    raw: &[Positions],
) -> Result<HashMap<String, CouponRecord>> {
    let mut codes: Vec<String> = Vec::new();
    for (source, entries) in sources.iter().zip(raw) {
        for bytes in entries.iter().filter_map(|(_, b)| b.as_deref()) {
            let code = match source.log {
                Log::Claims => std::str::from_utf8(bytes).ok().map(str::to_owned),
                Log::Ledger(_) => Entry::parse(bytes).map(|e| e.code),
                _ => None,
            };
            codes.extend(code);
        }
    }
    codes.sort();
    codes.dedup();
    let keys: Vec<String> = codes
        .iter()
        .filter_map(|c| crate::code::CouponCode::parse(c))
        .map(|c| CouponKeys::new(&c).record())
        .collect();
    let mut records = HashMap::new();
    for (key, bytes) in keys.iter().zip(store.get_many(&keys).await?) {
        if let Some(bytes) = bytes {
            let record: CouponRecord = decode(key, &bytes)?;
            records.insert(record.code.clone(), record);
        }
    }
    Ok(records)
}

/// The event a written position holds.
fn read(
    source: &Source,
    position: i64,
    bytes: &[u8],
    campaign: &Campaign,
    zone: &TimeZone,
    holders: &HashMap<String, CouponRecord>,
) -> Result<Item> {
    let key = source.key(position);
    let event = |kind, at: Timestamp, by| Event {
        id: format!("{}.{position}", source.name),
        kind,
        at: render(at, zone),
        code: None,
        generation: None,
        user_id: None,
        order_id: None,
        amount: None,
        by,
        changed_by: None,
        reason: None,
        change: None,
        instant: at,
    };
    let event = match source.log {
        Log::Created => {
            let at = lease::parse_ms(bytes)
                .ok_or_else(|| Error::Internal(format!("record {key} is unreadable")))?;
            event(EventKind::Created, at, Actor::Operator)
        }
        Log::Claims => {
            // Written before its index slot, in the same write: a slot
            // without its coupon is a store that lost a write.
            let Some(coupon) = holders.get(String::from_utf8_lossy(bytes).as_ref()) else {
                return Ok(Item::Skip);
            };
            Event {
                code: Some(coupon.code.clone()),
                generation: Some(0),
                user_id: Some(coupon.user_id.clone()),
                amount: Some(campaign.discount.face_value().minor()),
                ..event(EventKind::Claimed, coupon.issued_at, Actor::User)
            }
        }
        Log::Ledger(kind) => {
            if bytes == ledger::EMPTY {
                return Ok(Item::Skip);
            }
            let entry = Entry::parse(bytes)
                .ok_or_else(|| Error::Internal(format!("entry {key} is unreadable")))?;
            let stamp = entry.stamp;
            Event {
                user_id: holders.get(&entry.code).map(|c| c.user_id.clone()),
                code: Some(entry.code),
                generation: Some(entry.generation),
                order_id: stamp.order,
                amount: (kind != EventKind::Released && kind != EventKind::Expired)
                    .then_some(stamp.amount),
                ..event(kind, stamp.at, stamp.by)
            }
        }
        Log::Brake => {
            let t: Transition = decode(&key, bytes)?;
            let kind = match t.action {
                Action::Pause => EventKind::Paused,
                Action::Resume => EventKind::Resumed,
                Action::Freeze => EventKind::Frozen,
                Action::Unfreeze => EventKind::Unfrozen,
                Action::Close => EventKind::ClaimsClosed,
            };
            Event {
                changed_by: t.changed_by,
                reason: t.reason,
                ..event(kind, t.at, Actor::Operator)
            }
        }
        Log::Redatings => {
            let c: Change = decode(&key, bytes)?;
            Event {
                change: Some(serde_json::json!({
                    "from": c.from, "to": c.to, "revive_expired": c.revive_expired,
                })),
                changed_by: Some(c.changed_by),
                reason: c.reason,
                ..event(EventKind::Redated, c.changed_at, Actor::Operator)
            }
        }
        Log::Limits => {
            let c: LimitsChange = decode(&key, bytes)?;
            Event {
                change: Some(serde_json::json!({
                    "from": c.from, "to": c.to, "capacity": c.capacity,
                })),
                changed_by: c.changed_by,
                reason: c.reason,
                ..event(EventKind::LimitsChanged, c.changed_at, Actor::Operator)
            }
        }
    };
    Ok(Item::Event(Box::new(event)))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::auth::{Caller, UserId};
    use crate::code::{CouponCode, RANDOM_BYTES};
    use crate::lease::LEASE;
    use crate::money::{Amount, Currency};
    use crate::ops::brake::Note;
    use crate::ops::campaigns::{create, set_paused};
    use crate::ops::claim::{ClaimRequest, claim};
    use crate::ops::coupons::Order;
    use crate::ops::expire::{ExpirationRequest, sweep};
    use crate::ops::holds::{HoldRequest, hold, release};
    use crate::ops::redeem::{RedemptionRequest, cancel, redeem};
    use crate::ops::testing::{campaign, setup_time, ts};
    use crate::store::memory::MemoryStore;
    use futures::executor::block_on;

    pub(in crate::ops) fn id() -> CampaignId {
        CampaignId::parse("c").expect("id")
    }

    fn order(id: &str) -> Order {
        Order {
            id: Some(id.into()),
            amount: Amount::new(3000).expect("an amount"),
            currency: Currency::parse("CNY").expect("a currency"),
            categories: vec![],
            lines: vec![],
        }
    }

    async fn claim_at(store: &MemoryStore, user: &str, seed: u8, at: &str) -> String {
        let request = ClaimRequest { campaign_id: id() };
        let code = CouponCode::from_random([seed; RANDOM_BYTES]);
        let user = UserId(user.into());
        let key = format!("k{seed}");
        let claimed = claim(store, &user, &key, request, ts(at), code).await;
        claimed.expect("claim").coupon.code
    }

    async fn sweep_at(store: &MemoryStore, at: &str) {
        for _ in 0..4 {
            sweep(store, ExpirationRequest::default(), ts(at), || false)
                .await
                .expect("sweep");
        }
    }

    /// Every page of the campaign's events, `limit` at a time.
    async fn read_all(store: &MemoryStore, limit: u32, now: Timestamp) -> Vec<Event> {
        let (mut events, mut cursor) = (Vec::new(), None::<String>);
        loop {
            let page = page(store, &id(), cursor.as_deref(), limit, now)
                .await
                .expect("page");
            assert!(page.events.len() <= limit as usize);
            events.extend(page.events);
            cursor = Some(page.next_cursor);
            if !page.has_more {
                return events;
            }
        }
    }

    /// A campaign with holds and a coupon's whole life: claimed in January
    /// and expired, claimed in February, held, released, redeemed,
    /// cancelled; paused and resumed.
    pub(in crate::ops) fn story() -> (MemoryStore, String) {
        let store = MemoryStore::default();
        let mut c = campaign("c");
        c.hold_seconds = Some(900);
        let code = block_on(async {
            create(&store, c, setup_time()).await.expect("campaign");
            claim_at(&store, "alice", 1, "2028-01-10T09:00:00+08:00").await;
            sweep_at(&store, "2028-02-01T00:10:00+08:00").await;
            let code = claim_at(&store, "bob", 2, "2028-02-03T09:00:00+08:00").await;
            claim_at(&store, "alice", 3, "2028-02-04T09:00:00+08:00").await;
            let held = HoldRequest {
                code: code.clone(),
                order: order("o1"),
                user_id: Some("bob".into()),
            };
            let at = "2028-02-05T10:00:00+08:00";
            hold(&store, Caller::Checkout, held, ts(at))
                .await
                .expect("hold");
            let at = ts("2028-02-05T10:01:00+08:00");
            release(&store, &code, "o1", Actor::Checkout, at)
                .await
                .expect("release");
            let redemption = RedemptionRequest {
                code: code.clone(),
                order: order("o2"),
                user_id: None,
            };
            let bob = UserId("bob".into());
            let at = ts("2028-02-05T10:02:00+08:00");
            redeem(&store, &bob, redemption, at).await.expect("redeem");
            let at = ts("2028-02-05T10:03:00+08:00");
            cancel(&store, &code, "o2", Actor::Operator, at)
                .await
                .expect("cancel");
            let note = || Note {
                changed_by: Some("ops".into()),
                reason: Some("drill".into()),
            };
            let at = ts("2028-02-06T00:00:00+08:00");
            set_paused(&store, &id(), true, note(), at)
                .await
                .expect("pause");
            let at = ts("2028-02-06T01:00:00+08:00");
            set_paused(&store, &id(), false, note(), at)
                .await
                .expect("resume");
            sweep_at(&store, "2028-02-06T02:00:00+08:00").await;
            code
        });
        (store, code)
    }

    #[test]
    fn every_change_is_one_event_in_time_order_whatever_the_page_size() {
        let (store, code) = story();
        let now = ts("2028-02-07T00:00:00+08:00");
        use EventKind::*;
        let expected = [
            Created, Claimed, Expired, Claimed, Claimed, Held, Released, Redeemed, Cancelled,
            Paused, Resumed,
        ];
        for limit in [1, 2, 3, 100] {
            let events = block_on(read_all(&store, limit, now));
            let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
            assert_eq!(kinds, expected, "pages of {limit}");
            let mut ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), expected.len(), "pages of {limit}");
        }
        let events = block_on(read_all(&store, 100, now));
        let redeemed = &events[7];
        assert_eq!(redeemed.code.as_deref(), Some(code.as_str()));
        assert_eq!(redeemed.user_id.as_deref(), Some("bob"));
        assert_eq!(redeemed.order_id.as_deref(), Some("o2"));
        assert_eq!((redeemed.amount, redeemed.by), (Some(500), Actor::User));
        assert_eq!(redeemed.at, "2028-02-05T10:02:00+08:00");
        let cancelled = &events[8];
        assert_eq!(
            (cancelled.amount, cancelled.by),
            (Some(500), Actor::Operator)
        );
        assert_eq!(events[5].by, Actor::Checkout);
        assert_eq!(events[1].amount, Some(500));
        assert_eq!(events[2].by, Actor::Sweep);
        assert_eq!(events[9].reason.as_deref(), Some("drill"));
        // Nothing after the end, until something happens.
        let last = block_on(page(&store, &id(), None, 100, now)).expect("page");
        let after = block_on(page(&store, &id(), Some(&last.next_cursor), 100, now));
        let after = after.expect("page");
        assert!(after.events.is_empty() && !after.has_more);
        assert_eq!(after.next_cursor, last.next_cursor);
    }

    #[test]
    fn a_position_taken_but_unwritten_holds_its_log_until_its_writer_lapses() {
        let (store, _) = story();
        let now = ts("2028-02-07T00:00:00+08:00");
        let last = block_on(page(&store, &id(), None, 100, now)).expect("page");
        // A redemption of alice's February coupon takes a position of its
        // shard's ledger after one taken by a writer still in flight.
        let code = block_on(claim_at(&store, "carol", 4, "2028-02-06T12:00:00+08:00"));
        let shard = block_on(crate::ops::load_held(&store, &code, None))
            .expect("held")
            .shard();
        let ledger = CampaignKeys::new(&id()).redemptions(shard);
        block_on(store.increment(ledger.counter(), 1)).expect("in flight");
        let redemption = RedemptionRequest {
            code,
            order: order("o3"),
            user_id: None,
        };
        let carol = UserId("carol".into());
        block_on(redeem(&store, &carol, redemption, now)).expect("redeem");
        let kinds = |page: &EventPage| page.events.iter().map(|e| e.kind).collect::<Vec<_>>();
        let held = block_on(page(&store, &id(), Some(&last.next_cursor), 100, now));
        let held = held.expect("page");
        assert_eq!(kinds(&held), [EventKind::Claimed]);
        assert_eq!((held.waiting, held.has_more), (1, false));
        // A lease after it was first seen, its writer is dead: the log goes on.
        let later = now + LEASE;
        let next = block_on(page(&store, &id(), Some(&held.next_cursor), 100, later));
        assert_eq!(kinds(&next.expect("page")), [EventKind::Redeemed]);
    }

    #[test]
    fn a_cursor_reads_back_as_written_and_junk_is_refused() {
        let cursor = Cursor::parse(Some("r.0.0.17_m2028-02.0.4")).expect("cursor");
        assert_eq!(cursor.render(), "m2028-02.0.4_r.0.0.17");
        for junk in ["r", "r.x", ".1", "r.1_r.2", "r.-1", "r..1"] {
            let refused = Cursor::parse(Some(junk)).expect_err(junk);
            assert_eq!(refused.field(), Some("cursor"), "{junk}");
        }
        let (store, _) = story();
        let now = ts("2028-02-07T00:00:00+08:00");
        for foreign in [
            "zz.1",
            "r.99",
            "created.1.1",
            "m2028-02.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1",
        ] {
            let refused = block_on(page(&store, &id(), Some(foreign), 10, now));
            assert_eq!(refused.expect_err(foreign).field(), Some("cursor"));
        }
    }
}
