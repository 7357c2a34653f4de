//! Variables: application values (`[variables]`, provided like Spin's
//! `SPIN_VARIABLE_*`), each component's templates over them
//! (`admin_token = "{{ admin_token }}"`), and the `spin:variables` host
//! interface through which a component reads only its own.

use crate::bindings::spin::variables::variables::{self, Error};
use crate::manifest::{ComponentSpec, Manifest};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::sync::Arc;
use wasmtime::component::{Accessor, HasData};

/// Checks a variable name as Spin does: a lowercase letter, then lowercase
/// letters, digits and underscores.
pub(crate) fn check_variable_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        bail!(
            "invalid variable name {name:?}: use a lowercase letter, then lowercase letters, digits or '_'"
        );
    }
    Ok(())
}

/// A component variable's value: text with `{{ name }}` references to
/// application variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Reference(String),
}

impl Template {
    /// Parses `text`; fails on an unclosed `{{` or a malformed name.
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .with_context(|| format!("unclosed '{{{{' in {text:?}"))?;
            let name = after[..end].trim();
            check_variable_name(name).with_context(|| format!("in template {text:?}"))?;
            parts.push(Part::Reference(name.to_owned()));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// The application variables it refers to.
    pub(crate) fn references(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            Part::Reference(name) => Some(name.as_str()),
            Part::Text(_) => None,
        })
    }

    /// Substitutes the application variables' `values`.
    pub(crate) fn render(&self, values: &BTreeMap<String, String>) -> Result<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Reference(name) => out.push_str(
                    values
                        .get(name)
                        .with_context(|| format!("application variable {name:?} has no value"))?,
                ),
            }
        }
        Ok(out)
    }
}

/// The value of every application variable: the `provided` one, else the
/// default. Fails if a required variable is missing or an undeclared one is
/// provided (likely a typo).
pub(crate) fn resolve_app_variables(
    manifest: &Manifest,
    provided: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    if let Some(name) = provided
        .keys()
        .find(|n| !manifest.variables.contains_key(*n))
    {
        bail!(
            "variable {name:?} is not declared in [variables] of {}",
            manifest.path.display()
        );
    }
    let mut values = BTreeMap::new();
    let mut missing = Vec::new();
    for (name, variable) in &manifest.variables {
        match provided.get(name).or(variable.default.as_ref()) {
            Some(value) => {
                values.insert(name.clone(), value.clone());
            }
            None => missing.push(name.as_str()),
        }
    }
    // Like Spin, name every missing variable at once (Spin: "no provider
    // resolved required variable(s): [...]"), and say how to give each.
    if !missing.is_empty() {
        let how: Vec<String> = missing
            .iter()
            .map(|name| format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()))
            .collect();
        bail!(
            "no value for required variable(s) {missing:?} of {}: set {}",
            manifest.path.display(),
            how.join(", ")
        );
    }
    Ok(values)
}

/// A component's own variables, rendered from its templates.
pub(crate) fn component_variables(
    component: &ComponentSpec,
    app_values: &BTreeMap<String, String>,
) -> Result<ComponentVariables> {
    let mut values = BTreeMap::new();
    for (name, template) in &component.variables {
        let value = Template::parse(template)?.render(app_values)?;
        values.insert(name.clone(), value);
    }
    Ok(ComponentVariables(Arc::new(values)))
}

/// The variables one component may read, shared by all its instances.
#[derive(Debug, Clone, Default)]
pub(crate) struct ComponentVariables(Arc<BTreeMap<String, String>>);

/// Marks `spin:variables` for the linker: its host state is the component's
/// [`ComponentVariables`].
pub(crate) struct Variables;

impl HasData for Variables {
    type Data<'a> = &'a ComponentVariables;
}

impl variables::Host for &ComponentVariables {}

impl<T> variables::HostWithStore<T> for Variables {
    async fn get(
        accessor: &Accessor<T, Self>,
        name: String,
    ) -> wasmtime::Result<Result<String, Error>> {
        if check_variable_name(&name).is_err() {
            return Ok(Err(Error::InvalidName(format!(
                "{name:?}: variable names are lowercase letters, digits and '_'"
            ))));
        }
        Ok(accessor.with(|mut access| {
            access.get().0.get(&name).cloned().ok_or_else(|| {
                Error::Undefined(format!("no variable named {name:?} for this component"))
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn manifest(variables: &str, component_variables: &str) -> Result<Manifest> {
        let text = format!(
            r#"
spin_manifest_version = 2
[application]
name = "test"
[variables]
{variables}
[component.c]
source = "c.wasm"
[component.c.variables]
{component_variables}
"#
        );
        Manifest::parse(&text, Path::new("/app/spin.toml"))
    }

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn templates_render_references_and_text() -> Result<()> {
        let app = values(&[("host", "example.com"), ("port", "80")]);
        let render = |t: &str| Template::parse(t).and_then(|t| t.render(&app));
        assert_eq!(render("{{ host }}")?, "example.com");
        assert_eq!(render("{{host}}:{{ port }}/x")?, "example.com:80/x");
        assert_eq!(render("plain")?, "plain");
        assert_eq!(render("")?, "");
        assert!(render("{{ host").is_err());
        assert!(render("{{ Host }}").is_err());
        assert!(render("{{ missing }}").is_err());
        Ok(())
    }

    #[test]
    fn app_variables_come_from_provided_values_then_defaults() -> Result<()> {
        let m = manifest(
            "secret = { required = true, secret = true }\nregion = { default = \"eu\" }",
            "",
        )?;
        let resolved = resolve_app_variables(&m, &values(&[("secret", "s3cret")]))?;
        assert_eq!(resolved, values(&[("region", "eu"), ("secret", "s3cret")]));
        let resolved = resolve_app_variables(&m, &values(&[("secret", "s"), ("region", "us")]))?;
        assert_eq!(resolved["region"], "us");
        Ok(())
    }

    #[test]
    fn missing_required_or_undeclared_variables_fail() -> Result<()> {
        let m = manifest("secret = { required = true }", "")?;
        let missing = resolve_app_variables(&m, &BTreeMap::new()).expect_err("missing");
        assert!(missing.to_string().contains("[\"secret\"]"), "{missing}");
        assert!(
            missing.to_string().contains("SPIN_VARIABLE_SECRET"),
            "{missing}"
        );
        let typo = resolve_app_variables(&m, &values(&[("secret", "s"), ("secrte", "s")]))
            .expect_err("undeclared");
        assert!(typo.to_string().contains("\"secrte\" is not declared"));
        Ok(())
    }

    #[test]
    fn component_variables_render_against_app_values() -> Result<()> {
        let m = manifest(
            "token = { required = true }",
            "admin_token = \"{{ token }}\"\nbearer = \"Bearer {{ token }}\"",
        )?;
        let app = resolve_app_variables(&m, &values(&[("token", "t0k")]))?;
        let vars = component_variables(m.component("c")?, &app)?;
        assert_eq!(
            *vars.0,
            values(&[("admin_token", "t0k"), ("bearer", "Bearer t0k")])
        );
        Ok(())
    }

    #[test]
    fn manifest_rejects_bad_variable_declarations() {
        let error = |vars: &str, component_vars: &str| {
            format!("{:#}", manifest(vars, component_vars).expect_err("invalid"))
        };
        assert!(error("x = { required = true, default = \"d\" }", "").contains("pick one"));
        assert!(error("x = { secret = true }", "").contains("needs either"));
        assert!(error("Bad = { default = \"d\" }", "").contains("invalid variable name"));
        assert!(error("x = { default = \"d\" }", "y = \"{{ z }}\"").contains("not declared"));
        assert!(error("x = { default = \"d\" }", "y = \"{{ x \"").contains("unclosed"));
    }
}
