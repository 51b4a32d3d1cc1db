//! Finding a plugin's program: by path, or by name in the plugin directory and then on `PATH`.

use std::path::{Path, PathBuf};

use super::PluginKind;
use crate::process::{find_on_path, is_executable_file};

/// The plugin directory when the config sets none: `plugins/` beside the config file.
pub const DEFAULT_PLUGIN_DIR: &str = "plugins";

/// Resolves argv[0] of a plugin.
///
/// With a `/` it is a path, relative to the config directory `base`. A bare name is looked for
/// as `<plugin_dir>/<kind dir>/<name>`, then `<plugin_dir>/<name>`, then on `PATH`. The error
/// names every place looked in.
pub fn find(
    program: &str,
    kind: PluginKind,
    plugin_dir: &Path,
    base: &Path,
) -> Result<PathBuf, String> {
    if program.is_empty() {
        return Err("the plugin command is empty".into());
    }
    if program.contains('/') {
        // `./x` reads better in messages as `/etc/elasticd/x`.
        let path: PathBuf = base
            .join(program)
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect();
        return if is_executable_file(&path) {
            Ok(path)
        } else if path.is_file() {
            Err(format!(
                "{} plugin `{program}`: {} is not executable (chmod +x it)",
                kind.as_str(),
                path.display()
            ))
        } else if path.exists() {
            Err(format!(
                "{} plugin `{program}`: {} is not a file",
                kind.as_str(),
                path.display()
            ))
        } else {
            Err(format!(
                "{} plugin `{program}`: {} does not exist",
                kind.as_str(),
                path.display()
            ))
        };
    }
    let candidates = [
        plugin_dir.join(kind.dir()).join(program),
        plugin_dir.join(program),
    ];
    for path in &candidates {
        if is_executable_file(path) {
            return Ok(path.clone());
        }
        if path.is_file() {
            // A file with this name in the plugin directory is what the operator meant; running
            // something else of the same name from PATH would be a surprise.
            return Err(format!(
                "{} plugin `{program}`: {} is not executable (chmod +x it)",
                kind.as_str(),
                path.display()
            ));
        }
    }
    if let Some(found) = find_on_path(program) {
        return Ok(found);
    }
    Err(format!(
        "{} plugin `{program}` not found: looked in {}, {} and on PATH",
        kind.as_str(),
        candidates[0].display(),
        candidates[1].display()
    ))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn script(path: &Path, mode: u32) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn kind_dir_comes_before_the_plugin_dir_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        script(&plugins.join("sh"), 0o755);
        let found = find("sh", PluginKind::Locator, &plugins, dir.path()).unwrap();
        assert_eq!(found, plugins.join("sh"));
        script(&plugins.join("locators/sh"), 0o755);
        let found = find("sh", PluginKind::Locator, &plugins, dir.path()).unwrap();
        assert_eq!(found, plugins.join("locators/sh"));
        // Another kind does not see the locator.
        let found = find("sh", PluginKind::Action, &plugins, dir.path()).unwrap();
        assert_eq!(found, plugins.join("sh"));
    }

    #[test]
    fn path_is_the_last_resort() {
        let dir = tempfile::tempdir().unwrap();
        let found = find("sh", PluginKind::Action, &dir.path().join("p"), dir.path()).unwrap();
        assert!(found.is_absolute() && found.ends_with("sh"), "{found:?}");
    }

    #[test]
    fn errors_say_where_it_looked() {
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        let err = find(
            "no-such-plugin-elasticd",
            PluginKind::Renderer,
            &plugins,
            dir.path(),
        )
        .unwrap_err();
        assert!(
            err.contains("plugins/renderers/no-such-plugin-elasticd"),
            "{err}"
        );
        assert!(err.contains("on PATH"), "{err}");
        script(&plugins.join("x"), 0o644);
        let err = find("x", PluginKind::Renderer, &plugins, dir.path()).unwrap_err();
        assert!(err.contains("not executable"), "{err}");
        let err = find("./x", PluginKind::Renderer, &plugins, dir.path()).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
    }
}
