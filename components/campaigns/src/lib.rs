//! The operator's campaign API: `POST /campaigns`, `GET /campaigns` (paged),
//! `GET /campaigns/{id}`,
//! `POST /campaigns/{id}/pause`, `/resume` and `/close` (claims),
//! `POST /campaigns/{id}/freeze` and `/unfreeze` (redemptions), each recorded
//! with who and why (`GET /campaigns/{id}/brakes`), and re-dating with
//! `PUT /campaigns/{id}/expiry` (`GET` lists the changes), and changing
//! stock, budget and claim rate with `PATCH /campaigns/{id}/limits` (`GET`
//! lists the changes). `GET /campaigns/{id}/events` pages through every
//! change of the campaign and its coupons (JSON, or JSON lines with
//! `format=jsonl`), and `GET /campaigns/{id}/reconciliation` recounts the
//! stats from them. `POST /campaigns/{id}/purge` deletes a campaign past
//! its retention, in bounded calls. `GET /campaigns/{id}/public` is the
//! shop's read, with no credentials.

use coupon_core::Error;
use coupon_core::api::{Reply, query_param};
use coupon_core::campaign::CampaignId;
use coupon_core::ops::brake::Note;
use coupon_core::ops::campaigns::{self, Created};
use coupon_core::ops::{dating, events, limits, purge, reconcile};
use coupon_spin::serve;
use spin_sdk::http::{IntoResponse, Method, Request};

#[spin_sdk::http_service]
async fn handle(request: Request) -> impl IntoResponse {
    serve(request, async |call, store| {
        let segments = call.segments_after("/campaigns").ok_or(Error::NotFound)?;
        let id = |s: &str| CampaignId::parse(s).ok_or(Error::CampaignNotFound);
        // The shop's read: no credentials, nothing of the operator's.
        if let (&Method::GET, [campaign, "public"]) = (&call.method, segments.as_slice()) {
            let public = campaigns::public(store, &id(campaign)?, call.now).await?;
            return Ok(Reply::json(200, &public).with_header("cache-control", "public, max-age=1"));
        }
        call.admin().await?;
        // A brake's body is optional (empty or `null`): `{"changed_by",
        // "reason"}` for the record.
        let note = || -> Result<Note, Error> {
            match call.body_is_empty() {
                true => Ok(Note::default()),
                false => Ok(call.json::<Option<Note>>()?.unwrap_or_default()),
            }
        };
        match (&call.method, segments.as_slice()) {
            (&Method::POST, []) => {
                let (created, view) = campaigns::create(store, call.json()?, call.now).await?;
                Ok(Reply::json(
                    if created == Created::New { 201 } else { 200 },
                    &view,
                ))
            }
            (&Method::GET, []) => {
                let after = match query_param(&call.query, "after")? {
                    Some(raw) => raw
                        .parse()
                        .map_err(|_| Error::invalid("after", "must be a cursor from `next`"))?,
                    None => 0,
                };
                let limit = match query_param(&call.query, "limit")? {
                    Some(raw) => raw.parse().map_err(|_| {
                        Error::invalid("limit", format!("must be 1 to {}", campaigns::MAX_PAGE))
                    })?,
                    None => campaigns::DEFAULT_PAGE,
                };
                Ok(Reply::json(
                    200,
                    &campaigns::list(store, after, limit).await?,
                ))
            }
            (&Method::GET, [campaign]) => Ok(Reply::json(
                200,
                &campaigns::get(store, &id(campaign)?).await?,
            )),
            (&Method::POST, [campaign, "pause"]) => Ok(Reply::json(
                200,
                &campaigns::set_paused(store, &id(campaign)?, true, note()?, call.now).await?,
            )),
            (&Method::POST, [campaign, "resume"]) => Ok(Reply::json(
                200,
                &campaigns::set_paused(store, &id(campaign)?, false, note()?, call.now).await?,
            )),
            (&Method::POST, [campaign, "close"]) => Ok(Reply::json(
                200,
                &campaigns::close(store, &id(campaign)?, note()?, call.now).await?,
            )),
            (&Method::POST, [campaign, "freeze"]) => Ok(Reply::json(
                200,
                &campaigns::set_frozen(store, &id(campaign)?, true, note()?, call.now).await?,
            )),
            (&Method::POST, [campaign, "unfreeze"]) => Ok(Reply::json(
                200,
                &campaigns::set_frozen(store, &id(campaign)?, false, note()?, call.now).await?,
            )),
            (&Method::POST, [campaign, "purge"]) => Ok(Reply::json(
                200,
                &purge::purge(store, &id(campaign)?, call.json()?, call.now).await?,
            )),
            (&Method::PUT, [campaign, "expiry"]) => Ok(Reply::json(
                200,
                &dating::redate(store, &id(campaign)?, call.json()?, call.now).await?,
            )),
            (&Method::PATCH, [campaign, "limits"]) => Ok(Reply::json(
                200,
                &limits::change(store, &id(campaign)?, call.json()?, call.now).await?,
            )),
            (&Method::GET, [campaign, "limits"]) => Ok(Reply::json(
                200,
                &limits::history(store, &id(campaign)?).await?,
            )),
            (&Method::GET, [campaign, "brakes"]) => Ok(Reply::json(
                200,
                &campaigns::brake_history(store, &id(campaign)?).await?,
            )),
            (&Method::GET, [campaign, "expiry"]) => Ok(Reply::json(
                200,
                &dating::history(store, &id(campaign)?).await?,
            )),
            (&Method::GET, [campaign, "events"]) => {
                let cursor = query_param(&call.query, "cursor")?;
                let limit = match query_param(&call.query, "limit")? {
                    Some(raw) => raw.parse().map_err(|_| {
                        Error::invalid("limit", format!("must be 1 to {}", events::MAX_LIMIT))
                    })?,
                    None => events::DEFAULT_LIMIT,
                };
                let lines = match query_param(&call.query, "format")?.as_deref() {
                    None | Some("json") => false,
                    Some("jsonl") => true,
                    Some(_) => return Err(Error::invalid("format", "must be json or jsonl")),
                };
                let page =
                    events::page(store, &id(campaign)?, cursor.as_deref(), limit, call.now).await?;
                Ok(match lines {
                    false => Reply::json(200, &page),
                    true => Reply::json_lines(200, &page.events)
                        .with_header("next-cursor", page.next_cursor)
                        .with_header("has-more", page.has_more.to_string())
                        .with_header("waiting", page.waiting.to_string()),
                })
            }
            (&Method::GET, [campaign, "reconciliation"]) => {
                let cursor = query_param(&call.query, "cursor")?;
                Ok(Reply::json(
                    200,
                    &reconcile::reconcile(store, &id(campaign)?, cursor.as_deref(), call.now)
                        .await?,
                ))
            }
            (_, []) => Err(Error::MethodNotAllowed { allow: "GET, POST" }),
            (_, [_]) => Err(Error::MethodNotAllowed { allow: "GET" }),
            (
                _,
                [
                    _,
                    "pause" | "resume" | "close" | "freeze" | "unfreeze" | "purge",
                ],
            ) => Err(Error::MethodNotAllowed { allow: "POST" }),
            (_, [_, "expiry"]) => Err(Error::MethodNotAllowed { allow: "GET, PUT" }),
            (_, [_, "limits"]) => Err(Error::MethodNotAllowed {
                allow: "GET, PATCH",
            }),
            (_, [_, "brakes" | "public" | "events" | "reconciliation"]) => {
                Err(Error::MethodNotAllowed { allow: "GET" })
            }
            _ => Err(Error::NotFound),
        }
    })
    .await
}
