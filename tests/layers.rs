//! The layout map at the top of `src/lib.rs` is the rule: a module imports only modules with a
//! lower number, and no source file holds more than 700 lines of code outside its tests. This
//! test reads the map and the sources, so the map can't drift from the code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const MAX_CODE_LINES: usize = 700;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Module name to layer number, from the `text` block of lib.rs's doc comment.
fn layers() -> BTreeMap<String, u32> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let mut map = BTreeMap::new();
    let mut inside = false;
    for line in lib.lines() {
        let Some(doc) = line.strip_prefix("//!") else {
            continue;
        };
        let doc = doc.trim();
        if doc.starts_with("```") {
            inside = !inside;
            continue;
        }
        if !inside {
            continue;
        }
        let mut words = doc.split_whitespace();
        let (Some(layer), Some(module)) = (words.next(), words.next()) else {
            continue;
        };
        map.insert(module.to_string(), layer.parse().unwrap());
    }
    map
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file belongs to: the first component under `src/`.
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The file's lines up to its unit tests (`#[cfg(test)]` before `mod tests` or a test file).
fn code_lines(file: &Path) -> Vec<String> {
    if file.file_name().is_some_and(|n| n == "tests.rs") {
        return Vec::new();
    }
    let text = std::fs::read_to_string(file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut code = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let next = lines.get(i + 1).map(|l| l.trim()).unwrap_or_default();
        if line.trim() == "#[cfg(test)]" && next.starts_with("mod ") {
            break;
        }
        code.push(line.to_string());
    }
    code
}

#[test]
fn modules_import_only_lower_layers() {
    let layers = layers();
    assert!(
        layers.len() > 10,
        "the layout map in src/lib.rs was not found: {layers:?}"
    );
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let module = module_of(file);
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(&mine) = layers.get(&module) else {
            wrong.push(format!(
                "{}: module `{module}` is not in the map",
                file.display()
            ));
            continue;
        };
        for (n, line) in code_lines(file).iter().enumerate() {
            let mut rest = line.as_str();
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                let target: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if target == module || target.is_empty() {
                    continue;
                }
                match layers.get(&target) {
                    Some(&theirs) if theirs < mine => {}
                    Some(&theirs) => wrong.push(format!(
                        "{}:{}: `{module}` (layer {mine}) imports `{target}` (layer {theirs})",
                        file.display(),
                        n + 1
                    )),
                    None => wrong.push(format!(
                        "{}:{}: `{target}` is not in the map",
                        file.display(),
                        n + 1
                    )),
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_file_holds_more_than_700_lines_of_code() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut big = Vec::new();
    for file in &files {
        let count = code_lines(file)
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty() && !l.starts_with("//"))
            .count();
        if count > MAX_CODE_LINES {
            big.push(format!("{}: {count} lines of code", file.display()));
        }
    }
    assert!(big.is_empty(), "{}", big.join("\n"));
}
