//! The simulated clients: each a task that calls one operation after another
//! and retries as the README tells it to.

use super::exec::{Crashed, Executor, Rng, SimStore, World};
use crate::auth::{Caller, UserId};
use crate::campaign::{Campaign, CampaignId};
use crate::code::{CouponCode, RANDOM_BYTES};
use crate::error::Error;
use crate::expiry::{ExpiryRule, YearMonth};
use crate::money::{Amount, Currency};
use crate::ops::claim::{ClaimRequest, claim};
use crate::ops::coupons::{Order, ValidationRequest, validate};
use crate::ops::dating::{RedatingRequest, redate};
use crate::ops::expire::{ExpirationRequest, sweep};
use crate::ops::holds::{HoldRequest, hold, release};
use crate::ops::ledger::Actor;
use crate::ops::redeem::{RedemptionRequest, cancel, redeem};
use crate::ops::{campaigns, claim::Claimed};
use jiff::Timestamp;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// Attempts a client makes before it calls the operation stuck: with its
/// backoff (up to 8 s) that is minutes, longer than any lease.
const MAX_ATTEMPTS: u32 = 60;

/// What a run is made of, drawn from the seed.
pub struct Scenario {
    pub campaigns: Vec<Campaign>,
    /// (campaign index, user, idempotency key)
    pub claims: Vec<(usize, String, String)>,
    /// Operators per campaign, each one pause then one resume.
    pub operators: Vec<usize>,
    /// Operators per campaign, each one freeze then one unfreeze.
    pub freezers: Vec<usize>,
    /// Campaigns an operator closes mid-sale.
    pub closers: Vec<usize>,
    /// Campaigns whose stock an operator changes mid-sale, and to what: at
    /// most one change per campaign.
    pub limiters: Vec<(usize, u64)>,
    pub redatings: Vec<usize>,
    /// A campaign two operators create at once, under faults.
    pub late_campaign: Option<Campaign>,
    pub fault_steps: u64,
}

impl Scenario {
    pub fn draw(rng: &mut Rng) -> Scenario {
        let mut campaigns = Vec::new();
        for i in 0..rng.range(1, 2) {
            let stock = rng.range(1, 6);
            let budget = rng.chance(300).then(|| 500 * rng.range(1, stock));
            let json = serde_json::json!({
                "id": format!("c{i}"), "name": "Simulated", "currency": "CNY",
                "discount": {"kind": "fixed", "amount": 500},
                "min_order_amount": 1000, "stock": stock,
                "per_user_limit": rng.range(1, 3), "shards": rng.range(1, 3),
                "coupons_per_order": rng.range(1, 3),
                "hold_seconds": rng.chance(500).then_some(60),
                "budget": budget,
                "claim_starts_at": "2028-02-01T00:00:00+08:00",
                "claim_ends_at": "2028-03-10T00:00:00+08:00",
                "time_zone": "Asia/Shanghai", "expiry": {"kind": "end_of_claim_month"}
            });
            campaigns.push(
                crate::api::parse_json::<Campaign>(json.to_string().as_bytes())
                    .expect("a valid campaign"),
            );
        }
        let mut claims = Vec::new();
        for (c, _) in campaigns.iter().enumerate() {
            for u in 0..rng.range(2, 5) {
                for k in 0..rng.range(1, 3) {
                    claims.push((c, format!("u{u}"), format!("key-{c}-{u}-{k}")));
                }
            }
        }
        let operators = (0..campaigns.len())
            .flat_map(|c| std::iter::repeat_n(c, rng.range(0, 3) as usize))
            .collect();
        let redatings = (0..campaigns.len()).filter(|_| rng.chance(250)).collect();
        let late_campaign = rng.chance(500).then(|| {
            let mut late = campaigns[0].clone();
            late.id = CampaignId::parse("late").expect("id");
            late
        });
        let fault_steps = rng.range(50, 400) as u64;
        let freezers = (0..campaigns.len())
            .flat_map(|c| std::iter::repeat_n(c, rng.range(0, 2) as usize))
            .collect();
        let closers = (0..campaigns.len()).filter(|_| rng.chance(150)).collect();
        let mut limiters = Vec::new();
        for c in 0..campaigns.len() {
            if rng.chance(300) {
                limiters.push((c, rng.range(1, 8) as u64));
            }
        }
        Scenario {
            campaigns,
            claims,
            operators,
            freezers,
            closers,
            limiters,
            redatings,
            late_campaign,
            fault_steps,
        }
    }
}

/// What clients were answered, for the checker.
#[derive(Debug, Clone)]
pub enum Event {
    Claimed {
        task: usize,
        campaign: CampaignId,
        user: String,
        code: String,
        replayed: bool,
        /// Store steps the answering attempt ran between.
        steps: (u64, u64),
    },
    Redeemed {
        task: usize,
        code: String,
        order: String,
        replayed: bool,
        /// Store steps the answering attempt ran between.
        steps: (u64, u64),
    },
    Cancelled {
        code: String,
        order: String,
    },
    PauseAnswered {
        campaign: CampaignId,
        step: u64,
    },
    ResumeStarted {
        campaign: CampaignId,
        step: u64,
    },
    FreezeAnswered {
        campaign: CampaignId,
        step: u64,
    },
    CloseAnswered {
        campaign: CampaignId,
        step: u64,
    },
    /// A change of stock started.
    LimitsStarted {
        campaign: CampaignId,
    },
    /// A change of stock answered, with the capacity it answered.
    LimitsAnswered {
        campaign: CampaignId,
        capacity: i64,
    },
    UnfreezeStarted {
        campaign: CampaignId,
        step: u64,
    },
}

/// Shared by every client of a run.
pub struct Ctx {
    pub store: SimStore,
    pub rng: RefCell<Rng>,
    skews: RefCell<BTreeMap<usize, i64>>,
    pub events: RefCell<Vec<Event>>,
    pub stuck: RefCell<Vec<String>>,
    /// Coupons a holder checks out while a rival order wants them too.
    contested: RefCell<Vec<(UserId, String)>>,
    pub trace: RefCell<Vec<String>>,
    pub campaigns: Vec<Campaign>,
    pub late_campaign: Option<Campaign>,
}

impl Ctx {
    pub fn new(exec: &Executor, seed: u64, scenario: &Scenario) -> Rc<Ctx> {
        Rc::new(Ctx {
            store: exec.store.clone(),
            rng: RefCell::new(Rng::new(seed.rotate_left(32) ^ 0xC0FFEE)),
            skews: RefCell::default(),
            events: RefCell::default(),
            stuck: RefCell::default(),
            contested: RefCell::default(),
            trace: RefCell::default(),
            campaigns: scenario.campaigns.clone(),
            late_campaign: scenario.late_campaign.clone(),
        })
    }

    fn world(&self) -> Rc<RefCell<World>> {
        self.store.0.clone()
    }

    pub fn step(&self) -> u64 {
        self.store.0.borrow().step
    }

    /// The task's clock: the virtual time plus its host's skew.
    pub fn now(&self, task: usize) -> Timestamp {
        let skew = *self.skews.borrow_mut().entry(task).or_insert_with(|| {
            self.rng
                .borrow_mut()
                .range(-super::MAX_SKEW_MS, super::MAX_SKEW_MS)
        });
        Timestamp::from_millisecond(self.store.now_ms() + skew).expect("a time in range")
    }

    fn code(&self) -> CouponCode {
        let mut bytes = [0u8; RANDOM_BYTES];
        for b in &mut bytes {
            *b = self.rng.borrow_mut().below(256) as u8;
        }
        CouponCode::from_random(bytes)
    }

    fn note(&self, task: usize, line: String) {
        let step = self.step();
        self.trace
            .borrow_mut()
            .push(format!("[{step:>6}] t{task}: {line}"));
    }

    /// Sleeps `ms` of virtual time, with jitter.
    async fn sleep(&self, ms: i64) {
        let jitter = self.rng.borrow_mut().range(0, ms / 2 + 1);
        self.store
            .sleep_until(self.store.now_ms() + ms + jitter)
            .await;
    }

    /// Sleeps a random time between `from` and `to` ms.
    async fn sleep_between(&self, from: i64, to: i64) {
        let ms = self.rng.borrow_mut().range(from, to);
        self.sleep(ms).await;
    }

    async fn backoff(&self, attempt: u32) {
        self.sleep((250i64 << attempt.min(5)).min(8_000)).await;
    }
}

/// Answers a client retries, as the README says: the store failed, the
/// same request is in progress, a brake is on, the rate ceiling.
fn retryable(e: &Error) -> bool {
    matches!(
        e,
        Error::StoreUnavailable(_)
            | Error::RequestInProgress
            | Error::CampaignPaused
            | Error::RedemptionsFrozen
            | Error::RateLimited
            | Error::CouponHeld { .. }
    )
}

/// Runs `op` with retries; `Some(answer)` once it is definitive.
pub(super) async fn with_retries<T, F, Fut>(
    ctx: &Ctx,
    task: usize,
    what: &str,
    mut op: F,
) -> Option<(Result<T, Error>, (u64, u64))>
where
    F: FnMut(Timestamp) -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    for attempt in 0..MAX_ATTEMPTS {
        let start = ctx.step();
        let answer = Executor::crashable(&ctx.world(), task, op(ctx.now(task))).await;
        let steps = (start, ctx.step());
        match answer {
            Err(Crashed) => ctx.note(task, format!("{what}: crashed")),
            Ok(Err(e)) if retryable(&e) => ctx.note(task, format!("{what}: {}", e.code())),
            Ok(Err(Error::Internal(detail))) => {
                ctx.stuck
                    .borrow_mut()
                    .push(format!("t{task} {what}: internal error: {detail}"));
                return None;
            }
            Ok(answer) => {
                ctx.note(
                    task,
                    format!(
                        "{what}: {}",
                        answer.as_ref().map_or_else(|e| e.code(), |_| "ok")
                    ),
                );
                return Some((answer, steps));
            }
        }
        ctx.backoff(attempt).await;
    }
    ctx.stuck.borrow_mut().push(format!(
        "t{task} {what}: no definitive answer after {MAX_ATTEMPTS} attempts"
    ));
    None
}

/// Creates the campaigns, without faults.
pub fn setup(exec: &mut Executor, ctx: &Rc<Ctx>) {
    for campaign in ctx.campaigns.clone() {
        let store = ctx.store.clone();
        exec.spawn(async move {
            let now = Timestamp::from_millisecond(store.now_ms()).expect("a time");
            campaigns::create(&store, campaign, now)
                .await
                .expect("setup");
        });
    }
    assert!(exec.run(u64::MAX), "setup finishes");
}

pub fn spawn_all(exec: &mut Executor, ctx: &Rc<Ctx>, scenario: &Scenario) {
    for (c, user, key) in scenario.claims.clone() {
        let (task, ctx) = (exec.next_task(), ctx.clone());
        exec.spawn(async move { claimer(&ctx, task, c, user, key).await });
    }
    for &c in &scenario.operators {
        let (task, ctx) = (exec.next_task(), ctx.clone());
        exec.spawn(async move { operator(&ctx, task, c).await });
    }
    for &c in &scenario.freezers {
        let (task, ctx) = (exec.next_task(), ctx.clone());
        exec.spawn(async move { freezer(&ctx, task, c).await });
    }
    for &c in &scenario.closers {
        let (task, ctx) = (exec.next_task(), ctx.clone());
        exec.spawn(async move { closer(&ctx, task, c).await });
    }
    for &(c, stock) in &scenario.limiters {
        let (task, ctx) = (exec.next_task(), ctx.clone());
        exec.spawn(async move { limiter(&ctx, task, c, stock).await });
    }
    for &c in &scenario.redatings {
        let (task, ctx) = (exec.next_task(), ctx.clone());
        exec.spawn(async move { redater(&ctx, task, c).await });
    }
    if let Some(campaign) = &scenario.late_campaign {
        for _ in 0..2 {
            let (task, ctx, campaign) = (exec.next_task(), ctx.clone(), campaign.clone());
            exec.spawn(async move { creator(&ctx, task, campaign).await });
        }
    }
    for _ in scenario
        .campaigns
        .iter()
        .filter(|c| c.hold_seconds.is_some())
    {
        let (task, ctx) = (exec.next_task(), ctx.clone());
        exec.spawn(async move { rival(&ctx, task).await });
    }
    let (task, ctx) = (exec.next_task(), ctx.clone());
    exec.spawn(async move { sweeper(&ctx, task).await });
}

/// Creates a campaign another operator creates at the same time.
async fn creator(ctx: &Ctx, task: usize, campaign: Campaign) {
    ctx.sleep_between(0, 5_000).await;
    let created = with_retries(ctx, task, "create", |now| {
        campaigns::create(&ctx.store, campaign.clone(), now)
    })
    .await;
    if let Some((Err(e), _)) = created {
        ctx.stuck.borrow_mut().push(format!(
            "t{task} create of an identical campaign: {}",
            e.code()
        ));
    }
}

async fn claimer(ctx: &Ctx, task: usize, c: usize, user: String, key: String) {
    ctx.sleep_between(0, 90_000).await;
    let campaign = ctx.campaigns[c].id.clone();
    let user_id = UserId(user.clone());
    let request = ClaimRequest {
        campaign_id: campaign.clone(),
    };
    let answer = with_retries(ctx, task, &format!("claim {user} {key}"), |now| {
        claim(&ctx.store, &user_id, &key, request.clone(), now, ctx.code())
    })
    .await;
    let Some((Ok(Claimed { coupon, replayed }), steps)) = answer else {
        return;
    };
    ctx.events.borrow_mut().push(Event::Claimed {
        task,
        campaign,
        user: user.clone(),
        code: coupon.code.clone(),
        replayed,
        steps,
    });
    if !ctx.rng.borrow_mut().chance(600) {
        return;
    }
    if ctx.campaigns[c].hold_seconds.is_some() {
        ctx.contested
            .borrow_mut()
            .push((user_id.clone(), coupon.code.clone()));
        held_checkout(ctx, task, &user_id, &coupon.code, 0).await;
    } else {
        checkout(ctx, task, &user_id, &coupon.code).await;
    }
}

/// Another order of the same user after a coupon a holder checks out.
async fn rival(ctx: &Ctx, task: usize) {
    for _ in 0..60 {
        ctx.sleep_between(500, 2_000).await;
        let next = ctx.contested.borrow_mut().pop();
        if let Some((user, code)) = next {
            held_checkout(ctx, task, &user, &code, 1).await;
            return;
        }
    }
}

/// Holds a coupon for order `n`, then redeems it, releases it or lets the
/// hold end. The holder's redemption, started while its hold is in force
/// (by every host's clock), must not find the coupon taken.
async fn held_checkout(ctx: &Ctx, task: usize, user: &UserId, code: &str, n: i64) {
    let order = order(n);
    let order_id = order.id.clone().expect("an order id");
    let request = HoldRequest {
        code: code.to_owned(),
        order: order.clone(),
        user_id: Some(user.as_str().to_owned()),
    };
    ctx.sleep_between(0, 3_000).await;
    let held = with_retries(ctx, task, "hold", |now| {
        hold(&ctx.store, Caller::Checkout, request.clone(), now)
    })
    .await;
    let until = match held {
        Some((Ok(held), _)) => crate::time::parse(&held.hold.held_until).expect("an instant"),
        Some((Err(e @ (Error::HoldsNotEnabled | Error::OrderTermsChanged)), _)) => {
            ctx.stuck
                .borrow_mut()
                .push(format!("t{task} hold: refused: {}", e.code()));
            return;
        }
        _ => return,
    };
    // The payment takes a while.
    ctx.sleep_between(0, 30_000).await;
    let roll = ctx.rng.borrow_mut().below(10);
    if roll == 0 {
        // Paid nothing: the checkout gives the coupon back.
        with_retries(ctx, task, "release", |now| {
            release(&ctx.store, code, &order_id, Actor::Checkout, now)
        })
        .await;
        return;
    }
    if roll == 1 {
        // The shopper walks away: the hold ends on its own.
        return;
    }
    let request = RedemptionRequest {
        code: code.to_owned(),
        order,
        user_id: Some(user.as_str().to_owned()),
    };
    let margin = jiff::SignedDuration::from_millis(2 * super::MAX_SKEW_MS);
    let answer = with_retries(ctx, task, "redeem held", |now| {
        let (request, order_id) = (request.clone(), &order_id);
        async move {
            let answer = redeem(&ctx.store, Caller::Checkout, request, now).await;
            if let Err(e @ (Error::AlreadyRedeemed | Error::CouponHeld { .. })) = &answer
                && now < until - margin
            {
                ctx.stuck.borrow_mut().push(format!(
                    "t{task} {code}: held for {order_id} until {until}, its redemption at {now} refused: {}",
                    e.code()
                ));
            }
            answer
        }
    })
    .await;
    if let Some((Ok(r), steps)) = answer {
        ctx.events.borrow_mut().push(Event::Redeemed {
            task,
            code: code.to_owned(),
            order: order_id,
            replayed: r.replayed,
            steps,
        });
    }
}

/// Order `n` of a user: a user's checkouts share their orders, so coupons of
/// one or more campaigns race for one order's room. Two 500-off coupons
/// fit on either; a third only on neither.
pub fn order(n: i64) -> Order {
    Order {
        id: Some(format!("o{n}")),
        amount: Amount::new(1_000 + 200 * n).expect("amount"),
        currency: Currency::parse("CNY").expect("currency"),
        categories: vec![],
        lines: vec![],
    }
}

/// Validates and redeems a coupon for an order, maybe cancels it, maybe
/// retries the cancelled redemption.
async fn checkout(ctx: &Ctx, task: usize, user: &UserId, code: &str) {
    let order = order(ctx.rng.borrow_mut().range(0, 1));
    let order_id = order.id.clone().expect("an order id");
    ctx.sleep_between(0, 30_000).await;
    with_retries(ctx, task, "validate", |now| {
        validate(
            &ctx.store,
            user,
            ValidationRequest {
                code: code.to_owned(),
                order: order.clone(),
                user_id: None,
            },
            now,
        )
    })
    .await;
    let request = RedemptionRequest {
        code: code.to_owned(),
        order: order.clone(),
        // The shop's checkout redeems for the user, as campaigns require by default.
        user_id: Some(user.as_str().to_owned()),
    };
    if !redeem_once(ctx, task, &request, "redeem").await || !ctx.rng.borrow_mut().chance(400) {
        return;
    }
    ctx.sleep_between(0, 10_000).await;
    let cancelled = with_retries(ctx, task, "cancel", |now| {
        cancel(&ctx.store, code, &order_id, Actor::Operator, now)
    })
    .await;
    match cancelled {
        Some((Ok(_), _)) => ctx.events.borrow_mut().push(Event::Cancelled {
            code: code.to_owned(),
            order: order_id.clone(),
        }),
        Some((Err(e), _)) => ctx.stuck.borrow_mut().push(format!(
            "t{task} cancel of an acknowledged redemption: {}",
            e.code()
        )),
        None => return,
    }
    if ctx.rng.borrow_mut().chance(500) {
        // A late retry of the cancelled order's redemption.
        redeem_once(ctx, task, &request, "redeem again").await;
    }
}

/// Redeems with retries; whether it was redeemed.
async fn redeem_once(ctx: &Ctx, task: usize, request: &RedemptionRequest, what: &str) -> bool {
    let answer = with_retries(ctx, task, what, |now| {
        redeem(&ctx.store, Caller::Checkout, request.clone(), now)
    })
    .await;
    match answer {
        Some((Ok(r), steps)) => {
            ctx.events.borrow_mut().push(Event::Redeemed {
                task,
                code: request.code.clone(),
                order: request.order.id.clone().unwrap_or_default(),
                replayed: r.replayed,
                steps,
            });
            true
        }
        Some((Err(e @ (Error::RuleFailed(_) | Error::OrderTermsChanged)), _)) => {
            ctx.stuck.borrow_mut().push(format!(
                "t{task} {what}: a valid order refused: {}",
                e.code()
            ));
            false
        }
        _ => false,
    }
}

async fn operator(ctx: &Ctx, task: usize, c: usize) {
    let id = ctx.campaigns[c].id.clone();
    ctx.sleep_between(0, 30_000).await;
    let paused = with_retries(ctx, task, "pause", |now| {
        campaigns::set_paused(&ctx.store, &id, true, note(task), now)
    })
    .await;
    if let Some((Ok(view), _)) = paused
        && view.paused
    {
        ctx.events.borrow_mut().push(Event::PauseAnswered {
            campaign: id.clone(),
            step: ctx.step(),
        });
    }
    ctx.sleep_between(0, 5_000).await;
    let step = ctx.step();
    ctx.events.borrow_mut().push(Event::ResumeStarted {
        campaign: id.clone(),
        step,
    });
    with_retries(ctx, task, "resume", |now| {
        campaigns::set_paused(&ctx.store, &id, false, note(task), now)
    })
    .await;
}

/// What an operator task says it is and why.
fn note(task: usize) -> crate::ops::brake::Note {
    crate::ops::brake::Note {
        changed_by: Some(format!("t{task}")),
        reason: Some("simulated".into()),
    }
}

/// Closes a campaign's claims for good, mid-sale.
async fn closer(ctx: &Ctx, task: usize, c: usize) {
    let id = ctx.campaigns[c].id.clone();
    ctx.sleep_between(0, 60_000).await;
    let closed = with_retries(ctx, task, "close", |now| {
        campaigns::close(&ctx.store, &id, note(task), now)
    })
    .await;
    if let Some((Ok(view), _)) = closed
        && view.closed
    {
        ctx.events.borrow_mut().push(Event::CloseAnswered {
            campaign: id,
            step: ctx.step(),
        });
    }
}

/// Changes a campaign's stock mid-sale (refused if below what is issued, or
/// while a recount fences the stock: the sweep may not come again soon).
async fn limiter(ctx: &Ctx, task: usize, c: usize, stock: u64) {
    let id = ctx.campaigns[c].id.clone();
    ctx.sleep_between(0, 60_000).await;
    ctx.events.borrow_mut().push(Event::LimitsStarted {
        campaign: id.clone(),
    });
    let changed = with_retries(ctx, task, "limits", |now| {
        let request = crate::ops::limits::LimitsRequest {
            stock: Some(stock),
            changed_by: Some(format!("t{task}")),
            ..Default::default()
        };
        crate::ops::limits::change(&ctx.store, &id, request, now)
    })
    .await;
    if let Some((Ok(view), _)) = changed {
        ctx.events.borrow_mut().push(Event::LimitsAnswered {
            campaign: id,
            capacity: view.stats.capacity,
        });
    }
}

/// Freezes a campaign's redemptions for a while, during the checkouts.
async fn freezer(ctx: &Ctx, task: usize, c: usize) {
    let id = ctx.campaigns[c].id.clone();
    ctx.sleep_between(0, 90_000).await;
    let frozen = with_retries(ctx, task, "freeze", |now| {
        campaigns::set_frozen(&ctx.store, &id, true, note(task), now)
    })
    .await;
    if let Some((Ok(view), _)) = frozen
        && view.frozen
    {
        ctx.events.borrow_mut().push(Event::FreezeAnswered {
            campaign: id.clone(),
            step: ctx.step(),
        });
    }
    ctx.sleep_between(0, 10_000).await;
    let step = ctx.step();
    ctx.events.borrow_mut().push(Event::UnfreezeStarted {
        campaign: id.clone(),
        step,
    });
    with_retries(ctx, task, "unfreeze", |now| {
        campaigns::set_frozen(&ctx.store, &id, false, note(task), now)
    })
    .await;
}

async fn redater(ctx: &Ctx, task: usize, c: usize) {
    let id = ctx.campaigns[c].id.clone();
    ctx.sleep_between(0, 120_000).await;
    let revive = ctx.rng.borrow_mut().chance(500);
    let expiry = match ctx.rng.borrow_mut().chance(500) {
        true => ExpiryRule::EndOfMonth {
            month: YearMonth::parse("2028-04").expect("month"),
        },
        false => ExpiryRule::EndOfClaimMonth,
    };
    with_retries(ctx, task, "redate", |now| {
        redate(
            &ctx.store,
            &id,
            RedatingRequest {
                expiry,
                revive_expired: revive,
                changed_by: "sim".into(),
                reason: None,
            },
            now,
        )
    })
    .await;
}

/// Walks the sweep to its end a few times after the month end.
async fn sweeper(ctx: &Ctx, task: usize) {
    for _ in 0..3 {
        ctx.sleep_between(30_000, 90_000).await;
        sweep_to_end(ctx, task).await;
    }
}

/// Walks the sweep to its end: whole, or (one time in two) as 2 or 3
/// partitions walked one after the other.
pub async fn sweep_to_end(ctx: &Ctx, task: usize) {
    let of = match ctx.rng.borrow_mut().range(0, 3) {
        0 | 1 => None,
        n => Some(n),
    };
    for index in 0..of.unwrap_or(1) {
        let partition = of.map(|of| format!("{index}/{of}"));
        let mut cursor = None;
        loop {
            let limit = Some(ctx.rng.borrow_mut().range(1, 4) as u32);
            let answer = with_retries(ctx, task, "sweep", |now| {
                sweep(
                    &ctx.store,
                    ExpirationRequest {
                        as_of: None,
                        limit,
                        cursor: cursor.clone(),
                        partition: partition.clone(),
                    },
                    now,
                    || false,
                )
            })
            .await;
            match answer {
                Some((Ok(swept), _)) if swept.next_cursor.is_some() => {
                    cursor = swept.next_cursor;
                }
                _ => break,
            }
        }
    }
}
