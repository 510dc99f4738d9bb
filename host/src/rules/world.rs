//! What a rule component may import and must export: the `rulehost:rule` world, at a
//! semver-compatible version.

use super::*;

/// What a component's world check found.
pub(super) struct WorldCheck {
    /// Interfaces it imports (all from the rule world).
    pub imports: Vec<String>,
    /// Its `packed.on-events` export (0.1.3), where it has one.
    pub packed: Option<ComponentExportIndex>,
    /// The WASI interfaces it imports that need a grant, with the capability each needs.
    pub needs: Vec<(String, &'static str)>,
}

/// Checks a component's imports and exports against the rule world.
pub(super) fn check_world(engine: &Engine, component: &Component) -> Result<WorldCheck> {
    let ty = component.component_type();
    let mut imports = Vec::new();
    let mut needs = Vec::new();
    for (name, _) in ty.imports(engine) {
        let (package, interface, version) = split_interface_name(name);
        if let Some((namespace, rest)) = package.split_once(':')
            && namespace == wasi::WASI_PACKAGE
        {
            let path = format!("{rest}/{interface}");
            let Some(capability) = wasi::access(&path) else {
                bail!(
                    "imports `{name}`, which rules are not given (only WASI 0.2 streams, cli, filesystem and sockets, which reach nothing, and clocks and random, by grant)"
                );
            };
            check_wasi_version(name, version)?;
            if let Some(capability) = capability {
                needs.push((name.to_owned(), capability));
            }
            imports.push(name.to_owned());
            continue;
        }
        let ours = package == WORLD_PACKAGE && ALLOWED_IMPORTS.contains(&interface);
        if !ours {
            bail!("imports `{name}`, which the {WORLD_PACKAGE} world does not grant");
        }
        check_version(name, version)?;
        imports.push(name.to_owned());
    }
    let mut detector = None;
    let mut packed = None;
    for (name, _) in ty.exports(engine) {
        let (package, interface, version) = split_interface_name(name);
        if package == WORLD_PACKAGE && interface == "detector" {
            detector = Some((name, version));
        }
        if package == WORLD_PACKAGE && interface == "packed" {
            check_version(name, version)?;
            let on_events = component
                .get_export_index(None, name)
                .and_then(|packed| component.get_export_index(Some(&packed), "on-events"));
            match on_events {
                Some(index) => packed = Some(index),
                None => bail!("exports `{name}` without its `on-events` function"),
            }
        }
    }
    match detector {
        Some((name, version)) => check_version(name, version)?,
        None => bail!(
            "does not export `{WORLD_PACKAGE}/detector`: not a rule of the {WORLD_PACKAGE}@{WORLD_VERSION} world"
        ),
    }
    Ok(WorldCheck {
        imports,
        packed,
        needs,
    })
}

/// WASI imports must be 0.2.x: the version this host links.
fn check_wasi_version(name: &str, version: Option<&str>) -> Result<()> {
    match version {
        Some(version) if version.starts_with("0.2.") => Ok(()),
        _ => bail!("imports `{name}`; rules are given WASI 0.2 only"),
    }
}

/// Splits `pkg:name/interface@version` into its parts.
pub(super) fn split_interface_name(name: &str) -> (&str, &str, Option<&str>) {
    let (path, version) = match name.split_once('@') {
        Some((path, version)) => (path, Some(version)),
        None => (name, None),
    };
    match path.split_once('/') {
        Some((package, interface)) => (package, interface, version),
        None => (path, "", version),
    }
}

/// A rule built for another major (or, before 1.0, minor) version cannot load.
pub(super) fn check_version(name: &str, version: Option<&str>) -> Result<()> {
    let Some(version) = version else {
        bail!("`{name}` has no version; rules target {WORLD_PACKAGE}@{WORLD_VERSION}");
    };
    let track = |v: &str| -> Option<(u64, u64)> {
        let mut parts = v.split('.').map(|p| p.parse::<u64>().ok());
        let major = parts.next()??;
        let minor = parts.next()??;
        Some(if major == 0 { (0, minor) } else { (major, 0) })
    };
    if track(version).is_none() || track(version) != track(WORLD_VERSION) {
        bail!(
            "`{name}` targets {WORLD_PACKAGE}@{version}, incompatible with this host's {WORLD_PACKAGE}@{WORLD_VERSION}"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_compatibility() {
        assert!(check_version("rulehost:rule/state@0.1.0", Some("0.1.0")).is_ok());
        assert!(check_version("rulehost:rule/state@0.1.7", Some("0.1.7")).is_ok());
        let err = check_version("rulehost:rule/state@0.2.0", Some("0.2.0")).unwrap_err();
        assert!(err.to_string().contains("incompatible"), "{err}");
        assert!(check_version("rulehost:rule/state", None).is_err());
    }

    #[test]
    fn world_version_matches_the_wit_file() {
        let wit = include_str!("../../../wit/rule.wit");
        assert!(wit.contains(&format!("package {WORLD_PACKAGE}@{WORLD_VERSION};")));
    }

    #[test]
    fn interface_names_split() {
        assert_eq!(
            split_interface_name("wasi:filesystem/types@0.2.0"),
            ("wasi:filesystem", "types", Some("0.2.0"))
        );
        assert_eq!(split_interface_name("foo"), ("foo", "", None));
    }
}
