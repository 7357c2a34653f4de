//! `spin.toml` (manifest version 2): the parts this host runs.
//!
//! Parsing checks what Spin checks at load time — every route names a declared
//! component, routes parse and are unique, variables are well formed and every
//! `{{ name }}` in a component's variables names an application variable — so
//! a broken manifest fails when the app is built, not on some later request.

use crate::routes::Router;
use crate::variables::{Template, check_variable_name};
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A parsed and checked `spin.toml`.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The file it was read from.
    pub path: PathBuf,
    /// The directory holding it: component sources and build commands are
    /// relative to it.
    pub dir: PathBuf,
    /// `[application] name`.
    pub name: String,
    /// `[application] version`, if any.
    pub version: Option<String>,
    /// `[variables]`, by name.
    pub variables: BTreeMap<String, Variable>,
    /// `[[trigger.http]]`, in manifest order.
    pub http_triggers: Vec<HttpTrigger>,
    /// `[component.<id>]`, by id.
    pub components: BTreeMap<String, ComponentSpec>,
}

/// An application variable from `[variables]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    /// The value used when none is provided.
    #[serde(default)]
    pub default: Option<String>,
    /// Whether a value must be provided (then there is no default).
    #[serde(default)]
    pub required: bool,
    /// Whether the value is a secret (kept out of logs).
    #[serde(default)]
    pub secret: bool,
}

/// One `[[trigger.http]]`: a route and the component that serves it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HttpTrigger {
    /// The route pattern: `/exact`, `/with/:param`, or `/prefix/...`.
    pub route: String,
    /// The component id.
    pub component: String,
}

/// One `[component.<id>]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ComponentSpec {
    /// The `.wasm` file, relative to the manifest's directory.
    pub source: PathBuf,
    /// The key-value store labels the component may open.
    #[serde(default)]
    pub key_value_stores: Vec<String>,
    /// The component's variables: templates over application variables.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// How `spin build` builds it.
    #[serde(default)]
    pub build: Option<BuildSpec>,
}

/// `[component.<id>.build]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BuildSpec {
    /// A shell command.
    pub command: String,
    /// Where to run it, relative to the manifest's directory (default: there).
    #[serde(default)]
    pub workdir: Option<PathBuf>,
}

/// The file as written, before checks.
#[derive(Deserialize)]
struct RawManifest {
    spin_manifest_version: i64,
    application: RawApplication,
    #[serde(default)]
    variables: BTreeMap<String, Variable>,
    #[serde(default)]
    trigger: RawTriggers,
    #[serde(default)]
    component: BTreeMap<String, ComponentSpec>,
}

#[derive(Deserialize)]
struct RawApplication {
    name: String,
    #[serde(default)]
    version: Option<String>,
}

#[derive(Default, Deserialize)]
struct RawTriggers {
    #[serde(default)]
    http: Vec<HttpTrigger>,
}

impl Manifest {
    /// Reads and checks the manifest at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the Spin manifest {}", path.display()))?;
        let path = std::path::absolute(path)
            .with_context(|| format!("cannot resolve the path {}", path.display()))?;
        Self::parse(&text, &path)
            .with_context(|| format!("invalid Spin manifest {}", path.display()))
    }

    /// Parses and checks manifest `text` as if read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let raw: RawManifest = toml::from_str(text)?;
        if raw.spin_manifest_version != 2 {
            bail!(
                "spin_manifest_version is {}, but only version 2 is supported",
                raw.spin_manifest_version
            );
        }
        let manifest = Self {
            path: path.to_owned(),
            dir: path.parent().map(Path::to_owned).unwrap_or_default(),
            name: raw.application.name,
            version: raw.application.version,
            variables: raw.variables,
            http_triggers: raw.trigger.http,
            components: raw.component,
        };
        manifest.check()?;
        Ok(manifest)
    }

    /// The component with id `id`.
    pub fn component(&self, id: &str) -> Result<&ComponentSpec> {
        self.components
            .get(id)
            .with_context(|| format!("{} has no [component.{id}]", self.path.display()))
    }

    /// Every key-value store label some component uses, once each.
    pub fn store_labels(&self) -> Vec<String> {
        let labels: std::collections::BTreeSet<&String> = self
            .components
            .values()
            .flat_map(|c| &c.key_value_stores)
            .collect();
        labels.into_iter().cloned().collect()
    }

    /// The absolute path of a component's `.wasm`.
    pub fn source_path(&self, component: &ComponentSpec) -> PathBuf {
        self.dir.join(&component.source)
    }

    fn check(&self) -> Result<()> {
        for (name, variable) in &self.variables {
            check_variable_name(name).with_context(|| format!("in [variables] {name}"))?;
            match (variable.required, &variable.default) {
                (true, Some(_)) => {
                    bail!("variable {name:?} is required and has a default: pick one")
                }
                (false, None) => {
                    bail!("variable {name:?} needs either `required = true` or a `default`")
                }
                _ => {}
            }
        }
        for trigger in &self.http_triggers {
            if !self.components.contains_key(&trigger.component) {
                bail!(
                    "route {:?} names component {:?}, which has no [component.{}]",
                    trigger.route,
                    trigger.component,
                    trigger.component
                );
            }
        }
        Router::new(&self.http_triggers)?;
        for (id, component) in &self.components {
            for (name, template) in &component.variables {
                check_variable_name(name)
                    .with_context(|| format!("in [component.{id}.variables] {name}"))?;
                let template = Template::parse(template)
                    .with_context(|| format!("in [component.{id}.variables] {name}"))?;
                for reference in template.references() {
                    if !self.variables.contains_key(reference) {
                        bail!(
                            "[component.{id}.variables] {name} refers to {{{{ {reference} }}}}, \
                             which is not declared in [variables]"
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
spin_manifest_version = 2
[application]
name = "app"
[[trigger.http]]
route = "/hello"
component = "hello"
[component.hello]
source = "target/hello.wasm"
"#;

    fn parse_error(text: &str) -> String {
        format!(
            "{:#}",
            Manifest::parse(text, Path::new("/app/spin.toml")).expect_err("invalid")
        )
    }

    #[test]
    fn reads_the_project_manifest() -> Result<()> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spin.toml");
        let manifest = Manifest::load(&path)?;
        assert_eq!(manifest.name, "coupons");
        assert!(manifest.variables["admin_token"].required);
        assert!(manifest.variables["user_token_secret"].secret);
        let redeem = manifest.component("redeem")?;
        assert_eq!(redeem.key_value_stores, ["default"]);
        assert_eq!(redeem.variables["admin_token"], "{{ admin_token }}");
        let build = redeem.build.as_ref().expect("redeem has a build");
        assert_eq!(
            build.command,
            "cargo build --target wasm32-wasip2 --profile wasm -p redeem"
        );
        assert_eq!(
            manifest.source_path(redeem),
            manifest.dir.join("target/wasm32-wasip2/wasm/redeem.wasm")
        );
        assert!(manifest.dir.is_absolute());
        let routes: Vec<_> = manifest
            .http_triggers
            .iter()
            .map(|t| (t.route.as_str(), t.component.as_str()))
            .collect();
        assert!(routes.contains(&("/coupons/:code", "validate")));
        Ok(())
    }

    #[test]
    fn parses_a_minimal_manifest_relative_to_its_directory() -> Result<()> {
        let manifest = Manifest::parse(MINIMAL, Path::new("/app/spin.toml"))?;
        let hello = manifest.component("hello")?;
        assert_eq!(hello.key_value_stores, Vec::<String>::new());
        assert_eq!(hello.build, None);
        assert_eq!(
            manifest.source_path(hello),
            Path::new("/app/target/hello.wasm")
        );
        assert!(manifest.component("other").is_err());
        Ok(())
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert!(
            parse_error(&MINIMAL.replace("= 2", "= 1")).contains("only version 2 is supported")
        );
        assert!(
            parse_error(&MINIMAL.replace("component = \"hello\"", "component = \"bye\""))
                .contains("names component \"bye\", which has no [component.bye]")
        );
        assert!(
            parse_error(&MINIMAL.replace("route = \"/hello\"", "route = \"hello\""))
                .contains("must start with '/'")
        );
        assert!(parse_error(&MINIMAL.replace("source = ", "sauce = ")).contains("source"));
    }

    #[test]
    fn load_names_the_file() {
        let error = Manifest::load("/nonexistent/spin.toml").expect_err("missing");
        assert!(format!("{error:#}").contains("/nonexistent/spin.toml"));
    }
}
