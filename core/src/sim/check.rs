//! The checker: what must hold after any run, asked of the store's records
//! and, where it can, of the API itself (so it knows the guarantees, not the
//! implementation).

use super::clients::{Ctx, Event, Scenario, sweep_to_end, with_retries};
use super::exec::{Call, Executor, World};
use crate::auth::{Caller, UserId};
use crate::campaign::CampaignId;
use crate::code::{CouponCode, RANDOM_BYTES};
use crate::coupon::{CouponRecord, CouponState, Ending};
use crate::error::Error;
use crate::ops::campaigns::{self, CampaignView};
use crate::ops::claim::{ClaimRequest, claim};
use crate::ops::coupons::Order;
use crate::ops::events::{self, EventKind};
use crate::ops::load_held;
use crate::ops::purge;
use crate::ops::reconcile::{self, Reconciliation};
use crate::ops::redeem::{RedemptionRequest, redeem};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

/// How long after the last client the checker waits before it asks: longer
/// than any lease, so recovery has had its chance.
const RECOVERY_WAIT_MS: i64 = 180_000;

/// Long enough that a lease first seen now has lapsed on every client's
/// clock, however skewed.
const LEASE_PASSED_MS: i64 =
    crate::lease::LEASE.as_millis() as i64 + 2 * super::MAX_SKEW_MS + 1_000;

pub fn recover_and_check(
    exec: &mut Executor,
    ctx: &Rc<Ctx>,
    scenario: &Scenario,
    violations: &mut Vec<String>,
) {
    let task = exec.next_task();
    let c = ctx.clone();
    exec.spawn(async move {
        c.store
            .sleep_until(c.store.now_ms() + RECOVERY_WAIT_MS)
            .await;
        sweep_to_end(&c, task).await;
    });
    if !exec.run(u64::MAX) {
        violations.push("recovery did not finish".into());
    }
    records(exec, ctx, scenario, violations);
    let task = exec.next_task();
    let (c, found) = (ctx.clone(), Rc::new(std::cell::RefCell::new(Vec::new())));
    let out = found.clone();
    let coupons = coupons_in(exec);
    let users: Vec<(usize, String)> = scenario
        .claims
        .iter()
        .map(|(c, u, _)| (*c, u.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    exec.spawn(async move {
        let problems = probe(&c, task, &coupons, &users).await;
        out.borrow_mut().extend(problems);
    });
    if !exec.run(u64::MAX) {
        violations.push("probes did not finish".into());
    }
    violations.extend(found.borrow().iter().cloned());
}

/// Every coupon record in the store, by code.
fn coupons_in(exec: &Executor) -> BTreeMap<String, CouponRecord> {
    stored_coupons(&exec.store)
}

fn stored_coupons(store: &super::exec::SimStore) -> BTreeMap<String, CouponRecord> {
    let world = store.0.borrow();
    world
        .map
        .iter()
        .filter(|(k, _)| k.starts_with("k:") && k.matches(':').count() == 1)
        .filter_map(|(k, v)| Some((k[2..].to_owned(), serde_json::from_slice(v).ok()?)))
        .collect()
}

/// The invariants read off the records and the clients' answers.
fn records(exec: &Executor, ctx: &Ctx, scenario: &Scenario, violations: &mut Vec<String>) {
    let coupons = coupons_in(exec);
    let world = exec.store.0.borrow();
    for campaign in &scenario.campaigns {
        let held: Vec<&CouponRecord> = coupons
            .values()
            .filter(|r| r.campaign_id == campaign.id)
            .collect();
        let count = held.len() as i64;
        let capacity = capacity_bound(scenario, &events_of(ctx), campaign);
        if count > capacity {
            violations.push(format!(
                "{}: {count} coupons issued over a capacity of {capacity} (stock {}, budget {:?})",
                campaign.id,
                campaign.stock,
                campaign.budget.map(|b| b.minor())
            ));
        }
        let mut per_user: BTreeMap<&str, u32> = BTreeMap::new();
        for r in &held {
            *per_user.entry(&r.user_id).or_default() += 1;
        }
        for (user, n) in per_user {
            if n > campaign.per_user_limit {
                violations.push(format!(
                    "{}: {user} holds {n} coupons over the limit of {}",
                    campaign.id, campaign.per_user_limit
                ));
            }
        }
    }
    // Each generation's ending is written once.
    let mut endings: BTreeMap<&str, BTreeSet<&[u8]>> = BTreeMap::new();
    for applied in &world.applied {
        if let Call::Set(entries) = &applied.call {
            for (k, v) in entries {
                if k.starts_with("k:") && k.contains(":end:") {
                    endings.entry(k).or_default().insert(v);
                }
            }
        }
    }
    for (key, values) in &endings {
        if values.len() > 1 {
            violations.push(format!("{key} was written {} ways", values.len()));
        }
    }
    let ended_by = |code: &str, order: &str| {
        world.map.iter().any(|(k, v)| {
            k.starts_with(&format!("k:{code}:end:"))
                && matches!(serde_json::from_slice(v), Ok(Ending::Redeemed(r)) if r.order_id == order)
        })
    };
    let events = ctx.events.borrow();
    let mut cancelled: BTreeSet<(String, String)> = BTreeSet::new();
    for event in events.iter() {
        match event {
            Event::Claimed {
                campaign,
                user,
                code,
                ..
            } => match coupons.get(code) {
                Some(r) if r.user_id == *user && r.campaign_id == *campaign => {}
                _ => violations.push(format!("claim answered 201 with {code}, not in the store")),
            },
            Event::Redeemed {
                code,
                order,
                replayed,
                ..
            } => {
                if !ended_by(code, order) {
                    violations.push(format!(
                        "redemption of {code} by {order} answered, not stored"
                    ));
                }
                if !replayed && cancelled.contains(&(code.clone(), order.clone())) {
                    violations.push(format!(
                        "{code}: order {order}'s redemption was cancelled, and a retry consumed the coupon again"
                    ));
                }
            }
            Event::Cancelled { code, order } => {
                cancelled.insert((code.clone(), order.clone()));
            }
            _ => {}
        }
    }
    check_freezes(&world, &events, violations);
    // Once a pause has answered, no claim takes stock until a resume starts.
    for event in events.iter() {
        let Event::Claimed {
            task,
            campaign,
            replayed: false,
            steps: (from, to),
            code,
            ..
        } = event
        else {
            continue;
        };
        let Some(took) = last_increment(&world, *task, (*from, *to), ":claimed:") else {
            continue;
        };
        for close in events.iter() {
            if let Event::CloseAnswered { campaign: c, step } = close
                && c == campaign
                && *step < took
            {
                violations.push(format!(
                    "{code}: claimed from stock at step {took}, after a close answered at step {step}"
                ));
            }
        }
        for pause in events.iter() {
            let Event::PauseAnswered { campaign: c, step } = pause else {
                continue;
            };
            if c == campaign && *step < took && !resume_started(&events, c, took) {
                violations.push(format!(
                    "{code}: claimed from stock at step {took}, after a pause answered at step {step}"
                ));
            }
        }
    }
}

/// The coupons `campaign` may issue in all: as created, or what the change
/// of its stock answered (claims racing it may have taken more by then, and
/// no change follows); a change that never answered may have moved it
/// anywhere between the two.
fn capacity_bound(
    scenario: &Scenario,
    events: &[Event],
    campaign: &crate::campaign::Campaign,
) -> i64 {
    let created = campaign.capacity() as i64;
    let answered = answered_capacity(events, &campaign.id);
    let asked = scenario.limiters.iter().find_map(|&(c, stock)| {
        (scenario.campaigns[c].id == campaign.id).then(|| {
            let mut changed = campaign.clone();
            changed.stock = stock;
            changed.capacity() as i64
        })
    });
    match (answered, asked) {
        (Some(answered), _) => answered,
        (None, Some(asked)) => created.max(asked),
        (None, None) => created,
    }
}

/// The capacity the change of `campaign`'s stock answered, if one did.
fn answered_capacity(events: &[Event], campaign: &CampaignId) -> Option<i64> {
    events.iter().find_map(|e| match e {
        Event::LimitsAnswered {
            campaign: c,
            capacity,
        } if c == campaign => Some(*capacity),
        _ => None,
    })
}

fn events_of(ctx: &Ctx) -> Vec<Event> {
    ctx.events.borrow().clone()
}

/// Whether a resume of `campaign` started before step `until` (it may have
/// taken effect after a pause that answered before it).
fn resume_started(events: &[Event], campaign: &CampaignId, until: u64) -> bool {
    events.iter().any(
        |e| matches!(e, Event::ResumeStarted { campaign: c, step } if c == campaign && *step <= until),
    )
}

/// The step of `task`'s last `+1` to a key containing `needle` within
/// `steps`: where an answered attempt took its stock or ledger position.
fn last_increment(world: &World, task: usize, (from, to): (u64, u64), needle: &str) -> Option<u64> {
    world
        .applied
        .iter()
        .filter(|a| a.task == task && a.step > from && a.step <= to)
        .filter_map(|a| match &a.call {
            Call::Increment(k, 1) if k.contains(needle) => Some(a.step),
            _ => None,
        })
        .next_back()
}

/// Once a freeze has answered, no redemption is counted (its ledger
/// increment) until an unfreeze starts.
fn check_freezes(world: &World, events: &[Event], violations: &mut Vec<String>) {
    let campaign_of: BTreeMap<&str, &CampaignId> = events
        .iter()
        .filter_map(|e| match e {
            Event::Claimed { code, campaign, .. } => Some((code.as_str(), campaign)),
            _ => None,
        })
        .collect();
    for event in events {
        let Event::Redeemed {
            task,
            code,
            replayed: false,
            steps: (from, to),
            ..
        } = event
        else {
            continue;
        };
        let took = last_increment(world, *task, (*from, *to), ":redemptions:");
        let (Some(took), Some(campaign)) = (took, campaign_of.get(code.as_str())) else {
            continue;
        };
        let unfrozen = events.iter().any(|e| {
            matches!(e, Event::UnfreezeStarted { campaign: c, step } if c == *campaign && *step <= took)
        });
        for freeze in events {
            if let Event::FreezeAnswered { campaign: c, step } = freeze
                && c == *campaign
                && *step < took
                && !unfrozen
            {
                violations.push(format!(
                    "{code}: redeemed at step {took}, after a freeze answered at step {step}"
                ));
            }
        }
    }
}

fn probe_user(name: &str) -> UserId {
    UserId(name.to_owned())
}

/// A fresh code whose stock shard is `shard` of `shards`.
fn code_in_shard(ctx: &Ctx, shard: u32, shards: u32) -> CouponCode {
    loop {
        let mut bytes = [0u8; RANDOM_BYTES];
        for b in &mut bytes {
            *b = ctx.rng.borrow_mut().below(256) as u8;
        }
        let code = CouponCode::from_random(bytes);
        if code.shard(shards) == shard {
            return code;
        }
    }
}

/// The invariants asked of the API after recovery, without faults.
async fn probe(
    ctx: &Ctx,
    task: usize,
    coupons: &BTreeMap<String, CouponRecord>,
    users: &[(usize, String)],
) -> Vec<String> {
    let mut problems = Vec::new();
    let now = ctx.now(task);
    let mut views: Vec<CampaignView> = Vec::new();
    for campaign in &ctx.campaigns {
        match campaigns::get(&ctx.store, &campaign.id).await {
            Ok(view) => views.push(view),
            Err(e) => {
                problems.push(format!("{}: get answered {}", campaign.id, e.code()));
                return problems;
            }
        }
    }
    if let Some(late) = &ctx.late_campaign
        && campaigns::get(&ctx.store, &late.id).await.is_err()
    {
        problems.push(format!(
            "{}: created under faults, yet not readable",
            late.id
        ));
    }
    // Each user's wallet lists exactly the coupons they hold, once each.
    let holders: BTreeSet<&str> = users.iter().map(|(_, u)| u.as_str()).collect();
    for user in holders {
        let mut listed = Vec::new();
        let mut before = None;
        loop {
            let id = UserId(user.to_owned());
            match crate::ops::coupons::list(&ctx.store, &id, None, 7, before, now).await {
                Ok(page) => {
                    listed.extend(page.coupons.into_iter().map(|c| c.code));
                    match page.next.map(|n| n.parse::<i64>()) {
                        Some(Ok(n)) => before = Some(n),
                        Some(Err(_)) => {
                            problems.push(format!("{user}'s wallet answered a bad cursor"));
                            break;
                        }
                        None => break,
                    }
                }
                Err(e) => {
                    problems.push(format!("{user}'s wallet answered {}", e.code()));
                    break;
                }
            }
        }
        let held: Vec<&String> = coupons
            .iter()
            .filter(|(_, r)| r.user_id == user)
            .map(|(code, _)| code)
            .collect();
        let mut sorted: Vec<&String> = listed.iter().collect();
        sorted.sort();
        if sorted != held {
            problems.push(format!(
                "{user}'s wallet lists {listed:?}, they hold {held:?}"
            ));
        }
    }
    let mut unredeemed = Vec::new();
    // What each order holds: its coupons by campaign, and their discounts.
    let mut orders: BTreeMap<(String, String), (BTreeMap<String, u32>, i64)> = BTreeMap::new();
    for (code, record) in coupons {
        match load_held(&ctx.store, code, None).await {
            Ok(held) => match held.state(now) {
                CouponState::Redeemed => {
                    if let Some(Ending::Redeemed(r)) = &held.ending {
                        let order = (record.user_id.clone(), r.order_id.clone());
                        let (campaigns, discount) = orders.entry(order).or_default();
                        *campaigns.entry(held.campaign.id.to_string()).or_default() += 1;
                        *discount += r.discount_amount.minor();
                    }
                }
                CouponState::Issued => unredeemed.push((code, record)),
                CouponState::Expired => {
                    if held.ending.is_none() {
                        problems.push(format!(
                            "{code} is past its expiry and the sweep did not record it"
                        ));
                    }
                }
            },
            Err(e) => problems.push(format!("{code}: load answered {}", e.code())),
        }
    }
    for (campaign, view) in ctx.campaigns.iter().zip(&views) {
        if view.paused && !view.closed {
            problems.push(format!(
                "{}: paused after every operator's last call was a resume",
                campaign.id
            ));
        }
        if view.frozen {
            problems.push(format!(
                "{}: frozen after every operator's last call was an unfreeze",
                campaign.id
            ));
        }
    }
    for ((user, order), (campaigns, discount)) in &orders {
        let amount = order
            .strip_prefix('o')
            .and_then(|n| n.parse::<i64>().ok())
            .map(|n| super::clients::order(n).amount.minor());
        if amount.is_some_and(|amount| *discount > amount) {
            problems.push(format!(
                "{user}'s order {order}: {discount} off an order of {amount:?}"
            ));
        }
        for (id, n) in campaigns {
            let allowed = ctx
                .campaigns
                .iter()
                .find(|c| c.id.as_str() == id)
                .map_or(1, |c| c.coupons_per_order);
            if *n > allowed {
                problems.push(format!(
                    "{user}'s order {order} holds {n} coupons of {id}, over {allowed}"
                ));
            }
        }
    }
    // Every issued coupon redeems (no lock is left behind).
    for (code, record) in unredeemed {
        let request = RedemptionRequest {
            code: code.clone(),
            order: Order {
                id: Some(format!("probe-{code}")),
                amount: crate::money::Amount::new(3_000).expect("amount"),
                currency: crate::money::Currency::parse("CNY").expect("currency"),
                categories: vec![],
                lines: vec![],
            },
            user_id: Some(record.user_id.clone()),
        };
        // A lock whose owner died is first seen now: it lapses a lease later.
        let mut answer = Err(Error::RequestInProgress);
        for wait in [0, LEASE_PASSED_MS] {
            ctx.store.sleep_until(ctx.store.now_ms() + wait).await;
            let at = ctx.now(task);
            answer = redeem(&ctx.store, Caller::Checkout, request.clone(), at).await;
            if !matches!(answer, Err(Error::RequestInProgress)) {
                break;
            }
        }
        if let Err(e) = answer {
            problems.push(format!(
                "{code}: issued, yet a redemption answered {}",
                e.code()
            ));
        }
    }
    // Every unit and per-user slot not used was given back: a user below
    // the limit claims while capacity is left; once it is gone, sold out.
    let mut probed: BTreeMap<usize, i64> = BTreeMap::new();
    for (c, user) in users {
        let campaign = &ctx.campaigns[*c];
        let holds = coupons
            .values()
            .filter(|r| r.campaign_id == campaign.id && r.user_id == *user)
            .count() as u32;
        if holds >= campaign.per_user_limit {
            continue;
        }
        let issued = coupons
            .values()
            .filter(|r| r.campaign_id == campaign.id)
            .count() as i64;
        // A change of stock that never answered may have left any capacity
        // between the old and the new: either answer is right.
        let events = events_of(ctx);
        let answered = answered_capacity(&events, &campaign.id);
        let started = events
            .iter()
            .any(|e| matches!(e, Event::LimitsStarted { campaign: id } if *id == campaign.id));
        let capacity = match (answered, started) {
            (Some(answered), _) => Some(answered),
            (None, true) => None,
            (None, false) => Some(campaign.capacity() as i64),
        };
        let left = capacity.map(|capacity| capacity - issued - probed.get(c).copied().unwrap_or(0));
        let expected_issue = left.is_none_or(|left| left > 0);
        let mut answer = probe_claim(ctx, task, campaign, user, "probe").await;
        // A unit lost by a claim that died shows as sold out until the
        // sweep's recount gives it back (its fence goes up once a claim found
        // the stock full): what the user sees is a later claim succeeding.
        if expected_issue && matches!(answer, Err(Error::SoldOut)) {
            sweep_through_a_recount(ctx, task).await;
            answer = probe_claim(ctx, task, campaign, user, "probe-again").await;
        }
        if answer.is_ok() {
            *probed.entry(*c).or_default() += 1;
        }
        match (&answer, expected_issue) {
            (Ok(_), true) | (Err(Error::SoldOut), false) => {}
            (Err(Error::SoldOut), true) if left.is_none() => {}
            (Err(Error::CampaignNotActive), _) => {}
            _ => problems.push(format!(
                "{}: {user} holds {holds} of {}, {left:?} left, and a claim answered {}",
                campaign.id,
                campaign.per_user_limit,
                answer.as_ref().map_or_else(|e| e.code(), |_| "201")
            )),
        }
    }
    // Once the claim window has closed and a recount has run, the stats
    // equal the coupons.
    let closed = ctx.campaigns.iter().map(|c| c.claim_ends_at).max();
    if let Some(closed) = closed {
        let ms = closed.as_millisecond() + crate::lease::MAX_SKEW.as_millis() as i64;
        ctx.store.sleep_until(ms.max(ctx.store.now_ms())).await;
    }
    sweep_through_a_recount(ctx, task).await;
    let now = ctx.now(task);
    let coupons = stored_coupons(&ctx.store);
    for campaign in &ctx.campaigns {
        let view = match campaigns::get(&ctx.store, &campaign.id).await {
            Ok(view) => view,
            Err(e) => {
                problems.push(format!("{}: get answered {}", campaign.id, e.code()));
                continue;
            }
        };
        let (mut issued, mut redeemed, mut given) = (0, 0, 0);
        for (code, _) in coupons.iter().filter(|(_, r)| r.campaign_id == campaign.id) {
            issued += 1;
            if let Ok(held) = load_held(&ctx.store, code, None).await
                && held.state(now) == CouponState::Redeemed
            {
                redeemed += 1;
                if let Some(Ending::Redeemed(r)) = &held.ending {
                    given += r.discount_amount.minor();
                }
            }
        }
        let stats = &view.stats;
        if stats.claimed != issued {
            problems.push(format!(
                "{}: stats.claimed {} but {issued} coupons stored",
                campaign.id, stats.claimed
            ));
        }
        if (stats.discount_given, stats.discount_unsettled) != (given, 0) {
            problems.push(format!(
                "{}: stats.discount_given {} ({} unsettled) but {given} given by the coupons redeemed",
                campaign.id, stats.discount_given, stats.discount_unsettled
            ));
        }
        if stats.redeemed != redeemed {
            problems.push(format!(
                "{}: stats.redeemed {} but {redeemed} coupons redeemed",
                campaign.id, stats.redeemed
            ));
        }
        problems.extend(reconciles(ctx, task, &campaign.id).await);
        problems.extend(events_match(ctx, task, &campaign.id, issued, redeemed).await);
    }
    problems
}

/// Once settled, the campaign's ledger adds up to its stats.
async fn reconciles(ctx: &Ctx, task: usize, id: &CampaignId) -> Option<String> {
    let mut cursor = None;
    loop {
        match reconcile::reconcile(&ctx.store, id, cursor.as_deref(), ctx.now(task)).await {
            Ok(Reconciliation::Counting { cursor: next }) => cursor = Some(next),
            Ok(Reconciliation::Done(report)) if report.differences.is_empty() => return None,
            Ok(Reconciliation::Done(report)) => {
                return Some(format!("{id}: the ledger does not reconcile: {report:?}"));
            }
            Err(e) => return Some(format!("{id}: reconcile answered {}", e.code())),
        }
    }
}

/// Read page by page to the end, the campaign's events hold each claim and
/// redemption once (positions whose writer died are passed a lease after
/// they are first seen).
async fn events_match(
    ctx: &Ctx,
    task: usize,
    id: &CampaignId,
    issued: i64,
    redeemed: i64,
) -> Vec<String> {
    let mut problems = Vec::new();
    let (mut cursor, mut ids) = (None::<String>, BTreeSet::new());
    let mut kinds: BTreeMap<EventKind, i64> = BTreeMap::new();
    // Each look at an unwritten position starts its lease; a page looks
    // at a few, so many may take a few leases.
    let mut waits = 0;
    loop {
        let page = match events::page(&ctx.store, id, cursor.as_deref(), 7, ctx.now(task)).await {
            Ok(page) => page,
            Err(e) => {
                problems.push(format!("{id}: events answered {}", e.code()));
                return problems;
            }
        };
        for event in &page.events {
            *kinds.entry(event.kind).or_default() += 1;
            if !ids.insert(event.id.clone()) {
                problems.push(format!("{id}: event {} read twice", event.id));
            }
        }
        cursor = Some(page.next_cursor);
        match (page.has_more, page.waiting) {
            (true, _) => {}
            (false, 0) => break,
            (false, _) if waits < 8 => {
                waits += 1;
                ctx.store
                    .sleep_until(ctx.store.now_ms() + LEASE_PASSED_MS)
                    .await;
            }
            (false, n) => {
                problems.push(format!("{id}: {n} event positions wait after a lease"));
                break;
            }
        }
    }
    let of = |kind| kinds.get(&kind).copied().unwrap_or(0);
    if of(EventKind::Claimed) != issued {
        problems.push(format!(
            "{id}: {} claimed events but {issued} coupons stored",
            of(EventKind::Claimed)
        ));
    }
    if of(EventKind::Redeemed) - of(EventKind::Cancelled) != redeemed {
        problems.push(format!(
            "{id}: {} redeemed and {} cancelled events but {redeemed} coupons redeemed",
            of(EventKind::Redeemed),
            of(EventKind::Cancelled)
        ));
    }
    problems
}

/// One claim of the probe's, retried as the README says: a position left
/// empty by a claim that died is first seen now, and adopted a lease later.
async fn probe_claim(
    ctx: &Ctx,
    task: usize,
    campaign: &crate::campaign::Campaign,
    user: &str,
    key: &str,
) -> crate::error::Result<crate::ops::claim::Claimed> {
    let mut answer = Err(Error::RequestInProgress);
    for wait in [0, LEASE_PASSED_MS] {
        ctx.store.sleep_until(ctx.store.now_ms() + wait).await;
        answer = claim(
            &ctx.store,
            &probe_user(user),
            &format!("{key}-{}", campaign.id),
            ClaimRequest {
                campaign_id: campaign.id.clone(),
            },
            ctx.now(task).min(campaign.claim_ends_at),
            code_in_shard(ctx, 0, 1),
        )
        .await;
        if !matches!(answer, Err(Error::RequestInProgress)) {
            break;
        }
    }
    answer
}

/// The sweep as an operator's schedule runs it, over one recount: the fence
/// goes up, a lease later the units go back, a lease later it comes down.
async fn sweep_through_a_recount(ctx: &Ctx, task: usize) {
    for _ in 0..4 {
        sweep_to_end(ctx, task).await;
        let later = ctx.store.now_ms() + LEASE_PASSED_MS;
        ctx.store.sleep_until(later).await;
    }
}

/// Long after, every campaign is exported and purged, under the clients'
/// faults; then nothing of it may be left but what stays by design (the
/// tombstone, the seal, the creation lease, and positions taken by claims
/// that died before writing a coupon), and no coupon at all.
pub fn purge_and_check(
    exec: &mut Executor,
    ctx: &Rc<Ctx>,
    scenario: &Scenario,
    violations: &mut Vec<String>,
) {
    let task = exec.next_task();
    let (c, found) = (ctx.clone(), Rc::new(std::cell::RefCell::new(Vec::new())));
    let out = found.clone();
    let ids: Vec<CampaignId> = scenario.campaigns.iter().map(|c| c.id.clone()).collect();
    exec.spawn(async move {
        let purge_at = crate::time::parse(PURGE_AT).expect("an instant");
        c.store.sleep_until(purge_at.as_millisecond()).await;
        sweep_to_end(&c, task).await;
        sweep_to_end(&c, task).await;
        for id in &ids {
            let problem = purged(&c, task, id).await;
            out.borrow_mut().extend(problem);
        }
    });
    if !exec.run(u64::MAX) {
        violations.push("the purges did not finish".into());
    }
    violations.extend(found.borrow().iter().cloned());
    let world = exec.store.0.borrow();
    for campaign in &scenario.campaigns {
        let prefix = format!("c:{}:", campaign.id);
        let kept = ["owner", "purge", "purge:since", "purged"].map(|k| format!("{prefix}{k}"));
        let positions = format!("{prefix}positions:");
        let left: Vec<&String> = world
            .map
            .keys()
            .filter(|k| k.starts_with(&prefix) && !kept.contains(k) && !k.starts_with(&positions))
            .collect();
        if !left.is_empty() {
            violations.push(format!("{}: the purge left {left:?}", campaign.id));
        }
    }
    let coupons: Vec<&String> = world.map.keys().filter(|k| k.starts_with("k:")).collect();
    if !coupons.is_empty() {
        violations.push(format!("the purges left coupon keys {coupons:?}"));
    }
}

/// Past every campaign's retention (its coupons end by April 2028, kept 90 days).
const PURGE_AT: &str = "2029-01-01T00:00:00+08:00";

/// Exports campaign `id`'s events to their end, then purges it call by call.
async fn purged(ctx: &Ctx, task: usize, id: &CampaignId) -> Option<String> {
    let mut exported = None::<String>;
    for _ in 0..64 {
        let answer = with_retries(ctx, task, "export", |now| {
            events::page(&ctx.store, id, exported.as_deref(), 50, now)
        })
        .await;
        let page = match answer {
            Some((Ok(page), _)) => page,
            Some((Err(e), _)) => return Some(format!("{id}: the export answered {}", e.code())),
            None => return Some(format!("{id}: the export got no answer")),
        };
        exported = Some(page.next_cursor);
        match (page.has_more, page.waiting) {
            (true, _) => {}
            (false, 0) => break,
            (false, _) => {
                ctx.store
                    .sleep_until(ctx.store.now_ms() + LEASE_PASSED_MS)
                    .await
            }
        }
    }
    let mut cursor = None::<String>;
    for _ in 0..64 {
        let answer = with_retries(ctx, task, "purge", |now| {
            let request = purge::PurgeRequest {
                exported_through: exported.clone(),
                cursor: cursor.clone(),
                changed_by: Some("sim".into()),
                reason: None,
            };
            purge::purge(&ctx.store, id, request, now)
        })
        .await;
        let done = match answer {
            Some((Ok(done), _)) => done,
            Some((Err(e), _)) => return Some(format!("{id}: the purge answered {e}")),
            None => return Some(format!("{id}: the purge got no answer")),
        };
        match done.state {
            purge::State::Sealing => {
                let wait = i64::from(done.retry_after_seconds.unwrap_or(1)) * 1_000 + 1_000;
                ctx.store.sleep_until(ctx.store.now_ms() + wait).await;
            }
            purge::State::Purging => cursor = done.next_cursor,
            purge::State::Purged => return None,
        }
    }
    Some(format!("{id}: the purge did not end in 64 calls"))
}
