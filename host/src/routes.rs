//! Which component serves a request path, by Spin's routing rules.
//!
//! A route is an exact path (`/claims`), may have named segments
//! (`/coupons/:code`), and may end in a wildcard (`/campaigns/...`) that matches
//! the prefix itself and anything below it. A trailing slash, in a route or a
//! path, does not matter. When several routes match, the most specific wins:
//! a route without a wildcard beats one with; then the one with more segments
//! (the longer prefix); then the one whose literal segments come first
//! (`/a/b` beats `/a/:x`); then the one declared first.

use crate::manifest::HttpTrigger;
use anyhow::{Result, bail};
use std::cmp::Ordering;

/// The routes of an app, ready to match paths.
#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<Route>,
}

/// A route pattern, parsed.
#[derive(Debug, Clone)]
struct Route {
    /// As written in the manifest.
    raw: String,
    component: String,
    segments: Vec<Segment>,
    wildcard: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// The route a path matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch<'a> {
    /// The component that serves it.
    pub component: &'a str,
    /// The route as written in the manifest (Spin's `spin-matched-route`).
    pub route: &'a str,
    /// The part of the path below a wildcard route's prefix, `""` for an exact
    /// route (Spin's `spin-path-info`).
    pub path_info: String,
    /// The values of the route's `:name` segments.
    pub params: Vec<(&'a str, String)>,
}

impl Router {
    /// Parses every trigger's route; fails on a malformed or duplicate route.
    pub fn new(triggers: &[HttpTrigger]) -> Result<Self> {
        let mut routes: Vec<Route> = Vec::with_capacity(triggers.len());
        for trigger in triggers {
            let route = Route::parse(&trigger.route, &trigger.component)?;
            if let Some(same) = routes.iter().find(|r| r.same_pattern(&route)) {
                bail!(
                    "route {:?} (component {:?}) duplicates route {:?} (component {:?})",
                    route.raw,
                    route.component,
                    same.raw,
                    same.component
                );
            }
            routes.push(route);
        }
        Ok(Self { routes })
    }

    /// The most specific route matching `path` (no query string), if any.
    pub fn route(&self, path: &str) -> Option<RouteMatch<'_>> {
        let trailing_slash = path.len() > 1 && path.ends_with('/');
        let path_segments = split_segments(path);
        let mut best: Option<&Route> = None;
        for route in self.routes.iter().filter(|r| r.matches(&path_segments)) {
            if best.is_none_or(|b| route.specificity_cmp(b) == Ordering::Greater) {
                best = Some(route);
            }
        }
        let route = best?;
        let params = route
            .segments
            .iter()
            .zip(&path_segments)
            .filter_map(|(segment, value)| match segment {
                Segment::Param(name) => Some((name.as_str(), (*value).to_owned())),
                Segment::Literal(_) => None,
            })
            .collect();
        let path_info = if route.wildcard {
            let rest = &path_segments[route.segments.len()..];
            match (rest.is_empty(), trailing_slash) {
                (true, false) => String::new(),
                (true, true) => "/".to_owned(),
                (false, slash) => format!("/{}{}", rest.join("/"), if slash { "/" } else { "" }),
            }
        } else {
            String::new()
        };
        Some(RouteMatch {
            component: &route.component,
            route: &route.raw,
            path_info,
            params,
        })
    }
}

impl Route {
    fn parse(raw: &str, component: &str) -> Result<Self> {
        if !raw.starts_with('/') {
            bail!("route {raw:?} (component {component:?}) must start with '/'");
        }
        let (prefix, wildcard) = match raw.strip_suffix("/...") {
            Some(prefix) => (prefix, true),
            None => (raw, false),
        };
        let mut segments = Vec::new();
        for segment in split_segments(prefix) {
            segments.push(match segment.strip_prefix(':') {
                Some("") => bail!("route {raw:?} (component {component:?}) has an unnamed ':'"),
                Some(name) => Segment::Param(name.to_owned()),
                None if segment.is_empty() || segment == "..." => {
                    bail!("route {raw:?} (component {component:?}) has an empty or '...' segment")
                }
                None => Segment::Literal(segment.to_owned()),
            });
        }
        Ok(Self {
            raw: raw.to_owned(),
            component: component.to_owned(),
            segments,
            wildcard,
        })
    }

    fn matches(&self, path_segments: &[&str]) -> bool {
        let length_fits = if self.wildcard {
            path_segments.len() >= self.segments.len()
        } else {
            path_segments.len() == self.segments.len()
        };
        length_fits
            && self
                .segments
                .iter()
                .zip(path_segments)
                .all(|(segment, value)| match segment {
                    Segment::Literal(literal) => literal == value,
                    Segment::Param(_) => !value.is_empty(),
                })
    }

    /// Two routes that match exactly the same paths.
    fn same_pattern(&self, other: &Route) -> bool {
        self.wildcard == other.wildcard
            && self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|pair| match pair {
                    (Segment::Literal(a), Segment::Literal(b)) => a == b,
                    (Segment::Param(_), Segment::Param(_)) => true,
                    _ => false,
                })
    }

    /// Orders routes by the rules in the module documentation (ties: `Equal`).
    fn specificity_cmp(&self, other: &Route) -> Ordering {
        let literals = |route: &Route| -> Vec<bool> {
            route
                .segments
                .iter()
                .map(|s| matches!(s, Segment::Literal(_)))
                .collect()
        };
        (!self.wildcard)
            .cmp(&!other.wildcard)
            .then(self.segments.len().cmp(&other.segments.len()))
            .then_with(|| literals(self).cmp(&literals(other)))
    }
}

/// The segments of a path or route, ignoring leading and trailing slashes as
/// Spin does (`crates/routes/src/lib.rs`): `/` has none, `//a/b//` has `a`
/// and `b`.
fn split_segments(path: &str) -> Vec<&str> {
    let path = path.trim_matches('/');
    if path.is_empty() {
        Vec::new()
    } else {
        path.split('/').collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(&str, &str)]) -> Router {
        let triggers: Vec<HttpTrigger> = routes
            .iter()
            .map(|(route, component)| HttpTrigger {
                route: (*route).to_owned(),
                component: (*component).to_owned(),
            })
            .collect();
        Router::new(&triggers).expect("valid routes")
    }

    /// The component serving `path`, or "404".
    fn serves<'a>(router: &'a Router, path: &str) -> &'a str {
        router.route(path).map_or("404", |m| m.component)
    }

    #[test]
    fn exact_routes_match_only_their_path() {
        let r = router(&[("/claims", "claim"), ("/claims/mine", "mine")]);
        assert_eq!(serves(&r, "/claims"), "claim");
        assert_eq!(serves(&r, "/claims/"), "claim");
        assert_eq!(serves(&r, "/claims/mine"), "mine");
        assert_eq!(serves(&r, "/claims/other"), "404");
        assert_eq!(serves(&r, "/claimsx"), "404");
        assert_eq!(serves(&r, "/"), "404");
        assert_eq!(r.route("/claims").map(|m| m.path_info), Some(String::new()));
    }

    #[test]
    fn wildcard_matches_its_prefix_and_below_with_spin_path_info() {
        let r = router(&[("/campaigns/...", "campaigns")]);
        let info = |path: &str| r.route(path).map(|m| m.path_info);
        assert_eq!(info("/campaigns"), Some(String::new()));
        assert_eq!(info("/campaigns/"), Some("/".to_owned()));
        assert_eq!(info("/campaigns/x"), Some("/x".to_owned()));
        assert_eq!(info("/campaigns/x/stock/"), Some("/x/stock/".to_owned()));
        assert_eq!(info("/campaignsx"), None);
        assert_eq!(info("/"), None);
    }

    #[test]
    fn root_wildcard_matches_everything() {
        let r = router(&[("/...", "all")]);
        assert_eq!(serves(&r, "/"), "all");
        assert_eq!(serves(&r, "/a/b/c"), "all");
        assert_eq!(
            r.route("/a/b").map(|m| m.path_info),
            Some("/a/b".to_owned())
        );
    }

    #[test]
    fn named_segments_capture_values() {
        let r = router(&[("/coupons/:code", "validate")]);
        let m = r.route("/coupons/ABC-123").expect("matches");
        assert_eq!(m.component, "validate");
        assert_eq!(m.route, "/coupons/:code");
        assert_eq!(m.params, vec![("code", "ABC-123".to_owned())]);
        assert_eq!(serves(&r, "/coupons"), "404");
        assert_eq!(serves(&r, "/coupons/a/b"), "404");
    }

    #[test]
    fn most_specific_route_wins_regardless_of_order() {
        let routes = [
            ("/...", "root"),
            ("/one/...", "one"),
            ("/one/two/...", "two"),
            ("/one/two", "exact"),
            ("/one/:x", "param"),
        ];
        for reversed in [false, true] {
            let mut routes = routes.to_vec();
            if reversed {
                routes.reverse();
            }
            let r = router(&routes);
            assert_eq!(serves(&r, "/one/two"), "exact");
            assert_eq!(serves(&r, "/one/three"), "param");
            assert_eq!(serves(&r, "/one/two/three"), "two");
            assert_eq!(serves(&r, "/one"), "one");
            assert_eq!(serves(&r, "/elsewhere"), "root");
        }
    }

    #[test]
    fn the_project_manifest_routes() {
        let r = router(&[
            ("/campaigns/...", "campaigns"),
            ("/claims", "claim"),
            ("/validations", "validate"),
            ("/coupons/:code", "validate"),
            ("/redemptions/...", "redeem"),
            ("/expirations", "expire"),
        ]);
        assert_eq!(serves(&r, "/campaigns"), "campaigns");
        assert_eq!(serves(&r, "/campaigns/spring/stock"), "campaigns");
        assert_eq!(serves(&r, "/claims"), "claim");
        assert_eq!(serves(&r, "/coupons/XYZ"), "validate");
        assert_eq!(serves(&r, "/redemptions"), "redeem");
        assert_eq!(serves(&r, "/redemptions/r1/refund"), "redeem");
        assert_eq!(serves(&r, "/expirations"), "expire");
        assert_eq!(serves(&r, "/nope"), "404");
    }

    #[test]
    fn malformed_and_duplicate_routes_are_rejected() {
        let bad = |routes: &[(&str, &str)]| {
            let triggers: Vec<HttpTrigger> = routes
                .iter()
                .map(|(route, component)| HttpTrigger {
                    route: (*route).to_owned(),
                    component: (*component).to_owned(),
                })
                .collect();
            Router::new(&triggers)
                .expect_err("should be rejected")
                .to_string()
        };
        assert!(bad(&[("claims", "c")]).contains("must start with '/'"));
        assert!(bad(&[("/a/:", "c")]).contains("unnamed"));
        assert!(bad(&[("/a//b", "c")]).contains("empty"));
        assert!(bad(&[("/a/:x", "c"), ("/a/:y", "d")]).contains("duplicates"));
        assert!(bad(&[("/a/...", "c"), ("/a/", "d"), ("/a/", "e")]).contains("duplicates"));
    }
}
