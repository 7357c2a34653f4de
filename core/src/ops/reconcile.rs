//! Recounting a campaign's stats from its ledger: the claims in the expiry
//! index, the redemptions, cancels and discount in their ledgers, the
//! expiries since the latest revival in theirs (the sources `events` reads),
//! compared with `stats`. Bounded per call like the sweep; the cursor
//! carries the counts so far, so a reconciliation keeps nothing in the store.

use super::campaigns::{self, Stats};
use super::events::{EventKind, Log, Source, counts, sources};
use super::ledger;
use super::load_campaign;
use crate::campaign::CampaignId;
use crate::error::{Error, Result};
use crate::store::Store;
use jiff::Timestamp;
use serde::Serialize;

/// Positions a call reads at most: its share of work.
const SHARE: i64 = 4_096;
/// Positions read per round trip.
const CHUNK: i64 = 256;

/// What the logs add up to, over the stats they should equal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub claimed: i64,
    /// Redemptions less cancelled ones.
    pub redeemed: i64,
    /// Expiries since the latest revival, as `stats.expired` counts them.
    pub expired: i64,
    /// The discount redemptions gave less what cancels gave back.
    pub discount_given: i64,
}

/// A stat the logs do not add up to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub stat: &'static str,
    pub stats: i64,
    pub ledger: i64,
}

/// How far a reconciliation got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Reconciliation {
    /// Its share of work ran out: call again with `cursor`.
    Counting {
        cursor: String,
    },
    Done(Report),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub ledger: Totals,
    pub stats: Totals,
    /// Empty when every stat equals its recount from the logs.
    pub differences: Vec<Difference>,
    /// Positions taken but not written when counted: writers in flight, or
    /// ones that died (a claim's, whose unit the stock's recount gives back,
    /// or a ledger's, which the sweep settles as empty). Until the sweep has
    /// settled them, differences may be theirs.
    pub unwritten: i64,
    /// `stats.discount_unsettled`: amounts the stats leave out until the
    /// sweep settles them.
    pub discount_unsettled: i64,
}

/// A reconciliation cursor: the source and position reached, and the
/// counts so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Tally {
    source: String,
    position: i64,
    counted: [i64; 6],
}

/// Indices into [`Tally::counted`].
const CLAIMS: usize = 0;
const REDEMPTIONS: usize = 1;
const CANCELS: usize = 2;
const GIVEN: usize = 3;
const EXPIRED: usize = 4;
const UNWRITTEN: usize = 5;

impl Tally {
    fn parse(raw: &str) -> Option<Tally> {
        let mut fields = raw.split('_');
        let source = fields.next()?.to_owned();
        let position = fields.next()?.parse().ok()?;
        let mut counted = [0; 6];
        for slot in &mut counted {
            *slot = fields.next()?.parse().ok()?;
        }
        fields.next().is_none().then_some(Tally {
            source,
            position,
            counted,
        })
    }

    fn render(&self) -> String {
        let counted: Vec<String> = self.counted.iter().map(i64::to_string).collect();
        format!("{}_{}_{}", self.source, self.position, counted.join("_"))
    }
}

/// Recounts campaign `id`'s stats from its logs and compares: claims from
/// the expiry index, redemptions, cancels and the discount from their
/// ledgers, expiries from the latest revival's. Bounded per call like the
/// sweep: a call that runs out of its share answers a cursor to go on from.
pub async fn reconcile(
    store: &impl Store,
    id: &CampaignId,
    cursor: Option<&str>,
    now: Timestamp,
) -> Result<Reconciliation> {
    reconcile_sharing(store, id, cursor, now, SHARE).await
}

/// [`reconcile`], reading at most `share` positions.
async fn reconcile_sharing(
    store: &impl Store,
    id: &CampaignId,
    cursor: Option<&str>,
    now: Timestamp,
    mut share: i64,
) -> Result<Reconciliation> {
    let mut tally = match cursor.filter(|c| !c.is_empty()) {
        None => Tally::default(),
        Some(raw) => Tally::parse(raw)
            .ok_or_else(|| Error::invalid("cursor", "is not a cursor this service gave"))?,
    };
    let (campaign, dating) = load_campaign(store, id)
        .await?
        .ok_or(Error::CampaignNotFound)?;
    let zone = campaign.zone()?;
    let current = format!("e{}", dating.epoch);
    let mut sources: Vec<Source> = sources(&campaign, &dating, &zone, now)
        .into_iter()
        .filter(|s| match s.log {
            Log::Claims => true,
            Log::Ledger(EventKind::Redeemed | EventKind::Cancelled) => true,
            Log::Ledger(EventKind::Expired) => s.name == current,
            _ => false,
        })
        .collect();
    // The claim months last: a month that begins while reconciling adds its
    // sources after those already counted.
    sources.sort_by_key(|s| s.log == Log::Claims);
    let start = match tally.source.is_empty() {
        true => 0,
        false => sources
            .iter()
            .position(|s| s.name == tally.source)
            .ok_or_else(|| Error::invalid("cursor", "names a log this campaign has not"))?,
    };
    let counts = counts(store, &sources).await?;
    for (i, source) in sources.iter().enumerate().skip(start) {
        if i > start {
            tally.position = 0;
        }
        tally.source = source.name.clone();
        while tally.position < counts[i] {
            if share <= 0 {
                return Ok(Reconciliation::Counting {
                    cursor: tally.render(),
                });
            }
            let n = CHUNK.min(counts[i] - tally.position).min(share);
            share -= n;
            let keys: Vec<String> = (tally.position + 1..=tally.position + n)
                .map(|p| source.key(p))
                .collect();
            for bytes in store.get_many(&keys).await? {
                count(&mut tally.counted, source.log, bytes.as_deref());
            }
            tally.position += n;
        }
    }
    let view = campaigns::get(store, id).await?;
    let c = tally.counted;
    let ledger = Totals {
        claimed: c[CLAIMS],
        redeemed: c[REDEMPTIONS] - c[CANCELS],
        expired: c[EXPIRED],
        discount_given: c[GIVEN],
    };
    Ok(Reconciliation::Done(report(
        ledger,
        &view.stats,
        c[UNWRITTEN],
    )))
}

/// Adds what one position holds to `counted`.
fn count(counted: &mut [i64; 6], log: Log, bytes: Option<&[u8]>) {
    let Some(bytes) = bytes else {
        counted[UNWRITTEN] += 1;
        return;
    };
    if bytes == ledger::EMPTY {
        return;
    }
    let amount = ledger::amount_of(bytes);
    match log {
        Log::Claims => counted[CLAIMS] += 1,
        Log::Ledger(EventKind::Redeemed) => {
            counted[REDEMPTIONS] += 1;
            counted[GIVEN] += amount;
        }
        Log::Ledger(EventKind::Cancelled) => {
            counted[CANCELS] += 1;
            counted[GIVEN] -= amount;
        }
        Log::Ledger(EventKind::Expired) => counted[EXPIRED] += 1,
        _ => {}
    }
}

fn report(ledger: Totals, stats: &Stats, unwritten: i64) -> Report {
    let stats_totals = Totals {
        claimed: stats.claimed,
        redeemed: stats.redeemed,
        expired: stats.expired,
        discount_given: stats.discount_given,
    };
    let differences = [
        ("claimed", stats.claimed, ledger.claimed),
        ("redeemed", stats.redeemed, ledger.redeemed),
        ("expired", stats.expired, ledger.expired),
        (
            "discount_given",
            stats.discount_given,
            ledger.discount_given,
        ),
    ]
    .into_iter()
    .filter(|(_, s, l)| s != l)
    .map(|(stat, stats, ledger)| Difference {
        stat,
        stats,
        ledger,
    })
    .collect();
    Report {
        ledger,
        stats: stats_totals,
        differences,
        unwritten,
        discount_unsettled: stats.discount_unsettled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expiry::YearMonth;
    use crate::keys::CampaignKeys;
    use crate::ops::events::tests::{id, story};
    use crate::ops::testing::ts;
    use futures::executor::block_on;

    #[test]
    fn the_ledger_reconciles_with_the_stats_and_names_what_does_not() {
        let (store, _) = story();
        let now = ts("2028-02-07T00:00:00+08:00");
        let done = |share| {
            let mut cursor = None;
            loop {
                match block_on(reconcile_sharing(
                    &store,
                    &id(),
                    cursor.as_deref(),
                    now,
                    share,
                ))
                .expect("reconcile")
                {
                    Reconciliation::Counting { cursor: next } => cursor = Some(next),
                    Reconciliation::Done(report) => return report,
                }
            }
        };
        let report = done(SHARE);
        assert_eq!(report.differences, []);
        let totals = Totals {
            claimed: 3,
            redeemed: 0,
            expired: 1,
            discount_given: 0,
        };
        assert_eq!((report.ledger, report.stats), (totals, totals));
        // A share of one position per call gets there too.
        assert_eq!(done(1), report);
        // A claim that took its unit and index slot, then died: the stats
        // count it until the recount gives it back, the ledger does not.
        let keys = CampaignKeys::new(&id());
        let month = YearMonth::parse("2028-02").expect("month");
        block_on(store.increment(&keys.claimed(0), 1)).expect("unit");
        block_on(store.increment(&keys.month_seq(month, 0), 1)).expect("slot");
        let report = done(SHARE);
        let difference = Difference {
            stat: "claimed",
            stats: 4,
            ledger: 3,
        };
        assert_eq!(
            (report.differences, report.unwritten),
            (vec![difference], 1)
        );
    }

    #[test]
    fn a_cursor_carries_the_counts_and_junk_is_refused() {
        let tally = Tally {
            source: "m2028-02s1".into(),
            position: 9,
            counted: [1, 2, 3, -4, 5, 6],
        };
        assert_eq!(Tally::parse(&tally.render()), Some(tally));
        assert_eq!(Tally::parse("r1_2_3"), None);
        let (store, _) = story();
        let now = ts("2028-02-07T00:00:00+08:00");
        let refused = block_on(reconcile(&store, &id(), Some("zz_0_0_0_0_0_0_0"), now));
        assert_eq!(refused.expect_err("a foreign log").field(), Some("cursor"));
    }
}
